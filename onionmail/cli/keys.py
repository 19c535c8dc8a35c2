"""``onionmail keys``: the OpenPGP keys of clearnet correspondents, and the box's own.

The box encrypts clearnet mail to a correspondent whose key it holds
(:mod:`onionmail.openpgp.clearnet`); keys arrive by Autocrypt or by hand
(``import``, pinned: Autocrypt never replaces such a key).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from onionmail.cli.common import Subcommands
from onionmail.cli.passphrase import new_passphrase, open_identity, replace_key_file
from onionmail.config.box import load_config
from onionmail.core.errors import OpenPGPError
from onionmail.openpgp.autocrypt import PeerKeyStore
from onionmail.openpgp.clearnet import open_box_key, peers_path
from onionmail.openpgp.keys import parse_public_key
from onionmail.seal.envelope import MAX_ENVELOPE_AGE, mail_key_id
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import MailKeyring

DESCRIPTION = """\
OpenPGP keys for clearnet mail through a gateway. Mail to a correspondent
whose key the box holds is signed and encrypted (PGP/MIME, protected headers,
outer Subject "...") before the gateway sees it. Keys are learned from
Autocrypt headers of received mail, or imported by hand (pinned).

  onionmail keys import --dir BOXDIR FILE    a correspondent's armored public key
  onionmail keys list --dir BOXDIR           addresses and fingerprints
  onionmail keys export --dir BOXDIR         the box's own public key, armored
  onionmail keys remove --dir BOXDIR ADDRESS forget a correspondent's key
  onionmail keys passphrase --dir BOXDIR     set, change or remove the key's passphrase
  onionmail keys rotate --dir BOXDIR         a new mail key (the key that opens mail)
