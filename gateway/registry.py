"""Which box owns which alias: the ``registrations`` table of :mod:`gateway.storage`.

Two kinds of process change it: a running gateway instance (new requests)
and ``onionmail-gateway approve|deny|remove|rename`` (decisions), and with
PostgreSQL several instances at once; every change runs in an exclusive
transaction, so the rules below hold across all of them, and a decision
takes effect at the next lookup, without a restart. A lookup is one indexed
query (by alias, or by box address).

Each entry keeps the box's signed request (its bytes and the signature):
the operator can show later which box asked for an alias, and anyone can
re-check it with the box's onion address alone.

Rules: an alias belongs to one box address and a box address has one alias
per gateway; asking again for the same alias returns its current state; a
denied alias stays denied (it cannot be asked for again by anyone) until
the operator removes it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.storage import Cursor, Database
from onionmail.core.errors import RegistrationError, SealError
from onionmail.gateway_link.protocol import RegistrationRequest, check_alias
from onionmail.seal.mail_key import MailKeyCertificate

log = logging.getLogger(__name__)

PENDING, APPROVED, DENIED = "pending", "approved", "denied"


@dataclass(frozen=True)
class Registration:
    alias: str
    """The local part at the gateway's domain."""
    box: str
    """The box address mail for the alias goes to."""
    state: str
    requested: float
    decided: float = 0.0
    request: str = ""
    """The signed request bytes (JSON) as the box sent them."""
    signature: str = ""
    """Base64 of the box's ed25519 signature over ``request``."""


_COLUMNS = "alias, box, state, requested, decided, request, signature"


def _row(row: tuple[Any, ...]) -> Registration:
    alias, box, state, requested, decided, request, signature = row
    return Registration(
        str(alias), str(box), str(state), float(requested), float(decided), str(request),
        str(signature),
    )  # fmt: skip


def _one(db: Cursor, where: str, value: str) -> Registration | None:
    rows = db.execute(f"SELECT {_COLUMNS} FROM registrations WHERE {where} = ?", (value,))
    return _row(rows[0]) if rows else None


