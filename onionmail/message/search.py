"""Finding mail by what a reader sees: From, To, Cc, Subject and the text.

:func:`matching` first looks for the words in the file's bytes as
they are (a message in 7-bit or 8-bit text, most mail: one read, no
parsing), and parses the message only when that misses and some part is
encoded (RFC 2047 words in a field, base64 or quoted-printable bodies), so
a search over a folder of 10,000 messages reads each file once and decodes
few (a vanished file matches nothing). Case is ignored (``str.casefold``).
Each file is read without a buffered file object: at 100,000 messages the
open and the read are most of the time.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import os
from collections.abc import Iterable
from pathlib import Path

FIELDS = ("From", "To", "Cc", "Subject")
_ENCODED = (b"=?", b"base64", b"quoted-printable")


def matching(root: Path, keys: Iterable[str], text: str) -> list[str]:
    """The ``keys`` (file names under ``root``) of the messages that show ``text``, in order."""
    needle = text.casefold()
    encoded = needle.encode("utf-8", "replace")
    base = os.fsencode(root)
    found = []
    for key in keys:
        raw = _read(os.path.join(base, os.fsencode(key)))
        if raw is not None and _shows(raw, needle, encoded):
            found.append(key)
    return found


def _read(path: bytes) -> bytes | None:
    try:
        with open(path, "rb", buffering=0) as handle:
            return handle.readall()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _shows(raw: bytes, needle: str, encoded: bytes) -> bool:
    lowered = raw.lower()
    if encoded in lowered:
        return True
    if not any(marker in lowered for marker in _ENCODED):
        return False
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    shown = [str(msg.get(name, "")) for name in FIELDS]
    shown.extend(_texts(msg))
    return any(needle in part.casefold() for part in shown)


def _texts(msg: email.message.Message) -> list[str]:
    found = []
    for part in msg.walk():
        if part.get_content_maintype() != "text" or part.get_content_disposition() == "attachment":
            continue
        try:
            found.append(str(part.get_content()))  # type: ignore[attr-defined]
        except (LookupError, ValueError):
            continue
    return found
