"""Messages the user writes: a draft, and the drafts of a reply, a reply to all and a forward.

A reply is addressed as RFC 5322 section 3.6.3 says (``Reply-To`` if the
original has one, else ``From``), carries ``In-Reply-To`` (the original's
``Message-ID``) and ``References`` (the original's references, then its
``Message-ID``), so that every client threads it, and quotes the original's
text with ``> `` under an attribution line. A reply to all also copies the
original's ``To`` and ``Cc``, without the user's own addresses and without
repeats. A forward quotes the original's main fields and text inline
(attachments are not carried along).
"""

from __future__ import annotations

import email.message
import email.utils
import mimetypes
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from onionmail.core.errors import OnionMailError

QUOTE = "> "


@dataclass(frozen=True)
class Draft:
    """What compose is filled with; ``in_reply_to`` and ``references`` become fields."""

    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    subject: str = ""
    body: str = ""
    in_reply_to: str = ""
    references: str = ""
    attachments: tuple[str, ...] = ()
    """Paths of files to attach (read when the message is built)."""


def build_message(sender: str, draft: Draft) -> email.message.EmailMessage:
    """The message of ``draft`` from ``sender``, as the box's submission takes it."""
    msg = email.message.EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(draft.to)
    if draft.cc:
        msg["Cc"] = ", ".join(draft.cc)
    msg["Subject"] = draft.subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    if draft.in_reply_to:
        msg["In-Reply-To"] = draft.in_reply_to
    if draft.references:
        msg["References"] = draft.references
    msg.set_content(draft.body)
    for name in draft.attachments:
        path = Path(name).expanduser()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise AttachmentError(f"cannot attach {path}: {exc.strerror}") from None
        kind, _ = mimetypes.guess_type(path.name)
        maintype, _, subtype = (kind or "application/octet-stream").partition("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return msg


class AttachmentError(OnionMailError):
    """A file named for attachment cannot be read."""


class Original:
    """The fields of a message being answered, by name, case-insensitively (first wins)."""

    def __init__(self, headers: Sequence[tuple[str, str]], body: str) -> None:
        self._fields: dict[str, str] = {}
        for name, value in headers:
            self._fields.setdefault(name.lower(), " ".join(value.split()))
        self.body = body

    def get(self, name: str) -> str:
        return self._fields.get(name.lower(), "")

    def addresses(self, *names: str) -> list[str]:
        return [addr for _, addr in email.utils.getaddresses([self.get(n) for n in names]) if addr]


def _prefixed(prefix: str, subject: str) -> str:
    word = prefix.rstrip(":").lower()
    if subject.lower().startswith((f"{word}:", f"{word} :")):
        return subject
    return f"{prefix} {subject}".strip()


def _quoted(original: Original) -> str:
    who = original.get("From") or "someone"
    when = original.get("Date")
    attribution = f"On {when}, {who} wrote:" if when else f"{who} wrote:"
    lines = original.body.rstrip("\n").splitlines() or [""]
    quoted = "\n".join(QUOTE.rstrip() if not line else QUOTE + line for line in lines)
    return f"\n\n{attribution}\n{quoted}\n"


def _unique(addresses: Iterable[str], leave_out: Iterable[str]) -> tuple[str, ...]:
    seen = {a.lower() for a in leave_out}
    kept = []
    for address in addresses:
        if address.lower() not in seen:
            seen.add(address.lower())
            kept.append(address)
    return tuple(kept)


def reply_draft(original: Original, own: Iterable[str], *, everyone: bool = False) -> Draft:
    """The reply to ``original``; ``everyone``: to all its recipients but ``own`` too."""
    own = list(own)
    to = _unique(original.addresses("Reply-To") or original.addresses("From"), own)
    cc: tuple[str, ...] = ()
    if everyone:
        cc = _unique(original.addresses("To", "Cc"), [*own, *to])
    message_id = original.get("Message-ID")
    references = " ".join(filter(None, [original.get("References"), message_id]))
    return Draft(
        to=to,
        cc=cc,
        subject=_prefixed("Re:", original.get("Subject")),
        body=_quoted(original),
        in_reply_to=message_id,
        references=references,
    )


def forward_draft(original: Original) -> Draft:
    """The original's main fields and text, inline, to be addressed by the user."""
    fields = "\n".join(
        f"{name}: {original.get(name)}"
        for name in ("From", "Date", "Subject", "To", "Cc")
        if original.get(name)
    )
    body = f"\n\n---------- Forwarded message ----------\n{fields}\n\n{original.body.rstrip()}\n"
    return Draft(subject=_prefixed("Fwd:", original.get("Subject")), body=body)
