"""A sample box with a fixed identity and mail, for snapshot tests, screenshots and the benchmark.

Everything is deterministic (identities from fixed seeds, fixed Maildir
names and dates, fixed queue and ledger entries), so a screen rendered
from it is the same on every machine. It is written the way the box
itself would have written it; it is test data, never a real box.
"""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from pathlib import Path

from onionmail.box.create import create_box
from onionmail.box.policy_gate import LeakKeeper
from onionmail.config.box import load_config
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.openpgp.autocrypt import PeerKeyStore
from onionmail.openpgp.clearnet import peers_path
from onionmail.seal.identity import Identity, save_identity
from threat_model import MailPath

ALICE = Identity(bytes(range(32)))
BOB = Identity(bytes(range(1, 33)))
CAROL = Identity(bytes(range(2, 34)))
GATEWAY = Identity(bytes(range(3, 35)))
CORP = Identity(bytes(range(4, 36)))
BOB_ADDRESS = f"bob@{BOB.onion_address}"
CAROL_ADDRESS = f"carol@{CAROL.onion_address}"
CLEARNET_ADDRESS = "dave@example.org"
OTHER_CLEARNET_ADDRESS = "erin@example.net"
ALIAS = "alice@gw.example"
ONION_MX_DOMAIN = "corp.example"
ONION_MX_ADDRESS = f"frank@{ONION_MX_DOMAIN}"
DAVE_FINGERPRINT = "9CA99BDB2A779C1B19C95682D7D60B5FA7FD08E2"
DAVE_KEY = """\
-----BEGIN PGP PUBLIC KEY BLOCK-----

xjMEawvjSxYJKwYBBAHaRw8BAQdA6NBR4ZbGV/Cf7sPL5eLcICbsdnLgLaczBv3B
p6jDWDfNEjxkYXZlQGV4YW1wbGUub3JnPsKHBBMWCgAvBQJrC+NLAhsDAwsJBwQV
CgkIAhYAAh4BFiEEnKmb2yp3nBsZyVaC19YLX6f9COIACgkQ19YLX6f9COKzDQEA
3o9G3cO9HbFl0e4E0+8imn+yTdzX16zOrYnBFHNhePYBAJwhouEGT7X/bNG4C7Y5
ApsEDk3aX4j66shpMGqXwUwPzjgEawvjSxIKKwYBBAGXVQEFAQEHQLz0mIjWTlUU
Ye3wOtV5kCi5xuiPRmXB6z/j5VLPRW59AwEIB8J4BBgWCgAgBQJrC+NLAhsMFiEE
nKmb2yp3nBsZyVaC19YLX6f9COIACgkQ19YLX6f9COIr1gEAnT2eGKF1SbrgsBU8
WCmYMYyk/hXLNi2qDU8AsvOzErwBANO/XQDlyIi895olvK+IEKJtMN7sB3Db5X85
2jpgNGAL
=3/io
-----END PGP PUBLIC KEY BLOCK-----
"""
"""Dave's OpenPGP public key (ed25519/cv25519, user id <dave@example.org>), fixed test data."""
BASE_TIME = 1767225600  # 2026-01-01 00:00 UTC
QUEUE_ID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _message(
    sender: str, subject: str, n: int, auth: str, body: str, attachment: str = ""
) -> bytes:
    msg = EmailMessage()
    msg["Return-Path"] = f"<{sender}>"
    if auth:
        msg["Authentication-Results"] = auth
    msg["From"] = sender
    msg["To"] = f"alice@{ALICE.onion_address}"
    msg["Subject"] = subject
    msg["Date"] = f"Thu, 01 Jan 2026 {n % 24:02d}:{n % 60:02d}:00 +0000"
    msg["Message-ID"] = f"<sample-{n}@{sender.rsplit('@', 1)[-1]}>"
    msg.set_content(body)
    if attachment:
        msg.add_attachment(b"%PDF-1.4 sample\n" * 40, "application", "pdf", filename=attachment)
    return bytes(msg)


def write_message(maildir: Path, n: int, data: bytes) -> Path:
    path = maildir / "new" / f"{BASE_TIME + n * 60}.M{n}P1.sample"
    path.write_bytes(data)
    return path


def _with_openpgp_status(message: bytes, status: str) -> bytes:
    """As the box stores a message it decrypted: the verdict first, under Return-Path and
    Authentication-Results."""
    head, _, rest = message.partition(b"From: ")
    return head + f"Onionmail-OpenPGP: {status}\n".encode() + b"From: " + rest


def sample_messages(onion: str, *, gateway: bool = True) -> list[bytes]:
    sealed = f"{onion}; onionmail=pass (sealed envelope opened with the sender's onion key)"
    plain = f"{onion}; onionmail=none (plain SMTP peer; sender not verified)"
    forged = "evil.example; onionmail=pass (claimed by the peer, not by this box)"
    relayed = f"{onion}; onionmail=gateway (relayed by a configured gateway)"
    messages = [
        _message(CAROL_ADDRESS, "Meeting notes", 1, plain, "Notes from an OnionMX peer.\n"),
        _message(
            BOB_ADDRESS, "The report", 2, sealed, "Report attached.\n", attachment="report.pdf"
        ),
        _message(BOB_ADDRESS, "Forged result", 3, forged, "This one claims a pass itself.\n"),
        _message(BOB_ADDRESS, "Hello Alice", 4, sealed, "Hi Alice,\n\nsealed and verified.\n"),
    ]
    if gateway:
        messages += [
            _with_openpgp_status(
                _message(OTHER_CLEARNET_ADDRESS, "Newsletter", 5, relayed, "Clearnet mail.\n"),
                "none (not encrypted)",
            ),
            _with_openpgp_status(
                _message(CLEARNET_ADDRESS, "Keys", 6, relayed, "Encrypted to your alias.\n"),
                f"decrypted; signature=verified; signer={DAVE_FINGERPRINT}",
            ),
        ]
    return messages


