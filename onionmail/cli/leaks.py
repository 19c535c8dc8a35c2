"""``onionmail leaks``: who sees what, for a sent or received message or before sending."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from onionmail.cli.common import Subcommands
from onionmail.cli.passphrase import open_identity
from onionmail.config.box import load_config
from onionmail.core.errors import AddressError, ConfigError
from onionmail.core.mail_address import parse_mail_address
from onionmail.seal.identity import is_encrypted_identity

if TYPE_CHECKING:
    from onionmail.box.policy_gate import LeakKeeper


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "leaks",
        help="show which observer learns which metadata, per message or per recipient",
        description=(
            "Without arguments: the ledger of sent and received messages (day, direction, seal, "
            "path; never addresses or subjects). With MESSAGE-ID: the leak matrix of that "
            "message (observers x metadata: visible, encrypted, padded, delayed, hidden). "
            "With --to ADDRESS: the matrix a message to ADDRESS would have now, and whether "
            "the box's [policy] would refuse it. The matrices come from threat_model/."
        ),
    )
    p.add_argument("--dir", required=True, type=Path, metavar="BOXDIR", help="the box directory")
    p.add_argument("message_id", nargs="?", metavar="MESSAGE-ID", help="a Message-ID")
    p.add_argument("--to", metavar="ADDRESS", help="predict for a recipient, before sending")
    p.add_argument(
        "--attachments",
        action="store_true",
        help="with --to: for a message with attachments (their names are metadata too)",
    )
    p.add_argument("--reasons", action="store_true", help="list the reason for every cell")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="passphrase of the identity key"
    )
    p.set_defaults(func=cmd_leaks)


def cmd_leaks(args: argparse.Namespace) -> int:
    from onionmail.box.policy_gate import LeakKeeper

    box_dir: Path = args.dir.absolute()
    config = load_config(box_dir)
    key = box_dir / "keys" / "identity.key"
    identity = open_identity(key, args.passphrase_file)
    # What the key file is, not whether a passphrase was given (one given for a clear
    # key is ignored): the disk-seizure row must match the box's own ledger.
    keeper = LeakKeeper(config, identity.seed, key_encrypted=is_encrypted_identity(key))
    if args.to and args.message_id:
        raise ConfigError("give either MESSAGE-ID or --to ADDRESS, not both")
    if args.to:
        return _predict(keeper, args)
    if args.message_id:
        return _show(keeper, args)
    entries = keeper.ledger.entries()
    if args.json:
        print(json.dumps([e.__dict__ | {"matrix": e.matrix.to_json()} for e in entries]))
        return 0
    if not entries:
        print("the ledger is empty")
        return 0
    print(f"{'day':10}  {'direction':9}  {'path':26}  {'seal':9}  state")
    for e in entries:
        print(f"{e.day:10}  {e.direction:9}  {e.path:26}  {e.seal or '-':9}  {e.state}")
    return 0


def _predict(keeper: LeakKeeper, args: argparse.Namespace) -> int:
    try:
        address = parse_mail_address(args.to)
    except AddressError as exc:
        raise ConfigError(f"--to: {exc}") from None
    matrix = keeper.predicted(str(address), has_attachments=args.attachments)
    refusal = keeper.check_recipient(address)
    config = keeper.config
    routed = config.onion_mx.onion_for(address.domain) or config.gateway.sending_gateway
    if refusal is None and not address.is_onion and routed is None:
        refusal = "no clearnet gateway is configured, so only .onion recipients are reachable"
    if args.json:
        print(json.dumps({"matrix": matrix.to_json(), "refused": refusal}))
        return 1 if refusal else 0
    from threat_model import render_table

    print(f"to {address}: path {matrix.path}")
    print(render_table(matrix, reasons=args.reasons))
    if refusal:
        print(f"\nthe box would refuse this send: {refusal}")
        return 1
    print("\nthe box's policy allows this send")
    return 0


def _show(keeper: LeakKeeper, args: argparse.Namespace) -> int:
    entries = keeper.find(args.message_id)
    if not entries:
        print(f"no ledger entry for Message-ID {args.message_id}")
        return 1
    if args.json:
        print(json.dumps([{"path": e.path, "matrix": e.matrix.to_json()} for e in entries]))
        return 0
    from threat_model import render_table

    for number, e in enumerate(entries, 1):
        print(
            f"{e.direction} {e.day}, path {e.path} ({e.state}), destination {number}/{len(entries)}"
        )
        print(render_table(e.matrix, reasons=args.reasons))
    return 0
