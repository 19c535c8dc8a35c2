"""The ``onionmail`` command line: the one place where errors meet the user.

Library code raises :class:`~onionmail.core.errors.OnionMailError`; :func:`main`
prints it to stderr and returns 1. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from onionmail.box.create import create_box
from onionmail.cli import devices as cli_devices
from onionmail.cli import gateway as cli_gateway
from onionmail.cli import keys as cli_keys
from onionmail.cli import leaks as cli_leaks
from onionmail.cli import requests as cli_requests
from onionmail.cli import service as cli_service
from onionmail.cli import testnet as cli_testnet
from onionmail.cli.common import (
    Subcommands,
    flush_on_sigusr1,
    run_command,
    run_on_signal,
    stop_on_signals,
)
from onionmail.cli.common import progress as _progress
from onionmail.cli.passphrase import CLEAR_KEY_WARNING, new_passphrase, open_identity
from onionmail.config.box import load_config
from onionmail.core.errors import ConfigError, OnionMailError
from onionmail.core.systemd import claim_notify_socket, notify
from onionmail.seal.identity import Identity, is_encrypted_identity
from onionmail.store.lock import running_pid
from onionmail.store.queue import count_queue, list_queue, reschedule_queue

DESCRIPTION = """\
onionmail: a personal mail box that delivers box-to-box over Tor onion services.

A box is a directory (BOXDIR) holding its identity key, configuration
(BOXDIR/onionmail.toml), Maildirs and queue. Its address is
<name>@<its onion>.onion, derived from its own key: no DNS, no provider.

typical use:
  onionmail init --dir ~/box --name alice     create a box (prints its address)
  onionmail run --dir ~/box                   run it (tor, onion service, SMTP)
  onionmail status --dir ~/box                what the running box is doing
  onionmail leaks --dir ~/box --to ADDRESS    who would see what, before sending
  onionmail demo                              two boxes on a private Tor network
"""


def main(argv: Sequence[str] | None = None) -> int:
    return run_command("onionmail", build_parser(), argv, (OnionMailError,))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onionmail",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_init(sub)
    _add_run(sub)
    _add_status(sub)
    _add_queue(sub)
    cli_leaks.register(sub)
    cli_gateway.register(sub)
    cli_keys.register(sub)
    cli_devices.register(sub)
    cli_requests.register(sub)
    cli_testnet.register(sub)
    cli_service.register(sub)
    _add_demo(sub)
    _add_tui(sub)
    return parser


def _box_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", required=True, type=Path, metavar="BOXDIR", help="the box directory")


def _passphrase_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help="file holding the passphrase of the identity key (one trailing newline is ignored)",
    )


def _add_init(sub: Subcommands) -> None:
    p = sub.add_parser(
        "init",
        help="create a new box: identity key, configuration, submission password",
        description=(
            "Create a box in BOXDIR: generate its ed25519 identity (the onion address is derived "
            "from it), write onionmail.toml, and generate the submission password for the mail "
            "client of local part NAME. The key is encrypted at rest (argon2id + "
            "XSalsa20-Poly1305) with a passphrase asked on the terminal, or read from "
            "--passphrase-file; --no-passphrase stores it 0600 in clear."
        ),
    )
    _box_dir_arg(p)
    p.add_argument(
        "--name", default="postmaster", help="local part of the first address (default: postmaster)"
    )
    _passphrase_arg(p)
    p.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the identity key in clear (anyone who copies BOXDIR can then use it)",
    )
    p.add_argument(
        "--testnet", type=Path, metavar="DIR", help="join the private Tor network in DIR"
    )
    p.add_argument(
        "--submission-port",
        type=int,
        default=1587,
        help="loopback port of the submission server (default 1587; 0 = free port at each start)",
    )
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    passphrase = new_passphrase(args.passphrase_file, no_passphrase=args.no_passphrase)
    box = create_box(
        args.dir,
        args.name,
        passphrase=passphrase,
        testnet=args.testnet,
        submission_port=args.submission_port,
    )
    print(f"box created in {box.box_dir}")
    print(f"  address:     {box.address}")
    print(
        f"  submission:  127.0.0.1:{args.submission_port}, "
        f"AUTH PLAIN/LOGIN, user {box.local_part!r}"
    )
    print(f"  password in: {box.password_file} (0600; delete it once your mail client has it)")
    print(f"  key:         {'encrypted with your passphrase' if passphrase else 'not encrypted'}")
    if passphrase is None:
        _progress(CLEAR_KEY_WARNING)
    print(f"next: onionmail run --dir {box.box_dir}")
    return 0


def _add_run(sub: Subcommands) -> None:
    p = sub.add_parser(
        "run",
        help="run the box until interrupted",
        description=(
            "Run the box: launch (or attach to) tor, publish the onion service from the box's "
            "key, serve inbound SMTP behind it and submission on loopback, and deliver the "
            "queue. Progress goes to stderr. Stop with Ctrl-C or SIGTERM."
        ),
    )
    _box_dir_arg(p)
    _passphrase_arg(p)
    p.set_defaults(func=cmd_run)


def load_box_identity(box_dir: Path, passphrase_file: Path | None) -> Identity:
    """The box's identity; its passphrase from the file, systemd or the terminal."""
    return open_identity(box_dir / "keys" / "identity.key", passphrase_file)


