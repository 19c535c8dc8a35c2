"""The text a reader sees in a message: its plain-text body, or its HTML made readable.

An HTML-only message is shown as text converted by html2text (links kept as
``[text](url)``, images as their alt text, no remote content fetched: the
converter only reads the markup), never as markup source.
"""

from __future__ import annotations

import email.message

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
