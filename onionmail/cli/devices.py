"""``onionmail device``: the owner's phones and laptops (onionmail.devices).

``add`` authorizes a device and prints, once, what to type into it; ``list``
shows them; ``revoke`` removes one. A running box is told with SIGHUP and
republishes its device onion; the command waits (bounded) until the box's
status shows the new list, so its exit means the change is live.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from onionmail.cli.common import Subcommands
from onionmail.cli.common import progress as _progress
from onionmail.cli.passphrase import open_identity
from onionmail.config.box import load_config
from onionmail.devices.manage import DeviceManager
from onionmail.store.lock import running_pid

DESCRIPTION = """\
Your phone and laptop read and send mail through the box: IMAP (143) and
submission (587) over a second onion service that only authorized devices
can reach (tor's v3 client authorization), served by a private Dovecot on
the box's own Maildirs. Nothing listens on the network.

  onionmail device add --dir BOXDIR phone      authorize a device; prints its key,
                                               password and settings, once
  onionmail device list --dir BOXDIR           the devices and the device onion
  onionmail device revoke --dir BOXDIR phone   it can no longer reach the box
"""

CONFIRM_TIMEOUT = 90.0


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "device",
        help="phones and laptops that read and send through the box (IMAP over an onion)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    add = actions.add_parser(
        "add",
        help="authorize a device; print its client key, password and settings once",
        description=(
            "Make a client-authorization key pair and a password for the device NAME "
            "(a-z, 0-9, '-'), keep their public half and hash, and print the private key "
            "(as a line and a QR code), the password and the settings for Thunderbird and "
            "K-9 Mail. They are not shown again: to replace them, revoke and add again. A "
            "running box starts serving the device before the command returns."
        ),
    )
    add.add_argument("name", metavar="NAME", help="your name for the device, e.g. phone")
    add.add_argument(
        "--user",
        metavar="LOCAL_PART",
        help="the local part the device reads and sends as (default: the box's first)",
    )
    add.add_argument("--no-qr", action="store_true", help="print no QR code")
    add.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="passphrase of the identity key"
    )
    lst = actions.add_parser(
        "list",
        help="the devices (no secret) and, while the box runs, its device onion",
        description="Each device: name, local part, when it was added.",
    )
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    rev = actions.add_parser(
        "revoke",
        help="a device can no longer reach the box nor log in",
        description=(
            "Remove the device NAME: its key is dropped from the device onion (republished "
            "with new introduction points, its open sessions closed) and its password stops "
            "working. A running box applies it before the command returns."
        ),
    )
    rev.add_argument("name", metavar="NAME")
    for action in (add, lst, rev):
        action.add_argument("--dir", required=True, type=Path, metavar="BOXDIR")
    add.set_defaults(func=cmd_add)
    lst.set_defaults(func=cmd_list)
    rev.set_defaults(func=cmd_revoke)


def _manager(args: argparse.Namespace, *, unlock: bool = False) -> DeviceManager:
    box_dir: Path = args.dir.absolute()
    config = load_config(box_dir)
    identity = None
    if unlock:
        identity = open_identity(box_dir / "keys" / "identity.key", args.passphrase_file)
    return DeviceManager(box_dir, config.box.local_parts, identity)


def cmd_add(args: argparse.Namespace) -> int:
    manager = _manager(args, unlock=True)
    sheet = manager.add(args.name, args.user)
    print(sheet.text(qr=not args.no_qr), end="")
    _confirm(manager, lambda names: args.name in names)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    manager = _manager(args)
    devices = manager.devices()
    status = manager.status()
    if args.json:
        listed = [{"name": d.name, "user": d.local_part, "created": d.created} for d in devices]
        print(json.dumps({"devices": listed, **status}, indent=1))
        return 0
    if not devices:
        print("no devices; add one with: onionmail device add --dir BOXDIR NAME")
    for d in devices:
        added = datetime.fromtimestamp(d.created, UTC).strftime("%Y-%m-%d %H:%M UTC")
        print(f"{d.name:<20} {d.local_part:<16} added {added}")
    if status.get("device_onion"):
        state = "published" if status.get("device_onion_published") else "not published"
        print(f"device onion: {status['device_onion']} ({state})")
    if status.get("problem"):
        print(f"devices cannot connect: {status['problem']}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    manager = _manager(args)
    manager.revoke(args.name)
    print(f"device {args.name} revoked: its key and password no longer work")
    _confirm(manager, lambda names: args.name not in names)
    return 0


def _confirm(manager: DeviceManager, applied: Callable[[list[str]], bool]) -> None:
    """Wait until a running box applied the change, saying so on stderr."""
    if running_pid(manager.box_dir) is None:
        _progress("the box is not running; it applies this when it starts")
        return
    _progress("the running box is republishing its device onion")
    status = manager.wait_applied(applied, CONFIRM_TIMEOUT)
    if not status:
        _progress(f"the box did not confirm within {CONFIRM_TIMEOUT:g} s; see its log")
    elif status.get("problem"):
        _progress(f"the box applied it, but devices cannot connect: {status['problem']}")
    else:
        _progress("done: the running box applied it")