def cmd_run(args: argparse.Namespace) -> int:
    from onionmail.box.daemon import Box
    from onionmail.tor.testnet.network import tor_options_for

    box_dir: Path = args.dir.absolute()
    config = load_config(box_dir)
    identity = load_box_identity(box_dir, args.passphrase_file)
    if not is_encrypted_identity(box_dir / "keys" / "identity.key"):
        _progress(CLEAR_KEY_WARNING)
    options = tor_options_for(config.tor.testnet)

    claim_notify_socket()  # before tor is launched with this environment

    async def serve() -> None:
        box = Box(config, identity, testnet_options=options, progress=_progress)
        stop = stop_on_signals()
        flush_on_sigusr1(box.flush)  # from 'onionmail queue flush'
        run_on_signal(signal.SIGHUP, box.reload_devices)  # from 'onionmail device add/revoke'
        try:
            await box.start()
            status = box.status()
            print(f"onion:      {box.onion}")
            print(f"addresses:  {', '.join(status['addresses'])}")
            print(f"submission: {status['submission']}", flush=True)
            notify("READY=1")  # Type=notify: started once it takes mail
            await stop.wait()
            _progress("stopping")
            notify("STOPPING=1")
        finally:
            await box.stop()

    asyncio.run(serve())
    return 0


def _add_status(sub: Subcommands) -> None:
    p = sub.add_parser(
        "status",
        help="show the box's onion address, tor bootstrap and queue length",
        description="Show what the box in BOXDIR is doing (reads BOXDIR/run/status.json).",
    )
    _box_dir_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)


def cmd_status(args: argparse.Namespace) -> int:
    box_dir: Path = args.dir.absolute()
    load_config(box_dir)
    status_path = box_dir / "run" / "status.json"
    try:
        status = json.loads(status_path.read_text())
    except FileNotFoundError:
        status = {"state": "never started"}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{status_path}: unreadable status: {exc}") from None
    running = running_pid(box_dir) is not None
    status["running"] = running
    status["queue_length"] = count_queue(box_dir / "queue")
    if args.json:
        print(json.dumps(status, indent=1))
        return 0 if running else 3
    tor = status.get("tor", {})
    print(f"box:         {box_dir}")
    print(f"state:       {status.get('state') if running else 'not running'}")
    if "onion" in status:
        print(f"onion:       {status['onion']}")
        print(f"addresses:   {', '.join(status.get('addresses', []))}")
        print(f"submission:  {status.get('submission')}")
    if running:
        print(
            f"tor:         bootstrap {tor.get('bootstrap_percent', 0)}% "
            f"({tor.get('bootstrap_summary', '?')})"
        )
        print(f"onion svc:   {'published' if tor.get('published') else 'not published'}")
        if status.get("tor_restarts"):
            print(f"tor restarts: {status['tor_restarts']} since the box started")
        devices = status.get("devices") or {}
        if devices.get("devices") or devices.get("problem"):
            onion = "published" if devices.get("device_onion_published") else "not published"
            names = ", ".join(devices.get("devices", [])) or "none"
            print(f"devices:     {names} (device onion {onion})")
            if devices.get("problem"):
                print(f"             cannot connect: {devices['problem']}")
    print(f"queue:       {status['queue_length']} message(s)")
    gateway = load_config(box_dir).gateway
    for onion, alias in gateway.registrations:
        role = "sends clearnet mail" if onion == gateway.sending_gateway else "receives only"
        print(f"gateway:     {alias} at {onion} ({role})")
    return 0 if running else 3


