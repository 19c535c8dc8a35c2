"""What-if: the paths a message to one recipient could take, side by side.

One column per path option, one row per item; a cell is the worst an
observer other than the two ends (the recipient's box, a seizure of one's
own box) can make of that item, with how many such observers see it in
clear. Focus a cell for which observers see what, and why. The column of
the path the box will take is marked ``*``; which paths are available
follows the box's routing (``[onion_mx]``, ``[gateway]``) and whether an
OpenPGP key is known, all decided by ``BoxApi.what_if``.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from onionmail.box.forecast import PathOption
from onionmail.box.policy import ENDPOINTS
from threat_model import ITEM_DESCRIPTIONS, SYMBOLS, Item, Visibility, observers_for
from tui.widgets.key_line import KeyLine
from tui.widgets.leak_matrix import LEGEND, STYLES
from tui.widgets.plain import PlainStatic, PlainTable

SEVERITY = [
    Visibility.VISIBLE,
    Visibility.PADDED,
    Visibility.DELAYED,
    Visibility.ENCRYPTED,
    Visibility.HIDDEN,
]


def worst(option: PathOption, item: Item) -> Text:
    seen = [
        option.matrix.cell(o, item).visibility
        for o in observers_for(option.matrix.path)
        if o not in ENDPOINTS
    ]
    if not seen:
        return Text(" . ", STYLES[Visibility.HIDDEN])
    top = min(seen, key=SEVERITY.index)
    count = seen.count(Visibility.VISIBLE)
    label = f" {SYMBOLS[top]}{count if top == Visibility.VISIBLE else ''} "
    return Text(label, STYLES[top], justify="center")


class WhatIfScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Back")]
    DEFAULT_CSS = """
    WhatIfScreen { background: $background; }
    WhatIfScreen #what-if { height: auto; max-height: 20; }
    WhatIfScreen .reason { height: auto; min-height: 3; padding: 0 1; color: $text-muted; }
    WhatIfScreen .title { padding: 0 1; text-style: bold; }
    """

    def __init__(self, recipient: str, options: list[PathOption]) -> None:
        super().__init__()
        self.recipient = recipient
        self.options = options

    def compose(self) -> ComposeResult:
        with Vertical():
            yield PlainStatic(f"what-if: the paths to {self.recipient}", classes="title")
            yield PlainTable(id="what-if", cursor_type="cell")
            yield PlainStatic(LEGEND)
            yield PlainStatic(
                "V3 = visible to 3 observers besides the two ends · * the path the box will take",
                classes="reason",
            )
            yield PlainStatic("focus a cell for who sees what", id="reason", classes="reason")
        yield KeyLine()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_column("item", key="item")
        for n, option in enumerate(self.options):
            table.add_column(option.label + (" *" if option.expected else ""), key=str(n))
        avail = [Text("available", "bold")]
        for option in self.options:
            if option.refusal:
                avail.append(Text("refused", "bold red"))
            else:
                avail.append(Text("yes", "green") if option.available else Text("no", "grey50"))
        table.add_row(*avail, key="available")
        for item in Item:
            table.add_row(Text(str(item)), *(worst(o, item) for o in self.options), key=str(item))
        table.focus()

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        row, column = event.coordinate.row, event.coordinate.column
        reason = self.query_one("#reason", Static)
        if column == 0:
            reason.update("move right to compare the paths")
            return
        option = self.options[column - 1]
        if row == 0:
            reason.update(
                f"{option.label} ({option.matrix.path}): {option.note}"
                + (f" — refused: {option.refusal}" if option.refusal else "")
            )
            return
        item = list(Item)[row - 1]
        lines = [f"{option.label} / {ITEM_DESCRIPTIONS[item]}:"]
        for observer in observers_for(option.matrix.path):
            if observer in ENDPOINTS:
                continue
            cell = option.matrix.cell(observer, item)
            lines.append(f"  {observer}: {cell.visibility} — {cell.reason}")
        reason.update("\n".join(lines))
