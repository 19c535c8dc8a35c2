"""What every command line of the project shares: progress lines and logging set-up."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

from onionmail.core.redaction import RedactingFormatter


class Subcommands(Protocol):
    """What ``ArgumentParser.add_subparsers()`` returns, as the commands use it."""

    def add_parser(self, name: str, **options: Any) -> argparse.ArgumentParser: ...


def progress(message: str) -> None:
    """One timestamped progress line on stderr (a long wait shows it is alive)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def setup_logging(verbose: bool) -> None:
    """Warnings by default, everything with ``--verbose``, always on stderr."""
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a host application's handlers are its own
        handler = logging.StreamHandler(sys.stderr)
        # Every record redacted, --verbose included: the log is an observer too.
        handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # aiosmtpd (still imported for its auth types) logs peers, addresses and
    # whole commands under "mail.log"; the log is an observer too (threat_model:
    # box-logs), so even --verbose leaves it out.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # stem sets its own logger to its most verbose level; bring it back in line.
    logging.getLogger("stem").setLevel(logging.DEBUG if verbose else logging.WARNING)


def run_command(
    prog: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    errors: tuple[type[Exception], ...],
) -> int:
    """Parse ``argv``, set up logging, run the chosen command's ``func``.

    No command: the help, exit 2. One of ``errors``: one line on stderr, exit 1
    (the error texts name the file and key, never a secret). Ctrl-C: exit 130.
    """
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def program(script: str, module: str) -> list[str]:
    """How to start ``script`` (a console script of this package) again from elsewhere:
    its absolute path when installed next to this interpreter, else ``python -m module``."""
    installed = Path(sys.executable).parent / script
    if installed.is_file():
        return [str(installed)]
    return [sys.executable, "-m", module]


def flush_on_sigusr1(flush: Callable[[], Coroutine[Any, Any, int]]) -> None:
    """Run ``flush`` (retry the queue now) on each SIGUSR1, as ``queue flush`` asks."""
    run_on_signal(signal.SIGUSR1, flush)


def run_on_signal(sig: signal.Signals, job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """Start ``job`` on the event loop at each ``sig`` (the handler holds the running jobs)."""
    running: set[asyncio.Task[Any]] = set()

    def start() -> None:
        task = asyncio.create_task(job())
        running.add(task)
        task.add_done_callback(running.discard)

    asyncio.get_running_loop().add_signal_handler(sig, start)


def stop_on_signals() -> asyncio.Event:
    """An event that SIGINT or SIGTERM sets (a daemon's ``run`` waits on it, then stops)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop
