"""The address book: ``BOXDIR/contacts.toml``, petname = address, 0600.

One small TOML table rewritten whole (atomically) on every change; read by
the TUI and the box's API. Petnames are the user's own names for people, so
they are free text except for quotes and line breaks.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from onionmail.core.errors import ConfigError
from onionmail.core.files import write_private_file
from onionmail.core.mail_address import parse_mail_address

FILE_NAME = "contacts.toml"


class AddressBook:
    """Petnames and addresses, sorted by petname."""

    def __init__(self, box_dir: Path) -> None:
        self.path = box_dir / FILE_NAME

    def entries(self) -> dict[str, str]:
        """Petname -> address; :class:`ConfigError` naming the file if it is damaged."""
        try:
            raw = tomllib.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.path}: unreadable address book: {exc}") from None
        table = raw.get("contacts", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{self.path}: [contacts] must be a table of petname = address")
        for petname, address in table.items():
            if not isinstance(address, str):
                raise ConfigError(f"{self.path}: contacts.{petname}: expected an address string")
        return dict(sorted(table.items()))

    def put(self, petname: str, address: str, *, replacing: str = "") -> tuple[str, str]:
        """Add or change an entry (``replacing``: its old petname, to rename it); the entry
        as stored (the address in its canonical form)."""
        petname = petname.strip()
        if not petname or any(c in petname for c in '"\\\n'):
            raise ConfigError("a petname needs at least one character and no quotes")
        parsed = str(parse_mail_address(address))
        known = self.entries()
        known.pop(replacing, None)
        known[petname] = parsed
        self._write(known)
        return petname, parsed

    def remove(self, petname: str) -> bool:
        known = self.entries()
        if known.pop(petname, None) is None:
            return False
        self._write(known)
        return True

    def _write(self, known: dict[str, str]) -> None:
        lines = ["# onionmail address book: petname = address", "[contacts]"]
        lines += [f'"{name}" = "{addr}"' for name, addr in sorted(known.items())]
        write_private_file(self.path, ("\n".join(lines) + "\n").encode())
