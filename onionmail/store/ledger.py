"""The leak ledger: for each sent and received message, the path it took and who saw what.

One JSON file per message and destination in ``BOXDIR/ledger`` (0600 in a
0700 directory), holding the direction, the path, the day, and the leak
matrix of :mod:`threat_model` for that path. It never holds the sensitive
values themselves: no address, no subject, no time finer than the day.
Message-IDs are stored as keyed hashes (BLAKE2b keyed from the identity
seed, domain-separated), so ``onionmail leaks MESSAGE-ID`` can find an entry
while someone who seizes the box cannot test a guessed Message-ID without
the key, which a passphrase protects.

A sent message is recorded at submission with the path it is expected to
take, under the Message-ID the box gave it; the delivery agent rewrites the
entry with the path it really took. That first entry is a forecast and is
not fsynced (a crash may lose it; the message is not sent yet); every
entry of what was sent or received is durable before the call returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.hash

from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.seal.identity import derive_subkey
from threat_model import LeakMatrix, MailPath


def ledger_key(seed: bytes) -> bytes:
    return derive_subkey(seed, b"om-ledger-v1")


@dataclass(frozen=True)
class LedgerEntry:
    """One message to (or from) one destination, as the ledger keeps it."""

    name: str
    direction: str
    path: MailPath
    day: str
    state: str
    matrix: LeakMatrix
    seal: str = ""
    """Which seal carried it on the Tor leg: ``v2`` (forward secret), ``sealed-v1``
    (static keys: an older box), empty when unsealed or not yet sent."""


class Ledger:
    """All methods block (call them through ``asyncio.to_thread`` from the box)."""

    def __init__(self, directory: Path, key: bytes) -> None:
        self.directory = directory
        self._key = key
        self._made = False
        """Whether the directory was made (once per run, not at every record)."""

    def _hash(self, text: str) -> str:
        digest = nacl.hash.blake2b(
            text.strip().strip("<>").encode("utf-8", "surrogateescape"),
            key=self._key,
            digest_size=16,
            encoder=nacl.encoding.HexEncoder,
        )
        return digest.decode("ascii")

    def record(
        self,
        *,
        message_ids: Iterable[str],
        destination: str,
        direction: str,
        matrix: LeakMatrix,
        state: str,
        now: float | None = None,
        seal: str = "",
        durable: bool = True,
    ) -> str:
        """Write (or update) the entry of a message for one destination; returns its name.
        ``durable=False`` for a forecast (the module's docstring)."""
        hashes = sorted({self._hash(m) for m in message_ids if m})
        name = self._hash(f"{hashes[0] if hashes else ''}|{destination}")
        if not self._made:
            ensure_private_dir(self.directory)
            self._made = True
        path = self.directory / f"{name}.json"
        known: list[str] = []
        try:
            known = json.loads(path.read_bytes()).get("ids", [])
        except FileNotFoundError:
            pass  # the message's first entry for this destination
        day = time.strftime("%Y-%m-%d", time.gmtime(time.time() if now is None else now))
        data: dict[str, Any] = {
            "ids": sorted(set(known) | set(hashes)),
            "destination_hash": self._hash(destination),
            "direction": direction,
            "day": day,
            "state": state,
            "seal": seal,
        }
        # Compact: with ``indent`` json falls back from its C encoder to the pure-Python
        # one. The matrix, most of the entry, is encoded once per matrix (the box's come
        # from a cache: one per path and kind of message), not at every entry.
        head = json.dumps(data, separators=(",", ":"))
        encoded = f'{head[:-1]},"matrix":{matrix.json_text}}}'.encode()
        try:
            write_private_file(path, encoded, durable=durable)
        except FileNotFoundError:  # the directory was removed while the box ran
            ensure_private_dir(self.directory)
            write_private_file(path, encoded, durable=durable)
        return name

    def find(self, message_id: str) -> list[LedgerEntry]:
        return [self._entry(name, raw) for name, raw in self._matching(message_id)]

    def entries(self) -> list[LedgerEntry]:
        return [self._entry(name, raw) for name, raw in self._all()]

    def _matching(self, message_id: str) -> list[tuple[str, dict[str, Any]]]:
        wanted = self._hash(message_id)
        return [(name, raw) for name, raw in self._all() if wanted in raw.get("ids", [])]

    def _all(self) -> list[tuple[str, dict[str, Any]]]:
        if not self.directory.is_dir():
            return []
        found = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                found.append((path.stem, json.loads(path.read_bytes())))
            except (OSError, ValueError):
                continue  # a damaged entry hides nothing else
        return found

    @staticmethod
    def _entry(name: str, raw: dict[str, Any]) -> LedgerEntry:
        matrix = LeakMatrix.from_json(raw["matrix"])
        return LedgerEntry(
            name,
            raw["direction"],
            matrix.path,
            raw["day"],
            raw["state"],
            matrix,
            raw.get("seal", ""),
        )
