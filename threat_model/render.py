"""A leak matrix as plain text: one row per observer, one short column per item.

Only ASCII, so the table reads the same in a terminal, a log or a mail::

    observer            from to   s-ip r-ip subj body att  size time rel  fp   m-id
    sender-network      E    E    V    .    E    E    .    P    V    .    .    .

With ``reasons=True`` a list follows, one line per cell of every observer
on the path: ``observer / item: visibility — reason``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from threat_model.model import observers_for
from threat_model.vocabulary import (
    ITEM_DESCRIPTIONS,
    VISIBILITY_DESCRIPTIONS,
    Item,
    LeakMatrix,
    Observer,
    Visibility,
)

SYMBOLS: Mapping[Visibility, str] = MappingProxyType(
    {
        Visibility.VISIBLE: "V",
        Visibility.ENCRYPTED: "E",
        Visibility.PADDED: "P",
        Visibility.DELAYED: "D",
        Visibility.HIDDEN: ".",
    }
)

COLUMNS: Mapping[Item, str] = MappingProxyType(
    {
        Item.SENDER_ADDRESS: "from",
        Item.RECIPIENT_ADDRESS: "to",
        Item.SENDER_IP: "s-ip",
        Item.RECIPIENT_IP: "r-ip",
        Item.SUBJECT: "subj",
        Item.BODY: "body",
        Item.ATTACHMENT_NAMES: "att",
        Item.SIZE: "size",
        Item.SEND_TIME: "time",
        Item.RELATION: "rel",
        Item.CLIENT_FINGERPRINT: "fp",
        Item.MESSAGE_ID_HOST: "m-id",
    }
)

_WIDTH = 5
_FIRST = max(len(o) for o in Observer) + 2


def render_table(matrix: LeakMatrix, *, reasons: bool = False) -> str:
    """``matrix`` as a text table with a legend; with ``reasons``, every cell's reason too."""
    present = observers_for(matrix.path)
    lines = ["observer".ljust(_FIRST) + "".join(COLUMNS[i].ljust(_WIDTH) for i in Item)]
    for observer in present:
        symbols = (SYMBOLS[matrix.cell(observer, i).visibility].ljust(_WIDTH) for i in Item)
        lines.append(str(observer).ljust(_FIRST) + "".join(symbols))
    lines = [line.rstrip() for line in lines]
    lines.append("")
    lines.append(
        "legend: "
        + ", ".join(f"{SYMBOLS[v]} {v} ({VISIBILITY_DESCRIPTIONS[v]})" for v in Visibility)
    )
    lines.append("columns: " + ", ".join(f"{COLUMNS[i]} = {ITEM_DESCRIPTIONS[i]}" for i in Item))
    absent = [str(o) for o in Observer if o not in present]
    if absent:
        lines.append("not on this path: " + ", ".join(absent))
    if reasons:
        lines.append("")
        for observer in present:
            for item in Item:
                cell = matrix.cell(observer, item)
                lines.append(f"{observer} / {item}: {cell.visibility} \u2014 {cell.reason}")
    return "\n".join(lines)
