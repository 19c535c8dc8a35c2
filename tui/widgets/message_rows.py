"""An inbox row's cells: how a message arrived, whether it is read, flagged, and where it
stands in its thread."""

from __future__ import annotations

import email.utils

from rich.text import Text

from onionmail.box.stored_mail import Arrival, ArrivalKind, MessageSummary
from onionmail.message.threads import Line

MARKS = {
    ArrivalKind.SEALED: ("S", "bold green"),
    ArrivalKind.PLAIN: ("P", "bold yellow"),
    ArrivalKind.GATEWAY: ("G", "bold magenta"),
    ArrivalKind.UNKNOWN: ("?", "grey50"),
}


ENCRYPTION = {
    "sealed": ("sealed", "green"),
    "sealed-v1": ("sealed-v1", "yellow"),
    "OpenPGP": ("OpenPGP", "green"),
    "OpenPGP?": ("OpenPGP?", "yellow"),
    "none": ("clear", "yellow"),
}
"""The enc column: a sealed envelope (an older box's, without forward secrecy: sealed-v1),
OpenPGP the box decrypted (or could not), or none."""


NARROW = 100
"""Terminals narrower than this get the inbox's narrow layout (80x24 is first-class)."""
COLUMNS: dict[str, tuple[str, int | None]] = {
    "mark": ("", 1),
    "enc": ("enc", 9),
    "verified": ("sender", 10),
    "date": ("date", 16),
    "from": ("from", 30),
    "subject": ("subject", None),
}
NARROW_COLUMNS = ("mark", "from", "subject")


def folder_list_width(width: int) -> int:
    """The inbox's folder list at ``width``: narrower below :data:`NARROW`."""
    return 16 if width < NARROW else 22


def column_widths(width: int) -> dict[str, int]:
    """The inbox's columns at ``width``: all, or below :data:`NARROW` the mark, the sender
    and the subject (the message screen shows the rest). Every width is fixed, the
    subject's to what is left, the sender's narrower for it down to 16 (120 columns: 16
    and 28): a table of 10,000 rows measures no cell."""
    narrow = width < NARROW
    widths = {key: COLUMNS[key][1] or 0 for key in (NARROW_COLUMNS if narrow else COLUMNS)}
    if narrow:
        widths["from"] = 14
    cells = sum(w + 2 for w in widths.values())
    used = folder_list_width(width) + 2 + cells + 2 + 2  # borders, scrollbar
    widths["subject"] = width - used
    if not narrow:  # the sender gives way first
        give = max(0, min(widths["from"] - 16, 40 - widths["subject"]))
        widths["from"] -= give
        widths["subject"] += give
    widths["subject"] = max(20, widths["subject"])
    return widths


def status_line(folder: str, done: int, total: int, threaded: bool = True) -> str:
    """The line under the inbox's table: the folder, how much of it is read, the marks."""
    more = "" if done >= total else f" (reading headers {done}/{total})"
    return (
        f"{folder}: {total} message(s), {'threads, ' if threaded else ''}newest first{more}  ·  "
        "S sealed onion · P plain onion peer · G via gateway · ? unknown"
    )


def petnamed(value: str, petnames: dict[str, str]) -> str:
    """An address field with each address of the address book shown as its petname."""
    if not petnames:
        return value  # no address book: nothing to parse
    shown = []
    for name, address in email.utils.getaddresses([value]):
        petname = petnames.get(address.lower())
        shown.append(petname if petname else (f"{name} <{address}>" if name else address))
    return ", ".join(shown) if shown else value


def sender_cell(arrival: Arrival) -> Text:
    if arrival.verified:
        return Text("verified", "green")
    pgp = arrival.openpgp
    if pgp is not None and pgp.signed_by_sender:
        return Text("signed", "green")
    if pgp is not None and pgp.signature == "bad":
        return Text("bad sig", "bold red")
    return Text("unverified", "grey50")


def row_key(key: str) -> str:
    """A message's row in the table: its file name without ``new/``, ``cur/`` and flags,
    which stays the same when a flag changes."""
    return key.rsplit("/", 1)[-1].partition(":2,")[0]


def row_cells(
    s: MessageSummary,
    petnames: dict[str, str] | None = None,
    line: Line | None = None,
    unread: bool | None = None,
) -> tuple[Text, ...]:
    """A message's row: unread in bold, flagged with a mark before the subject, the sender
    by its petname when the address book has it; in a thread, a reply indented under
    what it answers, and a folded thread with the number of messages it hides (bold when
    one of them is unread: ``unread``)."""
    style = "bold" if (s.unread if unread is None else unread) else ""
    flag = Text("⚑ ", "bold red") if "F" in s.flags else Text("")
    depth = min(line.depth, 6) if line is not None else 0
    tree = Text("  " * (depth - 1) + "└ ", "grey50") if depth else Text("")
    more = Text(f"  (+{line.hidden})", "cyan") if line is not None and line.hidden else Text("")
    return (
        *arrival_cells(s.arrival),
        Text(s.date, style),
        Text(petnamed(s.sender, petnames or {}), style),
        Text.assemble(tree, flag, Text(s.subject, style), more),
    )


def arrival_cells(arrival: Arrival) -> tuple[Text, Text, Text]:
    mark, style = MARKS[arrival.kind]
    label, enc_style = ENCRYPTION[arrival.encryption]
    return Text(mark, style), Text(label, enc_style), sender_cell(arrival)
