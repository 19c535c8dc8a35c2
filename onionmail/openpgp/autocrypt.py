"""Autocrypt Level 1: learn clearnet correspondents' keys from their mail, announce ours.

What is here:

* :func:`parse_autocrypt_header` / :func:`format_autocrypt_header`: the
  ``Autocrypt:`` header field (``addr=``, ``prefer-encrypt=``, ``keydata=``).
  Parsing follows the Level 1 rules: ``;``-separated ``name=value``
  attributes; ``addr`` and ``keydata`` exactly once; an unknown attribute
  makes the header invalid unless its name starts with ``_``;
  ``prefer-encrypt`` other than ``mutual`` means "no preference"; ``keydata``
  is base64 of a binary OpenPGP key, whitespace (folding) ignored.
* :class:`PeerKeyStore`: the box's store of recipients' keys, one JSON file
  (0600, written atomically and durably) in the box's ``keys`` directory.
  :meth:`PeerKeyStore.process_incoming` applies Autocrypt's update rule to a
  received message; :meth:`PeerKeyStore.import_key` takes an ASCII-armored
  key by hand.

Decisions, beyond the spec:

* **The key must name the sender.** Autocrypt itself only compares ``addr``
  with ``From``; here the key must also carry a self-signed user id with that
  address (:class:`~onionmail.core.errors.KeyMismatchError` otherwise), so a key
  learned for one address is never silently used for another.
* **A key imported by hand is pinned.** Autocrypt headers are unauthenticated
  (anyone can write ``From: alice``), so they never replace a key the user
  imported; they only refresh ``last_seen``. Importing again replaces it.
* **Bounded.** Keys over :data:`MAX_KEYDATA_BYTES` are refused; at most
  :data:`MAX_PEERS` peers are kept, the longest unseen Autocrypt-learned one
  being dropped first (a flood of forged senders cannot grow the file without
  bound, nor push out pinned keys).
* **Only what Autocrypt needs is recorded** (address, key, preference, two
  timestamps): a peer without an Autocrypt header is never added, so the file
  is not a log of everyone who wrote to the box.

Nothing here logs addresses or keys above DEBUG; reasons say what was wrong
without repeating the address.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import os
import re
import stat
import threading
import time
from dataclasses import asdict, dataclass
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onionmail.core.errors import AddressError, KeyMismatchError, OpenPGPError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.core.mail_address import parse_mail_address
from onionmail.message.rfc5322 import MessageFormatError, parse_message

if TYPE_CHECKING:  # keys loads pgpy, which the inbox and the box's start do not need
    from onionmail.openpgp.keys import PublicKey

log = logging.getLogger(__name__)

MAX_KEYDATA_BYTES = 16 * 1024  # decoded; an Autocrypt key is a few hundred bytes
MAX_HEADER_CHARS = 64 * 1024
MAX_PEERS = 5000
STORE_FORMAT = "onionmail-openpgp-peers-v1"
MAX_STORE_BYTES = 256 * 1024 * 1024
KEYDATA_LINE = 76

_ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-]+")


class Source(enum.Enum):
    AUTOCRYPT = "autocrypt"
    MANUAL = "manual"


@dataclass(frozen=True)
class AutocryptHeader:
    """One parsed ``Autocrypt:`` header field."""

    addr: str  # lowercased
    keydata: bytes
    prefer_encrypt_mutual: bool = False

    def __repr__(self) -> str:
        return f"AutocryptHeader(<addr>, keydata=<{len(self.keydata)} bytes>)"


def parse_autocrypt_header(value: str | bytes) -> AutocryptHeader:
    """Parse one ``Autocrypt:`` field value; :class:`OpenPGPError` says why it is invalid."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if len(value) > MAX_HEADER_CHARS:
        raise OpenPGPError("the Autocrypt header is too long")
    attributes: dict[str, str] = {}
    for item in value.split(";"):
        item = item.strip(" \t\r\n")
        if not item:
            continue
        name, equals, attr_value = item.partition("=")
        name = name.strip(" \t\r\n").lower()
        if not equals or not _ATTRIBUTE_NAME.fullmatch(name):
            raise OpenPGPError("the Autocrypt header has an attribute without name=value")
        if name in attributes:
            raise OpenPGPError(f"the Autocrypt header repeats the attribute {name!r}")
        attributes[name] = attr_value.strip(" \t\r\n")
    unknown = [n for n in attributes if n not in ("addr", "keydata", "prefer-encrypt")]
    if any(not n.startswith("_") for n in unknown):
        raise OpenPGPError("the Autocrypt header has an unknown critical attribute")
    if "addr" not in attributes or "keydata" not in attributes:
        raise OpenPGPError("the Autocrypt header lacks addr= or keydata=")
    try:
        addr = str(parse_mail_address(attributes["addr"]))
    except AddressError as exc:
        raise OpenPGPError(f"the Autocrypt addr is not a usable address: {exc}") from exc
    return AutocryptHeader(
        addr=addr,
        keydata=_decode_keydata(attributes["keydata"]),
        prefer_encrypt_mutual=attributes.get("prefer-encrypt") == "mutual",
    )


