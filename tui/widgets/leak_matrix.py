"""A leak matrix as a coloured table; the focused cell's reason shows underneath."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from threat_model import (
    COLUMNS,
    ITEM_DESCRIPTIONS,
    SYMBOLS,
    Item,
    LeakMatrix,
    Observer,
    Visibility,
    observers_for,
)
from tui.widgets.plain import PlainStatic

STYLES: dict[Visibility, str] = {
    Visibility.VISIBLE: "bold white on dark_red",
    Visibility.ENCRYPTED: "black on green",
    Visibility.PADDED: "black on yellow",
    Visibility.DELAYED: "black on yellow",
    Visibility.HIDDEN: "grey50",
}
"""visible = red, encrypted = green, padded/delayed = yellow, hidden = grey."""

LEGEND = Text.assemble(
    *(part for v in Visibility for part in ((f" {SYMBOLS[v]} ", STYLES[v]), (f" {v}  ", "")))
)


def symbol(visibility: Visibility) -> Text:
    return Text(f" {SYMBOLS[visibility]} ", style=STYLES[visibility], justify="center")


class LeakTable(DataTable[Text]):
    """Observers (rows) x items (columns) of one matrix, one coloured symbol per cell."""

    DEFAULT_CSS = """
    LeakTable { height: auto; max-height: 14; }
    """

    def __init__(self, matrix: LeakMatrix, *, id: str | None = None) -> None:
        super().__init__(cursor_type="cell", zebra_stripes=False, id=id)
        self.matrix = matrix
        self.observers: tuple[Observer, ...] = observers_for(matrix.path)

    def on_mount(self) -> None:
        self.add_column("observer", key="observer")
        for item in Item:
            self.add_column(COLUMNS[item], key=str(item))
        for observer in self.observers:
            cells = [symbol(self.matrix.cell(observer, item).visibility) for item in Item]
            self.add_row(Text(str(observer)), *cells, key=str(observer))

    def reason_at(self, row: int, column: int) -> str:
        if not 0 <= row < len(self.observers):
            return ""
        observer = self.observers[row]
        if column == 0:
            return f"{observer}: move right to see what it learns about each item"
        item = list(Item)[column - 1]
        cell = self.matrix.cell(observer, item)
        return f"{observer} / {ITEM_DESCRIPTIONS[item]}: {cell.visibility} \u2014 {cell.reason}"


class LeakMatrixView(Vertical):
    """A :class:`LeakTable`, the legend, and the reason of the focused cell."""

    DEFAULT_CSS = """
    LeakMatrixView { height: auto; }
    LeakMatrixView .reason { height: auto; min-height: 2; color: $text-muted; }
    """

    def __init__(self, matrix: LeakMatrix, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.matrix = matrix

    def compose(self) -> ComposeResult:
        yield LeakTable(self.matrix)
        yield PlainStatic(LEGEND, classes="legend")
        yield PlainStatic("focus a cell for its reason", classes="reason")

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        table = self.query_one(LeakTable)
        reason = table.reason_at(event.coordinate.row, event.coordinate.column)
        self.query_one(".reason", Static).update(reason)
