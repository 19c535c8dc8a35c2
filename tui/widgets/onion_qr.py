"""The onion address as a QR code drawn with half blocks, for a phone to scan off the terminal.

Two QR modules per character cell (upper half block, foreground = the upper
module, background = the lower one), in explicit black on white so the code
scans the same on dark and light terminal themes. The symbol is made by
segno (pure Python, no dependencies), the smallest that holds the text at
error correction level L (an onion address fits version 4: 33 modules).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

QUIET_ZONE = 2
"""Light modules around the symbol (the standard asks for 4; 2 scans and saves 4 rows)."""
DARK = "#000000"
LIGHT = "#ffffff"
_STYLES = {
    (top, bottom): Style(color=DARK if top else LIGHT, bgcolor=DARK if bottom else LIGHT)
    for top in (False, True)
    for bottom in (False, True)
}


def qr_modules(data: str, *, border: int = QUIET_ZONE) -> list[list[bool]]:
    """The symbol's modules, row by row, quiet zone included (True = dark)."""
    import segno  # when a code is drawn, not at the TUI's start

    code = segno.make(data, error="l", micro=False)
    return [[bool(m) for m in row] for row in code.matrix_iter(scale=1, border=border)]


def qr_text(data: str, *, border: int = QUIET_ZONE) -> Text:
    """``data`` as a QR code: one line of text per two rows of modules."""
    rows = qr_modules(data, border=border)
    if len(rows) % 2:
        rows.append([False] * len(rows[0]))
    text = Text(no_wrap=True, overflow="crop")
    for n in range(0, len(rows), 2):
        if n:
            text.append("\n")
        for top, bottom in zip(rows[n], rows[n + 1], strict=True):
            text.append("\u2580", _STYLES[(top, bottom)])
    return text