def _decode_keydata(text: str) -> bytes:
    compact = re.sub(r"[ \t\r\n]", "", text)
    if len(compact) > (MAX_KEYDATA_BYTES * 4) // 3 + 4:
        raise OpenPGPError(f"the Autocrypt keydata is over {MAX_KEYDATA_BYTES} bytes")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise OpenPGPError("the Autocrypt keydata is not valid base64") from exc
    if not data:
        raise OpenPGPError("the Autocrypt keydata is empty")
    return data


def format_autocrypt_header(addr: str, keydata: bytes, *, prefer_encrypt_mutual: bool) -> bytes:
    """The value of an ``Autocrypt:`` field, folded (CRLF + space) to stay under 78 columns.

    The value starts without a blank: :meth:`onionmail.message.rfc5322.Message.set` adds one.
    """
    addr = str(parse_mail_address(addr))
    encoded = base64.b64encode(keydata)
    chunks = [encoded[i : i + KEYDATA_LINE] for i in range(0, len(encoded), KEYDATA_LINE)]
    prefer = b" prefer-encrypt=mutual;" if prefer_encrypt_mutual else b""
    return (
        b"addr=" + addr.encode("ascii") + b";" + prefer + b" keydata=\r\n " + b"\r\n ".join(chunks)
    )


def check_key_names(key: PublicKey, address: str) -> None:
    """:class:`KeyMismatchError` unless a self-signed user id of ``key`` is ``address``."""
    if str(parse_mail_address(address)) not in key.addresses:
        raise KeyMismatchError(
            "the key's user ids do not name the sender's address; refused (a key is only "
            "used for the address it names)"
        )


# --- the store -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerKey:
    """What the box knows about one correspondent's key."""

    address: str
    fingerprint: str
    keydata: bytes
    source: Source
    prefer_encrypt_mutual: bool
    autocrypt_timestamp: int  # effective date of the message the key came from (or import time)
    last_seen: int  # effective date of the newest message seen from the address

    def __repr__(self) -> str:
        return f"PeerKey(<address>, fingerprint={self.fingerprint}, source={self.source.value})"

    def public_key(self) -> PublicKey:
        from onionmail.openpgp.keys import parse_public_key

        return parse_public_key(self.keydata)


class Outcome(enum.Enum):
    STORED = "stored"  # the key was new or replaced an older one
    SEEN = "seen"  # no usable header, or an older message: only last_seen moved (if at all)
    PINNED = "pinned"  # a header for an address whose key was imported by hand: not replaced
    REFUSED = "refused"  # a header that names the sender but whose key is not acceptable
    IGNORED = "ignored"  # nothing Autocrypt applies to (no single From, a report, no header)


@dataclass(frozen=True)
class AutocryptResult:
    outcome: Outcome
    reason: str  # for the user and DEBUG logs; never holds the address
    peer: PeerKey | None = None


def _encode_peer(peer: PeerKey) -> dict[str, Any]:
    record = asdict(peer)
    record["keydata"] = base64.b64encode(peer.keydata).decode("ascii")
    record["source"] = peer.source.value
    return record


def _decode_peer(record: dict[str, Any]) -> PeerKey:
    return PeerKey(
        address=str(record["address"]),
        fingerprint=str(record["fingerprint"]),
        keydata=base64.b64decode(record["keydata"], validate=True),
        source=Source(record["source"]),
        prefer_encrypt_mutual=bool(record["prefer_encrypt_mutual"]),
        autocrypt_timestamp=int(record["autocrypt_timestamp"]),
        last_seen=int(record["last_seen"]),
    )