def add_sample_thread(box_dir: Path) -> None:
    """Two answers to Carol's "Meeting notes" in alice's inbox, the newest mail of the
    folder: Bob's reply, then Carol's reply to Bob (a thread of three)."""
    onion = ALICE.onion_address
    sealed = f"{onion}; onionmail=pass (sealed envelope opened with the sender's onion key)"
    first = f"<sample-1@{CAROL.onion_address}>"
    second = f"<sample-7@{BOB.onion_address}>"
    replies = [
        (7, BOB_ADDRESS, "Thanks, I add the budget.\n", first, first),
        (8, CAROL_ADDRESS, "Second reply: agreed.\n", second, f"{first} {second}"),
    ]
    for n, sender, body, parent, references in replies:
        msg = email.message_from_bytes(
            _message(sender, "Re: Meeting notes", n, sealed, body), policy=email.policy.default
        )
        msg["In-Reply-To"] = parent
        msg["References"] = references
        write_message(box_dir / "mail" / "alice", n, bytes(msg))


def create_sample_box(
    box_dir: Path, *, policy_rules: tuple[str, ...] = (), gateway: bool = True
) -> Path:
    """A box ``alice`` in ``box_dir`` with mail, contacts, a queued message and ledger entries.

    With ``gateway`` (the default) it is also registered with a gateway (alias
    :data:`ALIAS`), routes :data:`ONION_MX_DOMAIN` by ``[onion_mx]``, holds
    Dave's OpenPGP key and has two messages relayed by the gateway.
    """
    create_box(box_dir, "alice", submission_port=1587)
    key = box_dir / "keys" / "identity.key"
    key.unlink()
    save_identity(ALICE, key, None)
    config = box_dir / "onionmail.toml"
    text = config.read_text()
    if policy_rules:
        rules = ", ".join(f'"{r}"' for r in policy_rules)
        text = text.replace("[policy]\n", f"[policy]\nrules = [{rules}]\n", 1)
    if gateway:
        text = text.replace("[gateway]\n", f'[gateway]\n"{GATEWAY.onion_address}" = "{ALIAS}"\n', 1)
        text = text.replace(
            "[onion_mx]\n", f'[onion_mx]\n"{ONION_MX_DOMAIN}" = "{CORP.onion_address}"\n', 1
        )
        PeerKeyStore(peers_path(box_dir)).import_key(DAVE_KEY, CLEARNET_ADDRESS, now=BASE_TIME)
    config.write_text(text)
    maildir = box_dir / "mail" / "alice"
    for sub in ("tmp", "new", "cur"):
        ensure_private_dir(maildir / sub)
    for n, data in enumerate(sample_messages(ALICE.onion_address, gateway=gateway), start=1):
        write_message(maildir, n, data)
    write_private_file(
        box_dir / "contacts.toml",
        f'[contacts]\nbob = "{BOB_ADDRESS}"\ndave = "{CLEARNET_ADDRESS}"\n'
        f'frank = "{ONION_MX_ADDRESS}"\n'.encode(),
    )
    _queue_entry(box_dir)
    _ledger_entries(box_dir)
    return box_dir


def _queue_entry(box_dir: Path) -> None:
    active = ensure_private_dir(box_dir / "queue" / "active")
    ensure_private_dir(box_dir / "queue" / "tmp")
    write_private_file(active / f"{QUEUE_ID}.msg", b"(encrypted at rest)")
    state = {
        "id": QUEUE_ID,
        "destination": BOB.onion_address,
        "created": float(BASE_TIME),
        "attempts": 3,
        "next_try": float(BASE_TIME + 3600),
        "last_error": "onion service not reachable (tor SOCKS 0xF2)",
        "cover": False,
    }
    write_private_file(active / f"{QUEUE_ID}.state", json.dumps(state).encode())


def _ledger_entries(box_dir: Path) -> None:
    keeper = LeakKeeper(load_config(box_dir), ALICE.seed)
    for n, path in ((2, MailPath.ONION_SEALED), (1, MailPath.ONION_PLAIN)):
        sender = BOB.onion_address if n == 2 else CAROL.onion_address
        keeper.ledger.record(
            message_ids=[f"sample-{n}@{sender}"],
            destination="",
            direction="received",
            matrix=keeper.matrix(path, "received"),
            state="stored",
            now=BASE_TIME,
            seal="v2" if path is MailPath.ONION_SEALED else "",
        )
    keeper.ledger.record(
        message_ids=["sent-1@alice"],
        destination=BOB.onion_address,
        direction="sent",
        matrix=keeper.matrix(MailPath.ONION_SEALED, "sent", BOB_ADDRESS),
        state="queued",
        now=BASE_TIME,
    )
