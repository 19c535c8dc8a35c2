"""Widgets that show text as text: what came from a message, a peer or a file is never markup.

Textual parses a plain ``str`` as content markup in a ``Static`` and in a
``DataTable`` cell, so a Subject of ``[/]`` raised ``MarkupError`` on every
listing of the inbox and ``[link=...]`` rendered as a link. Every screen
builds its text widgets and tables from these two instead; styled text is
passed as ``rich.text.Text``, which is never parsed.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.visual import VisualType
from textual.widgets import DataTable, Static
from textual.widgets.data_table import CellType, RowKey


class PlainStatic(Static):
    """A ``Static`` whose strings are shown as they are."""

    def __init__(self, content: VisualType = "", **options: Any) -> None:
        super().__init__(content, markup=False, **options)


def _cell(value: Any) -> Any:
    return Text(value) if isinstance(value, str) else value


class PlainTable(DataTable[Any]):
    """A ``DataTable`` whose string cells are shown as they are."""

    def add_row(
        self,
        *cells: CellType,
        height: int | None = 1,
        key: str | None = None,
        label: Any = None,
    ) -> RowKey:
        return super().add_row(*map(_cell, cells), height=height, key=key, label=_cell(label))
