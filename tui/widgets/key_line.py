"""The screen's keys on one line of text, where textual's ``Footer`` would be.

``Footer`` builds a widget per key and styles each twice as it mounts (its
``compact`` class set, then bound to the footer's), and builds them all
again whenever the focus moves: on the inbox's dozen keys about 0.1 s of
the start on a small machine. :class:`KeyLine` is one widget: the same
keys (the screen's active bindings that are shown), the same look, and a
click on a key presses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.style import Style
from rich.text import Text
from textual import events
from textual.widget import Widget

if TYPE_CHECKING:
    from textual.screen import Screen


class KeyLine(Widget):
    """The keys of the screen it is on, docked at its bottom."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"key-line--key", "key-line--description"}
    DEFAULT_CSS = """
    KeyLine {
        dock: bottom;
        height: 1;
        background: $footer-background;
        .key-line--key {
            color: $footer-key-foreground;
            background: $footer-key-background;
            text-style: bold;
        }
        .key-line--description {
            color: $footer-description-foreground;
            background: $footer-description-background;
        }
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._keys: list[tuple[int, int, str]] = []
        """Where each key's label is on the line: start, end and the key it presses."""

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[Any]) -> None:
        if self.is_attached and screen is self.screen:
            self.refresh()

    def render(self) -> Text:
        key_style = self.get_component_rich_style("key-line--key")
        description_style = self.get_component_rich_style("key-line--description")
        line = Text(no_wrap=True, overflow="crop")
        self._keys = []
        actions = set()
        active = self.screen.active_bindings
        for _node, binding, enabled, _tooltip in active.values():
            if not binding.show or binding.action in actions:
                continue  # one label an action, as Footer
            actions.add(binding.action)
            start = len(line)
            dim = Style(dim=not enabled)
            line.append(f" {self.app.get_key_display(binding)} ", key_style + dim)
            line.append(f"{binding.description} ", description_style + dim)
            if enabled:
                self._keys.append((start, len(line), binding.key.split(",")[0]))
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        if self.app.ENABLE_COMMAND_PALETTE and palette is not None:
            binding = palette.binding
            right = Text.assemble(
                ("▏", Style(dim=True)),
                (self.app.get_key_display(binding), key_style),
                (f" {binding.description} ", description_style),
            )
            room = max(0, self.size.width - len(right))
            line.truncate(room, overflow="crop", pad=True)  # the keys give way, as Footer's
            self._keys = [(a, b, key) for a, b, key in self._keys if b <= room]
            self._keys.append((room, room + len(right), binding.key))
            line.append_text(right)
        return line

    def on_click(self, event: events.Click) -> None:
        for start, end, key in self._keys:
            if start <= event.x < end:
                self.app.simulate_key(key)
                return