class PeerKeyStore:
    """Correspondents' OpenPGP keys, in one private JSON file (``keys/openpgp-peers.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    # reading and writing the file

    def _load(self) -> dict[str, PeerKey]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise OpenPGPError(f"{self.path}: cannot open the key store: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077:
                raise OpenPGPError(f"{self.path}: the key store must be a regular file, mode 0600")
            data = handle.read(MAX_STORE_BYTES + 1)
        try:
            document = json.loads(data)
            if document.get("format") != STORE_FORMAT:
                raise ValueError("unknown format")
            peers = {address: _decode_peer(r) for address, r in document["peers"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise OpenPGPError(f"{self.path}: the key store is damaged ({exc})") from exc
        return peers

    def _save(self, peers: dict[str, PeerKey]) -> None:
        document = {
            "format": STORE_FORMAT,
            "peers": {address: _encode_peer(peer) for address, peer in sorted(peers.items())},
        }
        ensure_private_dir(self.path.parent)
        write_private_file(self.path, json.dumps(document, indent=1).encode("ascii") + b"\n")

    # queries

    def get(self, address: str) -> PeerKey | None:
        """The stored key for ``address``, or None."""
        with self._lock:
            return self._load().get(str(parse_mail_address(address)))

    def public_key(self, address: str) -> PublicKey | None:
        """The parsed key for ``address`` (the one to encrypt to, or to verify with), or None."""
        peer = self.get(address)
        return peer.public_key() if peer else None

    def addresses(self) -> list[str]:
        with self._lock:
            return sorted(self._load())

    def peers(self) -> list[PeerKey]:
        """Every stored key, by address (one read of the file; nothing is parsed by pgpy)."""
        with self._lock:
            return [peer for _, peer in sorted(self._load().items())]

    def remove(self, address: str) -> bool:
        address = str(parse_mail_address(address))
        with self._lock:
            peers = self._load()
            if peers.pop(address, None) is None:
                return False
            self._save(peers)
            return True

    # changes

    def import_key(
        self, armored: str | bytes, address: str, *, now: float | None = None
    ) -> PeerKey:
        """Store a key given by hand for ``address``; it is pinned against Autocrypt.

        :class:`KeyMismatchError` if no self-signed user id of the key is
        ``address``; :class:`OpenPGPError` if the key is unusable.
        """
        from onionmail.openpgp.keys import parse_public_key

        address = str(parse_mail_address(address))
        key = parse_public_key(armored)
        check_key_names(key, address)
        stamp = int(time.time() if now is None else now)
        with self._lock:
            peers = self._load()
            old = peers.get(address)
            peer = PeerKey(
                address=address,
                fingerprint=key.fingerprint,
                keydata=key.data,
                source=Source.MANUAL,
                prefer_encrypt_mutual=old.prefer_encrypt_mutual if old else False,
                autocrypt_timestamp=stamp,
                last_seen=max(stamp, old.last_seen) if old else stamp,
            )
            peers[address] = peer
            self._save(peers)
        log.info("imported an OpenPGP key by hand")
        return peer

    def import_key_file(self, path: Path, address: str) -> PeerKey:
        """:meth:`import_key` of an ASCII-armored key file."""
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_KEYDATA_BYTES * 4 + 1)
        except OSError as exc:
            raise OpenPGPError(f"{path}: cannot read the key file: {exc.strerror}") from exc
        return self.import_key(data, address)

    def process_incoming(self, message: bytes, *, now: float | None = None) -> AutocryptResult:
        """Apply Autocrypt's update rule to a received message (CRLF line ends)."""
        now_s = int(time.time() if now is None else now)
        found = _autocrypt_of(message, now_s)
        if isinstance(found, AutocryptResult):
            return found
        sender, effective, header = found
        with self._lock:
            peers = self._load()
            before = dict(peers)
            result = _update(peers, sender, effective, header)
            if peers != before:
                _bound(peers, keep=sender)
                self._save(peers)
        log.debug("autocrypt: %s (%s)", result.outcome.value, result.reason)
        return result


def single_address(value: bytes | None) -> str | None:
    """The one mail address in a header field's value, or None (none, several, invalid)."""
    if value is None:
        return None
    pairs = getaddresses([value.decode("utf-8", "replace")])
    if len(pairs) != 1 or not pairs[0][1]:
        return None
    try:
        return str(parse_mail_address(pairs[0][1]))
    except AddressError:
        return None