"""


def register(sub: Subcommands) -> None:
    p = sub.add_parser(
        "keys",
        help="OpenPGP keys of correspondents and the box's own; passphrase; mail key rotation",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    imp = actions.add_parser(
        "import",
        help="store a correspondent's ASCII-armored public key (pinned)",
        description=(
            "Store the ASCII-armored public key in FILE for the address of its user id "
            "(--address chooses one when the key names several). A key imported by hand "
            "is pinned: Autocrypt never replaces it; importing again does."
        ),
    )
    imp.add_argument("file", type=Path, metavar="FILE", help="the ASCII-armored public key")
    imp.add_argument("--address", metavar="ADDRESS", help="the user id to store the key for")
    lst = actions.add_parser(
        "list",
        help="correspondents' addresses and key fingerprints (no key material)",
        description="Each stored key: address, fingerprint, source, preference, last seen.",
    )
    lst.add_argument("--json", action="store_true", help="machine-readable output")
    exp = actions.add_parser(
        "export",
        help="the box's own public key, ASCII-armored",
        description=(
            "Print the box's own OpenPGP public key (user ids: its gateway aliases), "
            "created on first use. Give it to correspondents who do not use Autocrypt."
        ),
    )
    exp.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="passphrase of the identity key"
    )
    rem = actions.add_parser(
        "remove",
        help="forget a correspondent's key",
        description="Forget the key stored for ADDRESS; mail to it is then sent plain.",
    )
    rem.add_argument("address", metavar="ADDRESS", help="the correspondent's address")
    pwd = actions.add_parser(
        "passphrase",
        help="set, change or remove the passphrase of the box's identity key",
        description=(
            "Write the identity key again under a new passphrase, asked twice on the "
            "terminal or read from --new-passphrase-file; --no-passphrase stores it in "
            "clear. The current passphrase comes from --passphrase-file, systemd's "
            "credential or the terminal. Nothing else changes: the keys derived from the "
            "identity (queue, ledger, OpenPGP) stay as they are."
        ),
    )
    pwd.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the current passphrase")
    pwd.add_argument("--new-passphrase-file", type=Path, metavar="FILE", help="the new passphrase")
    pwd.add_argument("--no-passphrase", action="store_true", help="store the identity key in clear")
    rot = actions.add_parser(
        "rotate",
        help="replace the mail key, the X25519 key that opens sealed mail",
        description=(
            "Make a new mail key and certify it with the onion key; the address does not "
            "change. The old key is erased at once, or, when a gateway is configured, kept "
            "for 7 days (mail the gateway sealed to it may still be queued there) and then "
            "erased by the running box. A running box uses the new key from its next SMTP "
            "session. The old key's certificate cannot be revoked: it stays valid until it "
            "expires (at most 30 days), so after a theft, rotate and expect that window."
        ),
    )
    rot.add_argument(
        "--passphrase-file", type=Path, metavar="FILE", help="the identity's passphrase"
    )
    actions_and_names = ((imp, "import"), (lst, "list"), (exp, "export"), (rem, "remove"))
    for action, name in (*actions_and_names, (pwd, "passphrase"), (rot, "rotate")):
        action.add_argument(
            "--dir", required=True, type=Path, metavar="BOXDIR", help="the box directory"
        )
        action.set_defaults(func=cmd_keys, keys_action=name)


def cmd_keys(args: argparse.Namespace) -> int:
    box_dir: Path = args.dir.absolute()
    config = load_config(box_dir)  # a real box directory, or a ConfigError naming the file
    store = PeerKeyStore(peers_path(box_dir))
    if args.keys_action == "import":
        return _import(store, args.file, args.address)
    if args.keys_action == "list":
        return _list(store, as_json=args.json)
    if args.keys_action == "remove":
        if not store.remove(args.address):
            raise OpenPGPError("no key is stored for that address")
        print("removed")
        return 0
    key_path = box_dir / "keys" / "identity.key"
    identity = open_identity(key_path, args.passphrase_file)
    if args.keys_action == "passphrase":
        new = new_passphrase(args.new_passphrase_file, no_passphrase=args.no_passphrase)
        replace_key_file(identity, key_path, new)
        print("the identity key is now " + ("encrypted" if new else "stored in clear"))
        return 0
    if args.keys_action == "rotate":
        return _rotate(box_dir, identity, gateway=bool(config.gateway.onions))
    key = open_box_key(box_dir, identity, [alias for _, alias in config.gateway.registrations])
    print(key.public.armored().rstrip("\n"))
    return 0


def _rotate(box_dir: Path, identity: Identity, *, gateway: bool) -> int:
    ring = MailKeyring.open(box_dir / "keys" / "mail-keys", identity)
    old = ring.current.public
    keep = MAX_ENVELOPE_AGE if gateway else 0
    now = time.time()
    ring.rotate(now=now, keep_old_for=keep)
    print(f"new mail key {mail_key_id(ring.current.public).hex()}")
    if keep:
        until = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(now + keep))
        print(f"the old key {mail_key_id(old).hex()} is kept until {until} (gateway mail)")
    else:
        print(f"the old key {mail_key_id(old).hex()} is erased")
    return 0


def _import(store: PeerKeyStore, path: Path, address: str | None) -> int:
    if not address:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise OpenPGPError(f"{path}: cannot read the key file: {exc.strerror}") from None
        addresses = parse_public_key(data).addresses
        if len(addresses) != 1:
            raise OpenPGPError(
                f"the key names {len(addresses)} addresses; choose one with --address"
            )
        address = addresses[0]
    peer = store.import_key_file(path, address)
    print(f"imported {peer.fingerprint} for {peer.address} (pinned)")
    return 0


def _list(store: PeerKeyStore, *, as_json: bool) -> int:
    peers = [peer for peer in (store.get(a) for a in store.addresses()) if peer is not None]
    rows = [
        {
            "address": p.address,
            "fingerprint": p.fingerprint,
            "source": p.source.value,
            "prefer_encrypt": "mutual" if p.prefer_encrypt_mutual else "nopreference",
            "last_seen": p.last_seen,
        }
        for p in peers
    ]
    if as_json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no OpenPGP keys of correspondents")
        return 0
    for row in rows:
        seen = time.strftime("%Y-%m-%d", time.gmtime(int(row["last_seen"])))
        print(
            f"{row['address']}  {row['fingerprint']}  {row['source']:9}  "
            f"{row['prefer_encrypt']:12}  last seen {seen}"
        )
    return 0
