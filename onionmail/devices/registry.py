"""The owner's devices: which keys may reach the device onion, which passwords log in.

A device is a phone or a laptop of the box's owner. It reads mail over IMAP
and sends over submission, both through the box's *device onion*: a second
onion service, with its own key, published with v3 client authorization, so
tor gives its descriptor only to a holder of an authorized x25519 key.
Knowing the mail address tells nothing about it (the key is derived from the
seed under its own label, :func:`device_onion_identity`).

Each device has a name (the owner's label), the local part it reads, the
public half of its client-authorization key (the private half is shown
once, at ``device add``, and never stored) and the hash of its password
(also shown once). The hash is libsodium's argon2id string, which Dovecot
reads as its ``ARGON2ID`` scheme and the submission server checks with
pynacl: one stored secret, two servers. The password is 160 random bits, so
the hash's cost only has to make each guess dear, not stretch a weak secret;
8 MiB and 2 passes keep a login about 10 ms.

The list lives in ``BOXDIR/devices/devices.json`` (0600), rewritten whole
and atomically on each change. A revoked device is removed from it: nothing
about it is kept.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import nacl.exceptions
import nacl.public
import nacl.pwhash

from onionmail.core.errors import ConfigError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.seal.identity import Identity, derive_subkey

DEVICE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
HASH_OPSLIMIT = 2
HASH_MEMLIMIT = 8 * 1024 * 1024
FILE_NAME = "devices.json"


def device_onion_identity(seed: bytes) -> Identity:
    """The device onion's key, derived from the box's seed under its own label.

    A backup of the identity key restores it; the mail address does not reveal it.
    """
    return Identity(derive_subkey(seed, b"om-device-onion"))


def tor_base32(key: bytes) -> str:
    """A key as tor writes it in client-authorization lines: base32, no padding."""
    return base64.b32encode(key).decode("ascii").rstrip("=")


@dataclass(frozen=True)
class Device:
    """One authorized device, as stored (no secret in it)."""

    name: str
    local_part: str
    client_key: str
    """The x25519 public key tor authorizes (``ClientAuthV3``), base32 without padding."""
    password_hash: str
    """argon2id in libsodium's string form (``$argon2id$v=19$m=...``)."""
    created: int


@dataclass(frozen=True)
class NewDevice:
    """What ``add`` returns: the device and its two secrets, shown once and never stored."""

    device: Device
    client_private_key: str
    """base32 without padding, as ``<onion>:descriptor:x25519:<key>`` wants it."""
    password: str

    def auth_line(self, device_onion: str) -> str:
        """The line for tor's ``ClientOnionAuthDir`` (a ``.auth_private`` file), Orbot, or
        Tor Browser's prompt (which wants only the key)."""
        host = device_onion.removesuffix(".onion")
        return f"{host}:descriptor:x25519:{self.client_private_key}"


def hash_password(password: str) -> str:
    return nacl.pwhash.argon2id.str(
        password.encode(), opslimit=HASH_OPSLIMIT, memlimit=HASH_MEMLIMIT
    ).decode("ascii")


def check_password(password_hash: str, password: bytes) -> bool:
    try:
        return bool(nacl.pwhash.verify(password_hash.encode("ascii"), password))
    except (nacl.exceptions.InvalidkeyError, ValueError, nacl.exceptions.CryptoError):
        return False


class DeviceRegistry:
    """The devices of one box, read from and written to ``BOXDIR/devices/devices.json``."""

    def __init__(self, box_dir: Path) -> None:
        self.directory = box_dir / "devices"
        self.path = self.directory / FILE_NAME

    def devices(self) -> list[Device]:
        """The authorized devices, by name; :class:`ConfigError` naming the file if damaged."""
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: unreadable device list: {exc}") from None
        try:
            found = [Device(**entry) for entry in raw["devices"]]
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"{self.path}: damaged device list ({exc})") from None
        return sorted(found, key=lambda d: d.name)

    def get(self, name: str) -> Device | None:
        return next((d for d in self.devices() if d.name == name), None)

    def add(self, name: str, local_part: str) -> NewDevice:
        """Authorize a new device: fresh client key and password, returned once."""
        if not DEVICE_NAME.fullmatch(name):
            raise ConfigError(
                f"device name {name!r}: use 1 to 32 of a-z, 0-9 and '-', starting with a "
                "letter or digit (for example 'phone' or 'laptop-2')"
            )
        known = self.devices()
        if any(d.name == name for d in known):
            raise ConfigError(f"a device named {name!r} exists; revoke it first or pick a name")
        private = nacl.public.PrivateKey.generate()
        password = base64.b32encode(secrets.token_bytes(20)).decode("ascii").lower()
        device = Device(
            name=name,
            local_part=local_part,
            client_key=tor_base32(bytes(private.public_key)),
            password_hash=hash_password(password),
            created=int(time.time()),
        )
        self._write([*known, device])
        return NewDevice(device, tor_base32(bytes(private)), password)

    def revoke(self, name: str) -> Device:
        """Remove a device (its key and password stop working once the box reloads)."""
        known = self.devices()
        device = next((d for d in known if d.name == name), None)
        if device is None:
            names = ", ".join(d.name for d in known) or "none"
            raise ConfigError(f"no device named {name!r} (devices: {names})")
        self._write([d for d in known if d.name != name])
        return device

    def _write(self, devices: list[Device]) -> None:
        ensure_private_dir(self.directory)
        data = {"devices": [asdict(d) for d in sorted(devices, key=lambda d: d.name)]}
        write_private_file(self.path, json.dumps(data, indent=1).encode())
