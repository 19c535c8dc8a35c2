"""Status: tor bootstrap, the onion address (``y`` copies it, ``o`` shows it as a QR code),
the inbound onion, the gateway registrations, the devices (``a`` adds one and shows its
QR code once), timing and padding."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Header, ProgressBar, Static

from onionmail.box.api import BoxStatus, GatewayRegistration
from tui.screens.base import BoxScreen, typed_dir
from tui.screens.device_sheet import DeviceSheetScreen
from tui.screens.onion_qr import OnionQrScreen
from tui.screens.prompt import LinePrompt
from tui.widgets.key_line import KeyLine
from tui.widgets.plain import PlainStatic

if TYPE_CHECKING:
    from onionmail.devices.manage import DeviceSheet

REFRESH = 1.0
"""Seconds between re-reads of the box's status."""


def status_table(s: BoxStatus, box_dir: str = "BOXDIR") -> Table:
    """``box_dir``: the directory as the user would type it, in the hint to start the box."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    state = Text(s.state, "green" if s.running else "red")
    if not s.running:
        state.append(f"  (start it: onionmail run --dir {box_dir})", "grey50")
    table.add_row("box", state)
    table.add_row(
        "onion address",
        Text.assemble((s.onion, "bold cyan"), ("  y copies · o QR code", "grey50")),
    )
    table.add_row("addresses", "\n".join(s.addresses))
    table.add_row("submission", s.submission or "-")
    tor = f"{s.bootstrap_percent}% {s.bootstrap_summary}".strip() if s.running else "-"
    table.add_row("tor bootstrap", tor)
    if s.running:
        inbound = Text("published", "green") if s.published else Text("not published", "red")
    else:
        inbound = Text("offline", "red")
    if s.tor_restarts:
        inbound.append(f"  ({s.tor_restarts} tor restart(s))")
    table.add_row("inbound onion", inbound)
    table.add_row("gateways", gateways_text(s.gateways))
    table.add_row("devices", devices_text(s))
    table.add_row("timing", s.timing)
    table.add_row("padding", s.padding)
    table.add_row("policy rules", ", ".join(s.policy_rules) or "none")
    table.add_row("queue", f"{s.queue_length} message(s)")
    return table


def gateways_text(gateways: tuple[GatewayRegistration, ...]) -> Text:
    if not gateways:
        return Text("none registered (onionmail gateway register)", "grey50")
    text = Text()
    for n, reg in enumerate(gateways):
        if n:
            text.append("\n")
        text.append(reg.alias, "bold")
        text.append("  sends clearnet mail" if reg.sends_clearnet else "  receives only")
        text.append(f"\nat {reg.gateway}\n")
        if reg.restart_needed:
            text.append("configured after the box started: restart the box to use it", "red")
        else:
            text.append("registered, or pending the operator's approval", "grey50")
    return text


def devices_text(s: BoxStatus) -> Text:
    if not s.devices:
        text = Text("none: a adds a phone or laptop (IMAP over an onion)", "grey50")
    else:
        text = Text(", ".join(s.devices), "bold")
        text.append("  a adds one · onionmail device revoke removes one", "grey50")
    if s.devices_problem:
        text.append(f"\n{s.devices_problem}", "red")
    return text


class StatusScreen(BoxScreen):
    BINDINGS = [
        Binding("y", "copy_onion", "Copy onion"),
        Binding("o", "show_qr", "QR code"),
        Binding("a", "add_device", "Add device"),
    ]
    DEFAULT_CSS = """
    StatusScreen #status { padding: 1 2; height: auto; }
    StatusScreen ProgressBar { padding: 0 2; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.current: BoxStatus | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield ProgressBar(total=100, show_eta=False, id="bootstrap")
        yield PlainStatic("reading the box's status…", id="status")
        yield KeyLine()

    def on_mount(self) -> None:
        self.load()
        self.set_interval(REFRESH, self.load)

    @work(thread=True, exclusive=True, exit_on_error=False, group="status")
    def load(self) -> None:
        self.fetch("read the box's status", self.api.status, self._show)

    def _show(self, status: BoxStatus) -> None:
        if status == self.current:
            return
        self.current = status
        self.query_one(ProgressBar).update(progress=status.bootstrap_percent)
        self.query_one("#status", Static).update(status_table(status, typed_dir(self.api.box_dir)))

    def action_copy_onion(self) -> None:
        if self.current is not None:
            self.app.copy_to_clipboard(self.current.onion)
            self.notify("onion address copied to the clipboard (OSC 52)")

    def action_show_qr(self) -> None:
        if self.current is not None and self.current.onion:
            self.app.push_screen(OnionQrScreen(self.current.onion))

    def action_add_device(self) -> None:
        self.app.push_screen(LinePrompt("name of the new device, e.g. phone"), self._add_device)

    def _add_device(self, name: str | None) -> None:
        if name:
            self.add_device(name)

    @work(thread=True, exit_on_error=False, group="devices")
    def add_device(self, name: str) -> None:
        self.fetch(f"add the device {name}", lambda: self.api.devices.add(name), self._sheet)

    def _sheet(self, sheet: DeviceSheet) -> None:
        self.app.push_screen(DeviceSheetScreen(sheet))
        self.load()
