"""``onionmail testnet up|down|status``: a private Tor network on 127.0.0.1 from the shell.

The tors started by ``up`` outlive the command; ``down`` stops them by PID.
Progress goes to stderr, results to stdout; errors are raised as
:class:`~onionmail.core.errors.OnionMailError` for the main CLI to print.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from onionmail.cli.common import Subcommands
from onionmail.core.errors import TestnetError
from onionmail.tor.testnet.network import (
    check_onion_reachable,
    start_testnet,
    stop_testnet,
    testnet_status,
)

DESCRIPTION = """\
Run a private Tor network on 127.0.0.1 (directory authorities and relays,
each a tor process), so boxes can deliver to each other over real onion
services without touching the public Tor network. Everything lives in DIR
(0700): keys, data directories, logs, and testnet.json which boxes read
(onionmail init --testnet DIR).
"""


def register(subparsers: Subcommands) -> None:
    """Add ``testnet`` and its subcommands to the main parser's subparsers."""
    parser = subparsers.add_parser(
        "testnet",
        help="run a private Tor network on 127.0.0.1 (for tests and demos)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="testnet commands", metavar="COMMAND", required=True)
    _add_up(sub)
    _add_down(sub)
    _add_status(sub)


def _dir_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir", required=True, type=Path, metavar="DIR", help="directory of the network"
    )


def _add_up(sub: Subcommands) -> None:
    p = sub.add_parser(
        "up",
        help="start a network and wait until it works",
        description=(
            "Generate keys, launch the authorities and relays, and wait until the consensus "
            "lists every relay (about 10 s). Then, unless --no-check, prove it end to end: a "
            "client tor publishes an onion service and connects to it. The tors keep running "
            "after this command returns; stop them with 'onionmail testnet down --dir DIR'. "
            "DIR must be new, empty, or hold a stopped network (which is replaced)."
        ),
    )
    _dir_arg(p)
    p.add_argument(
        "--authorities", type=int, default=3, metavar="N", help="directory authorities (3)"
    )
    p.add_argument("--relays", type=int, default=3, metavar="N", help="relays (3)")
    p.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help="give up after (60)"
    )
    p.add_argument(
        "--no-check", action="store_true", help="skip the onion service reachability check"
    )
    p.set_defaults(func=cmd_up)


def _add_down(sub: Subcommands) -> None:
    p = sub.add_parser(
        "down",
        help="stop the network's tor processes",
        description="Stop every tor of the network in DIR and wait until they exited. "
        "Stopping a stopped network does nothing. DIR is kept.",
    )
    _dir_arg(p)
    p.set_defaults(func=cmd_down)


def _add_status(sub: Subcommands) -> None:
    p = sub.add_parser(
        "status",
        help="show which tors run and what the consensus lists",
        description="Show each tor of the network in DIR (running or not) and how many relays "
        "the current consensus lists. Exit status 0 if every tor runs and the consensus lists "
        "them all, 1 otherwise.",
    )
    _dir_arg(p)
    p.set_defaults(func=cmd_status)


def _say(message: str) -> None:
    print(f"testnet: {message}", file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    if args.authorities < 1 or args.relays < 0:
        raise TestnetError("--authorities must be at least 1 and --relays at least 0")
    started = time.monotonic()
    state = start_testnet(
        args.dir,
        authorities=args.authorities,
        relays=args.relays,
        timeout=args.timeout,
        progress=_say,
    )
    ready = time.monotonic() - started
    _say(f"consensus lists all relays after {ready:.1f} s")
    check = ""
    if not args.no_check:
        _say("checking that a client reaches an onion service")
        check_dir = state.directory / "check"
        try:
            if check_dir.exists():  # a previous network's cached consensus slows bootstrap
                shutil.rmtree(check_dir)
            took = check_onion_reachable(state, check_dir)
        except BaseException:
            stop_testnet(state.directory)
            raise
        _say(f"onion service reached in {took:.1f} s")
        check = f", onion service reachable after {time.monotonic() - started:.1f} s"
    print(
        f"private Tor network up in {state.directory}: {args.authorities} authorities, "
        f"{args.relays} relays; consensus after {ready:.1f} s{check}"
    )
    print(f"boxes join it with: onionmail init --testnet {state.directory} ...")
    print(f"stop it with: onionmail testnet down --dir {state.directory}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    count = stop_testnet(args.dir)
    print(f"stopped {count} tor process{'es' if count != 1 else ''}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = testnet_status(args.dir)
    for name in status.running:
        print(f"{name:<10} running")
    for name in status.stopped:
        print(f"{name:<10} stopped")
    if status.valid_after is None:
        print("consensus: none reachable")
    else:
        print(
            f"consensus: valid-after {status.valid_after} UTC, "
            f"{status.relays_listed}/{status.relays_expected} relays listed"
        )
    return 0 if status.healthy else 1
