"""What a message's own header fields claim: onion senders, and who checked it.

Both are a peer's word until the box has checked them, and both were read
too naively: ``alice@<onion>.`` (a trailing dot) or ``"alice@<onion>"
<mallory@example.org>`` (an address in a display name) slipped past the
relayed-sender check, and ``(comment) <onion>; ...`` past the check of an
``Authentication-Results`` authserv-id. These functions read them the way
a person or a mail client would see them.
"""

from __future__ import annotations

import re
from email.header import decode_header, make_header

from onionmail.message.rfc5322 import Message

SENDER_FIELDS = ("From", "Sender")
"""The fields a reader takes for who wrote a message."""

_ONION = re.compile(r"(?<![a-z2-7])[a-z2-7]{56}\.onion(?![a-z0-9-])", re.IGNORECASE)


def _text(value: bytes | str) -> str:
    """A field body as a reader sees it: encoded words (RFC 2047) decoded."""
    raw = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        return str(make_header(decode_header(raw)))
    except (ValueError, LookupError):  # a malformed encoded word: keep the raw text
        return raw


def onions_named(value: bytes | str) -> set[str]:
    """Every v3 onion address one field body shows its reader, lower case."""
    return {match.lower() for match in _ONION.findall(_text(value))}


def claimed_onions(message: Message, fields: tuple[str, ...] = SENDER_FIELDS) -> set[str]:
    """Every v3 onion address named anywhere in ``fields``, lower case.

    Anywhere: in the address, the display name or a comment, with or without
    a trailing dot, encoded or not; what matters is what the reader is shown.
    """
    found: set[str] = set()
    for name in fields:
        for value in message.get_all(name):
            found.update(onions_named(value))
    return found


def _without_comments(text: str) -> str:
    """``text`` with its RFC 5322 comments (nested, with quoted pairs) removed."""
    out: list[str] = []
    depth = 0
    escaped = False
    for char in text:
        if escaped:
            escaped = False
            if depth == 0:
                out.append(char)
            continue
        if char == "\\":
            escaped = True
            if depth == 0:
                out.append(char)
        elif char == "(":
            depth += 1
        elif char == ")" and depth:
            depth -= 1
        elif depth == 0:
            out.append(char)
    return "".join(out)


def authserv_id(value: bytes | str) -> str:
    """The authserv-id of an ``Authentication-Results`` field body (RFC 8601 2.2).

    Comments removed, lower case, without a trailing dot; an optional version
    after it is not part of it. Empty when there is none.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    head = _without_comments(text).split(";", 1)[0].split()
    return head[0].strip('"').lower().rstrip(".") if head else ""


def remove_results_claiming(message: Message, *authserv_ids: str) -> int:
    """Remove every ``Authentication-Results`` that claims one of ``authserv_ids``
    (RFC 8601 5: a receiver removes fields that claim its own ADMD); how many."""
    claimed = {a.lower().rstrip(".") for a in authserv_ids}
    kept = [
        (name, value)
        for name, value in message.fields
        if not (name.lower() == "authentication-results" and authserv_id(value) in claimed)
    ]
    removed = len(message.fields) - len(kept)
    message.fields = kept
    return removed
