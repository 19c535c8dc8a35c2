"""What a reader gets from a message: its text (HTML made readable), its attachments saved.

An HTML-only message is shown as text converted by html2text (links kept as
``[text](url)``, images as their alt text, no remote content fetched: the
converter only reads the markup), never as markup source.
"""

from __future__ import annotations

import email.message
import email.parser
import email.policy
import os
from pathlib import Path

import html2text

UNDECODABLE = "(the body's charset or encoding cannot be decoded)"


def html_as_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # the screen wraps; hard line breaks would break quoting
    converter.ignore_images = False
    converter.images_to_alt = True
    return str(converter.handle(html)).strip("\n") + "\n"


def body_text(msg: email.message.EmailMessage) -> str:
    """The plain-text body, else the HTML body as text, else ``""``."""
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = str(part.get_content())
    except (LookupError, ValueError):
        return UNDECODABLE
    return html_as_text(content) if part.get_content_subtype() == "html" else content


def safe_file_name(name: str, fallback: str) -> str:
    """A sender's attachment name made safe to create in a directory of the user's: no
    directory part, no control characters, not hidden, not empty."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable()).strip().lstrip(".")
    return base or fallback


def save_attachments(raw: bytes, directory: Path) -> list[Path]:
    """Write the attachments of the message ``raw`` into ``directory`` (made if missing),
    0600, never over an existing file (`name (2).ext`); the paths written."""
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(msg, email.message.EmailMessage)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for n, part in enumerate(msg.iter_attachments(), start=1):
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        name = safe_file_name(part.get_filename() or "", f"attachment-{n}")
        target = directory / name
        stem, dot, ext = name.rpartition(".") if "." in name else (name, "", "")
        copy = 2
        while target.exists():
            target = directory / (f"{stem} ({copy}){dot}{ext}" if dot else f"{name} ({copy})")
            copy += 1
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        written.append(target)
    return written