def _sender(message: Any) -> str | None:
    values = message.get_all("From")
    return single_address(values[0]) if len(values) == 1 else None


def _effective_date(message: Any, now: int) -> int:
    """The message's Date, but never in the future (a forged future date would pin a key)."""
    value = message.get("Date")
    try:
        stamp = int(parsedate_to_datetime(value.decode("ascii", "replace")).timestamp())
    except (AttributeError, TypeError, ValueError, IndexError, OverflowError):
        return now
    return min(stamp, now)


def _autocrypt_of(
    data: bytes, now: int
) -> tuple[str, int, AutocryptHeader | None] | AutocryptResult:
    """(sender, effective date, the one valid header or None), or why Autocrypt does not apply."""
    try:
        message = parse_message(data)
    except MessageFormatError:
        return AutocryptResult(Outcome.IGNORED, "the message header is malformed")
    sender = _sender(message)
    if sender is None:
        return AutocryptResult(Outcome.IGNORED, "the message has no single From address")
    content_type = (message.get("Content-Type") or b"").decode("ascii", "replace")
    if content_type.strip().lower().startswith("multipart/report"):
        return AutocryptResult(Outcome.IGNORED, "delivery reports carry no Autocrypt state")
    valid: list[AutocryptHeader] = []
    reasons: list[str] = []
    for value in message.get_all("Autocrypt"):
        try:
            header = parse_autocrypt_header(value)
        except OpenPGPError as exc:
            reasons.append(str(exc))
            continue
        if header.addr == sender:
            valid.append(header)
        else:
            reasons.append("the Autocrypt addr is not the From address")
    if len(valid) > 1:
        return AutocryptResult(Outcome.IGNORED, "more than one Autocrypt header for the sender")
    if not valid and reasons:
        # a header was there but none is usable: refused, so the caller can tell
        return AutocryptResult(Outcome.REFUSED, "; ".join(reasons))
    return sender, _effective_date(message, now), valid[0] if valid else None


def _update(
    peers: dict[str, PeerKey], sender: str, effective: int, header: AutocryptHeader | None
) -> AutocryptResult:
    """Change ``peers`` in place per Autocrypt; the result's peer is the stored state."""
    old = peers.get(sender)
    if header is None:
        if old is None:
            return AutocryptResult(Outcome.IGNORED, "no Autocrypt header")
        if effective > old.last_seen:
            peers[sender] = _replace(old, last_seen=effective)
        return AutocryptResult(Outcome.SEEN, "no Autocrypt header", peers[sender])
    if old is not None and effective <= old.autocrypt_timestamp:
        return AutocryptResult(Outcome.SEEN, "an older message than the stored key's", old)
    from onionmail.openpgp.keys import parse_public_key

    try:
        key = parse_public_key(header.keydata)
        check_key_names(key, sender)
    except OpenPGPError as exc:  # KeyMismatchError included
        return AutocryptResult(Outcome.REFUSED, str(exc), old)
    if old is not None and old.source is Source.MANUAL:
        peers[sender] = _replace(old, last_seen=max(old.last_seen, effective))
        outcome = Outcome.SEEN if key.fingerprint == old.fingerprint else Outcome.PINNED
        return AutocryptResult(outcome, "the key was imported by hand; kept", peers[sender])
    peers[sender] = PeerKey(
        address=sender,
        fingerprint=key.fingerprint,
        keydata=key.data,
        source=Source.AUTOCRYPT,
        prefer_encrypt_mutual=header.prefer_encrypt_mutual,
        autocrypt_timestamp=effective,
        last_seen=max(effective, old.last_seen) if old else effective,
    )
    return AutocryptResult(
        Outcome.STORED, "stored the key from the Autocrypt header", peers[sender]
    )


def _replace(peer: PeerKey, *, last_seen: int) -> PeerKey:
    return PeerKey(**{**asdict(peer), "last_seen": last_seen})


def _bound(peers: dict[str, PeerKey], keep: str) -> None:
    """Drop the longest-unseen Autocrypt-learned peers beyond :data:`MAX_PEERS`."""
    while len(peers) > MAX_PEERS:
        learned = [p for p in peers.values() if p.source is Source.AUTOCRYPT and p.address != keep]
        if not learned:
            return
        del peers[min(learned, key=lambda p: p.last_seen).address]