class Registry:
    """The registrations of one gateway (blocking database calls: from a thread when hot)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def get(self, alias: str) -> Registration | None:
        with self.db.transaction() as db:
            return _one(db, "alias", alias.lower())

    def by_box(self, box: str) -> Registration | None:
        with self.db.transaction() as db:
            return _one(db, "box", box.lower())

    def all(self) -> list[Registration]:
        with self.db.transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM registrations")
        return sorted((_row(r) for r in rows), key=_order)

    def request(
        self, request: RegistrationRequest, *, require_approval: bool, max_per_box: int = 3
    ) -> Registration:
        """Record a verified request; the (new or existing) registration.

        Raises :class:`RegistrationError` when the alias is another box's, the
        box address already has another alias here, the box (its onion: all its
        local parts) holds ``max_per_box`` aliases already, or the alias was denied.
        """
        with self.db.transaction(exclusive=True) as db:
            existing = _one(db, "alias", request.alias)
            if existing is not None and existing.box != request.box:
                raise RegistrationError("this alias is taken")
            if existing is not None:
                if existing.state == DENIED:
                    raise RegistrationError("the gateway's operator denied this alias")
                return existing
            other = _one(db, "box", request.box)
            if other is not None:
                raise RegistrationError(f"this box already has the alias {other.alias!r} here")
            onion = request.box.rpartition("@")[2]
            ((held,),) = db.execute("SELECT COUNT(*) FROM registrations WHERE onion = ?", (onion,))
            if int(held) >= max_per_box:
                raise RegistrationError(
                    f"this box holds {held} aliases here already, the most this gateway allows"
                )
            entry = Registration(
                alias=request.alias,
                box=request.box,
                state=PENDING if require_approval else APPROVED,
                requested=time.time(),
                decided=0.0 if require_approval else time.time(),
                request=request.signed_bytes().decode(),
                signature=base64.b64encode(request.signature).decode("ascii"),
            )
            db.execute(
                f"INSERT INTO registrations ({_COLUMNS}, onion) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    entry.alias, entry.box, entry.state, entry.requested, entry.decided,
                    entry.request, entry.signature, onion,
                ),
            )  # fmt: skip
            return entry

    def decide(self, alias: str, *, approve: bool) -> Registration:
        """Approve or deny ``alias``; raises :class:`RegistrationError` if there is none."""
        with self.db.transaction(exclusive=True) as db:
            existing = self._existing(db, alias)
            state, now = (APPROVED if approve else DENIED), time.time()
            db.execute(
                "UPDATE registrations SET state = ?, decided = ? WHERE alias = ?",
                (state, now, existing.alias),
            )
            return Registration(**{**existing.__dict__, "state": state, "decided": now})

    def remove(self, alias: str) -> Registration:
        """Forget ``alias`` (a denied one too): it may be asked for again, by any box."""
        with self.db.transaction(exclusive=True) as db:
            existing = self._existing(db, alias)
            db.execute("DELETE FROM registrations WHERE alias = ?", (existing.alias,))
            return existing

    def rename(self, alias: str, new_alias: str) -> Registration:
        """Give the registration of ``alias`` the free alias ``new_alias`` (same box,
        same state; the box's signed request stays, and names the old alias)."""
        new_alias = new_alias.lower()
        with self.db.transaction(exclusive=True) as db:
            existing = self._existing(db, alias)
            if _one(db, "alias", new_alias) is not None:
                raise RegistrationError(f"the alias {new_alias!r} is taken")
            check_alias(new_alias)
            db.execute(
                "UPDATE registrations SET alias = ? WHERE alias = ?", (new_alias, existing.alias)
            )
            return Registration(**{**existing.__dict__, "alias": new_alias})

    @staticmethod
    def _existing(db: Cursor, alias: str) -> Registration:
        existing = _one(db, "alias", alias.lower())
        if existing is None:
            raise RegistrationError(f"no registration for the alias {alias!r}")
        return existing


def _order(entry: Registration) -> tuple[float, str]:
    return (entry.requested, entry.alias)


class BoxMailKeys:
    """The mail key certificate each box last showed: the ``box_mail_keys`` table.

    Learned from the handshake seal of every session a box opens to the
    gateway (its registration, its outbound mail) and from a box's greeting
    when the gateway delivers to it. Clearnet mail for a box is sealed on
    arrival to the key kept here (:func:`onionmail.gateway_link.protocol.seal_for_box`),
    so nothing the gateway holds opens it, and neither does the box's tor.
    Only certificates are kept (public, and re-checked on every use). The
    table is shared: a key a box showed one instance seals what another
    instance accepts for it. A ``box-mail-keys.json`` of an older gateway is
    moved in at the first start (:func:`import_box_mail_keys_json`).
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    def learn(self, onion: str, certificate: bytes, now: float) -> None:
        """Keep ``certificate`` for ``onion`` if it is valid and newer than the one kept."""
        try:
            new = MailKeyCertificate.verify(certificate, onion, now)
        except SealError:
            return
        old = self.certificate(onion, now)
        if old is not None and (old.mail_key == new.mail_key and old.not_after >= new.not_after):
            return
        encoded = base64.b64encode(certificate).decode("ascii")
        with self.db.transaction() as cur:
            # An older certificate shown late never replaces a newer one, whichever
            # instance saw which first.
            cur.execute(
                "INSERT INTO box_mail_keys (onion, certificate, not_before) VALUES (?, ?, ?) "
                "ON CONFLICT (onion) DO UPDATE SET certificate = excluded.certificate, "
                "not_before = excluded.not_before "
                "WHERE box_mail_keys.not_before <= excluded.not_before",
                (onion.lower(), encoded, int(new.not_before)),
            )

    def certificate(self, onion: str, now: float) -> MailKeyCertificate | None:
        with self.db.transaction() as cur:
            rows = cur.execute(
                "SELECT certificate FROM box_mail_keys WHERE onion = ?", (onion.lower(),)
            )
        if not rows:
            return None
        try:
            return MailKeyCertificate.verify(base64.b64decode(rows[0][0]), onion, now)
        except (SealError, ValueError):
            return None

    def mail_key(self, onion: str, now: float) -> bytes | None:
        """The box's current mail key, or None (never seen, or its certificate expired)."""
        found = self.certificate(onion, now)
        return None if found is None else found.mail_key


def import_box_mail_keys_json(keys: BoxMailKeys, path: Path) -> int:
    """Move an older gateway's ``state/box-mail-keys.json`` into the table once; how many.

    The file is renamed ``box-mail-keys.json.imported`` afterwards; each
    certificate is checked as it is learned (an expired one is dropped).
    """
    if not path.exists():
        return 0
    try:
        loaded = json.loads(path.read_bytes())
        entries = {str(k): base64.b64decode(str(v)) for k, v in loaded.items()}
    except (OSError, ValueError, AttributeError, binascii.Error):
        log.error("the box mail key file is unreadable; boxes will be relearned")
        entries = {}
    now = time.time()
    for onion, certificate in entries.items():
        keys.learn(onion, certificate, now)
    path.rename(path.with_name(path.name + ".imported"))
    return len(entries)