def _add_queue(sub: Subcommands) -> None:
    p = sub.add_parser(
        "queue",
        help="list the outbound queue (no subjects, no recipients), or retry it now",
        description=(
            "list (default): queued messages with id, destination onion, attempts, seconds to "
            "the next try and the last error; never subjects or recipients. "
            "flush: make every queued message due now and tell the running box to retry "
            "(without a running box, they are tried as soon as it starts)."
        ),
    )
    _box_dir_arg(p)
    p.add_argument("action", nargs="?", choices=("list", "flush"), default="list")
    p.set_defaults(func=cmd_queue)


def cmd_queue(args: argparse.Namespace) -> int:
    box_dir: Path = args.dir.absolute()
    load_config(box_dir)
    if args.action == "flush":
        return _flush_queue(box_dir)
    states = list_queue(box_dir / "queue")
    if not states:
        print("queue is empty")
        return 0
    now = time.time()
    print(f"{'id':32}  {'destination':62}  tries  next try  last error")
    for s in states:
        wait = max(0, int(s.next_try - now))
        print(f"{s.id:32}  {s.destination:62}  {s.attempts:5}  {wait:>6} s  {s.last_error}")
    return 0


def _flush_queue(box_dir: Path) -> int:
    count = reschedule_queue(box_dir / "queue", time.time())
    pid = running_pid(box_dir)
    if pid is None or pid < 0:
        print(f"{count} message(s) due now; the box is not running: they go when it starts")
        return 0
    os.kill(pid, signal.SIGUSR1)
    print(f"{count} message(s) due now; the running box (pid {pid}) is retrying them")
    return 0


def _add_demo(sub: Subcommands) -> None:
    p = sub.add_parser(
        "demo",
        help="two boxes exchange mail over onion services on a private Tor network",
        description=(
            "Start a private Tor network on 127.0.0.1, create boxes alice and bob, send a mail "
            "from alice's mail-client side to bob and a reply back, both over onion services, "
            "and report addresses, paths, timings and where each message was stored. Exits 0 "
            "only if both messages arrived intact. Everything it starts is stopped at the end."
        ),
    )
    p.add_argument(
        "--work-dir",
        type=Path,
        help="keep the boxes and the network's files here (default: a temporary directory)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from onionmail.cli.demo import run_demo

    return run_demo(args.work_dir)


def _add_tui(sub: Subcommands) -> None:
    p = sub.add_parser(
        "tui",
        help="the terminal UI (inbox, compose with leak cards, queue, status, ledger)",
        description=(
            "Run onionmail-tui on BOXDIR. The TUI is a separate package that uses the box's "
            "library API (onionmail.box.api); this command only starts it (python -m tui), "
            "so onionmail itself never imports textual."
        ),
    )
    _box_dir_arg(p)
    _passphrase_arg(p)
    p.add_argument("--password-file", type=Path, metavar="FILE", help="submission password")
    p.set_defaults(func=cmd_tui)


def cmd_tui(args: argparse.Namespace) -> int:
    argv = [sys.executable, "-m", "tui", "--dir", str(args.dir)]
    for flag, value in (
        ("--passphrase-file", args.passphrase_file),
        ("--password-file", args.password_file),
    ):
        if value is not None:
            argv += [flag, str(value)]
    os.execv(sys.executable, argv)
    return 1  # pragma: no cover - execv does not return


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
