"""Which box owns which alias: ``GWDIR/registrations.json`` (0600).

One JSON file rewritten atomically (write, fsync, rename) under an
exclusive ``flock`` of ``registrations.lock``, because two processes change
it: the running gateway (new requests) and ``onionmail-gateway
approve|deny`` (decisions). The gateway re-reads the file when it changed
on disk, so a decision takes effect without a restart.

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
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from onionmail.core.errors import RegistrationError, SealError
from onionmail.core.files import write_private_file
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


class Registry:
    """The registrations of one gateway (blocking file I/O; call from a thread when hot)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._entries: dict[str, Registration] = {}
        self._seen: tuple[int, int] | None = None

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return None
        return (info.st_mtime_ns, info.st_size)

    def _load(self) -> dict[str, Registration]:
        stamp = self._stamp()
        if stamp != self._seen:
            if stamp is None:
                self._entries = {}
            else:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self._entries = {e["alias"]: Registration(**e) for e in data["registrations"]}
            self._seen = stamp
        return self._entries

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Registration]]:
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            entries = dict(self._load())
            yield entries
            data = {"registrations": [asdict(e) for e in sorted(entries.values(), key=_order)]}
            write_private_file(self.path, json.dumps(data, indent=1).encode())
            self._entries, self._seen = entries, self._stamp()
        finally:
            os.close(fd)

    def get(self, alias: str) -> Registration | None:
        return self._load().get(alias.lower())

    def by_box(self, box: str) -> Registration | None:
        box = box.lower()
        return next((e for e in self._load().values() if e.box == box), None)

    def all(self) -> list[Registration]:
        return sorted(self._load().values(), key=_order)

    def request(
        self, request: RegistrationRequest, *, require_approval: bool, max_per_box: int = 3
    ) -> Registration:
        """Record a verified request; the (new or existing) registration.

        Raises :class:`RegistrationError` when the alias is another box's, the
        box address already has another alias here, the box (its onion: all its
        local parts) holds ``max_per_box`` aliases already, or the alias was denied.
        """
        with self._locked() as entries:
            existing = entries.get(request.alias)
            if existing is not None and existing.box != request.box:
                raise RegistrationError("this alias is taken")
            if existing is not None:
                if existing.state == DENIED:
                    raise RegistrationError("the gateway's operator denied this alias")
                return existing
            other = next((e for e in entries.values() if e.box == request.box), None)
            if other is not None:
                raise RegistrationError(f"this box already has the alias {other.alias!r} here")
            onion = request.box.rpartition("@")[2]
            held = sum(1 for e in entries.values() if e.box.rpartition("@")[2] == onion)
            if held >= max_per_box:
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
            entries[entry.alias] = entry
            return entry

    def decide(self, alias: str, *, approve: bool) -> Registration:
        """Approve or deny ``alias``; raises :class:`RegistrationError` if there is none."""
        with self._locked() as entries:
            existing = entries.get(alias.lower())
            if existing is None:
                raise RegistrationError(f"no registration for the alias {alias!r}")
            decided = Registration(
                **{
                    **asdict(existing),
                    "state": APPROVED if approve else DENIED,
                    "decided": time.time(),
                }
            )
            entries[decided.alias] = decided
            return decided

    def remove(self, alias: str) -> Registration:
        """Forget ``alias`` (a denied one too): it may be asked for again, by any box."""
        with self._locked() as entries:
            existing = entries.pop(alias.lower(), None)
            if existing is None:
                raise RegistrationError(f"no registration for the alias {alias!r}")
            return existing

    def rename(self, alias: str, new_alias: str) -> Registration:
        """Give the registration of ``alias`` the free alias ``new_alias`` (same box,
        same state; the box's signed request stays, and names the old alias)."""
        new_alias = new_alias.lower()
        with self._locked() as entries:
            existing = entries.get(alias.lower())
            if existing is None:
                raise RegistrationError(f"no registration for the alias {alias!r}")
            if new_alias in entries:
                raise RegistrationError(f"the alias {new_alias!r} is taken")
            check_alias(new_alias)
            renamed = Registration(**{**asdict(existing), "alias": new_alias})
            del entries[existing.alias]
            entries[new_alias] = renamed
            return renamed


def _order(entry: Registration) -> tuple[float, str]:
    return (entry.requested, entry.alias)


class BoxMailKeys:
    """The mail key certificate each box last showed: ``GWDIR/state/box-mail-keys.json``.

    Learned from the handshake seal of every session a box opens to the
    gateway (its registration, its outbound mail) and from a box's greeting
    when the gateway delivers to it. Clearnet mail for a box is sealed on
    arrival to the key kept here (:func:`onionmail.gateway_link.protocol.seal_for_box`),
    so nothing the gateway holds opens it, and neither does the box's tor.
    Only certificates are kept (public, and re-checked on every use).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._certificates: dict[str, str] | None = None

    def _all(self) -> dict[str, str]:
        if self._certificates is None:
            try:
                loaded = json.loads(self.path.read_bytes())
                self._certificates = {str(k): str(v) for k, v in loaded.items()}
            except FileNotFoundError:
                self._certificates = {}
            except (OSError, ValueError, AttributeError):
                log.error("the box mail key file is unreadable; boxes will be relearned")
                self._certificates = {}
        return self._certificates

    def learn(self, onion: str, certificate: bytes, now: float) -> None:
        """Keep ``certificate`` for ``onion`` if it is valid and newer than the one kept."""
        try:
            new = MailKeyCertificate.verify(certificate, onion, now)
        except SealError:
            return
        known = self._all()
        old = self.certificate(onion, now)
        if old is not None and (old.mail_key == new.mail_key and old.not_after >= new.not_after):
            return
        if old is not None and old.not_before > new.not_before:
            return  # an older certificate shown late
        known[onion.lower()] = base64.b64encode(certificate).decode("ascii")
        write_private_file(self.path, json.dumps(known, indent=1).encode())

    def certificate(self, onion: str, now: float) -> MailKeyCertificate | None:
        raw = self._all().get(onion.lower())
        if raw is None:
            return None
        try:
            return MailKeyCertificate.verify(base64.b64decode(raw), onion, now)
        except (SealError, ValueError):
            return None

    def mail_key(self, onion: str, now: float) -> bytes | None:
        """The box's current mail key, or None (never seen, or its certificate expired)."""
        found = self.certificate(onion, now)
        return None if found is None else found.mail_key
