"""What every command line of the project shares: progress lines and logging set-up."""

from __future__ import annotations

import logging
import sys
import time


def progress(message: str) -> None:
    """One timestamped progress line on stderr (a long wait shows it is alive)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def setup_logging(verbose: bool) -> None:
    """Warnings by default, everything with ``--verbose``, always on stderr."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiosmtpd (still imported for its auth types) logs peers, addresses and
    # whole commands under "mail.log"; the log is an observer too (threat_model:
    # box-logs), so even --verbose leaves it out.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # stem sets its own logger to its most verbose level; bring it back in line.
    logging.getLogger("stem").setLevel(logging.DEBUG if verbose else logging.WARNING)
