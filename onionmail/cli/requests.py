"""``onionmail requests``: strangers' mail in the Requests folder (onionmail.admission).

Mail from a sender the box does not know lands in ``Requests`` (``[inbound]
strangers``). ``list`` shows it; ``accept`` makes the sender a contact and
moves its mail to INBOX; ``block`` refuses it from now on and deletes its
mail; ``ignore`` deletes one message. The running box applies each change at
the next message, without a restart.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from onionmail.admission.requests import Requests
from onionmail.cli.common import Subcommands
from onionmail.cli.passphrase import open_identity
from onionmail.config.box import load_config

DESCRIPTION = """\
Mail from senders your box does not know (not in contacts.toml, never
written to, never accepted) waits in the Requests folder, after its sender
paid a proof of work. Decide here, or in the TUI's Requests folder.

  onionmail requests list --dir BOXDIR                  who is waiting, with what
  onionmail requests accept --dir BOXDIR ADDRESS        a contact now: mail to INBOX
  onionmail requests block --dir BOXDIR ADDRESS         refused from now on, mail deleted
  onionmail requests ignore --dir BOXDIR KEY            delete one message (cur/NAME)
  onionmail requests blocked --dir BOXDIR               how many are blocked
  onionmail requests unblock --dir BOXDIR ADDRESS
"""


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "requests",
        help="strangers' mail in the Requests folder: list, accept, block, ignore",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    specs = [
        ("list", "who is waiting in Requests, with the subjects", None),
        ("accept", "make a sender a contact and move its mail to INBOX", "ADDRESS"),
        ("block", "refuse a sender from now on (by onion) and delete its mail", "ADDRESS"),
        ("ignore", "delete one message from Requests", "KEY"),
        ("blocked", "how many senders are blocked (their addresses are not kept)", None),
        ("unblock", "take a sender off the blocked list (it is a stranger again)", "ADDRESS"),
    ]
    for name, help_text, arg in specs:
        action = actions.add_parser(name, help=help_text, description=help_text)
        if arg is not None:
            action.add_argument("target", metavar=arg)
        action.add_argument("--dir", required=True, type=Path, metavar="BOXDIR")
        action.add_argument(
            "--user", metavar="LOCAL_PART", help="whose Requests (default: the box's first)"
        )
        action.add_argument(
            "--passphrase-file", type=Path, metavar="FILE", help="passphrase of the identity key"
        )
        action.set_defaults(func=cmd_requests, action=name)


def cmd_requests(args: argparse.Namespace) -> int:
    box_dir: Path = args.dir.absolute()
    local_parts = load_config(box_dir).box.local_parts
    seed = None
    if args.action not in ("list", "ignore"):  # the sender book keeps keyed hashes
        seed = open_identity(box_dir / "keys" / "identity.key", args.passphrase_file).seed
    requests = Requests(box_dir, local_parts, seed)
    user = args.user or local_parts[0]
    if args.action == "list":
        pending = requests.pending(user)
        if not pending:
            print("no requests")
        for r in pending:
            print(f"{r.key}  {r.sender or '(no sender)'}  {r.subject}")
    elif args.action == "accept":
        moved = requests.accept(user, args.target)
        print(f"{args.target} is a contact now; {moved} message(s) moved to INBOX")
    elif args.action == "block":
        deleted = requests.block(user, args.target)
        print(f"{args.target} is blocked (refused at RCPT); {deleted} message(s) deleted")
    elif args.action == "ignore":
        requests.ignore(user, args.target)
        print("deleted")
    elif args.action == "blocked":
        count = requests.blocked_count()
        print(f"{count} blocked sender(s); only keyed hashes are kept: unblock takes an address")
    elif args.action == "unblock":
        state = "unblocked" if requests.unblock(args.target) else "was not blocked"
        print(f"{args.target}: {state}")
    return 0
