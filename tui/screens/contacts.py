"""The address book (``BOXDIR/contacts.toml``): petnames and onion addresses."""

from __future__ import annotations

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Static

from onionmail.box_api import BoxApi, Contact


class ContactsScreen(ModalScreen[Contact | None]):
    """Pick a contact (enter) or add one (petname + address, then Add)."""

    BINDINGS = [Binding("escape", "close", "Close")]
    DEFAULT_CSS = """
    ContactsScreen { align: center middle; }
    ContactsScreen > Vertical {
        width: 110; height: 24; border: round $primary; background: $surface;
    }
    ContactsScreen DataTable { height: 1fr; }
    ContactsScreen Horizontal { height: 3; }
    ContactsScreen #petname { width: 20; }
    ContactsScreen #address { width: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.contacts: list[Contact] = []

    @property
    def api(self) -> BoxApi:
        api: BoxApi = getattr(self.app, "api")  # noqa: B009 - the app is OnionMailApp
        return api

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                "address book — enter picks a contact; gateway aliases and OpenPGP "
                "keys are not supported by the box yet"
            )
            yield DataTable[str](id="contacts", cursor_type="row")
            with Horizontal():
                yield Input(placeholder="petname", id="petname")
                yield Input(placeholder="name@<56 chars>.onion", id="address")
                yield Button("Add", id="add")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("petname", "address", "gateway alias", "OpenPGP key")
        table.focus()
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        try:
            contacts = self.api.contacts()
        except Exception as exc:  # noqa: BLE001 - shown to the user, not swallowed
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self._show, contacts)

    def _show(self, contacts: list[Contact]) -> None:
        self.contacts = contacts
        table = self.query_one(DataTable)
        table.clear()
        for c in contacts:
            table.add_row(c.petname, c.address, c.gateway_alias or "none", c.openpgp_key or "none")

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.contacts):
            self.dismiss(self.contacts[event.cursor_row])

    def on_button_pressed(self, event: Button.Pressed) -> None:
        petname = self.query_one("#petname", Input).value
        address = self.query_one("#address", Input).value
        try:
            self.api.add_contact(petname, address)
        except Exception as exc:  # noqa: BLE001 - shown to the user, not swallowed
            self.notify(str(exc), title="contact not added", severity="error")
            return
        self.query_one("#petname", Input).value = ""
        self.query_one("#address", Input).value = ""
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
