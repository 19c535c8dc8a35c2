"""The address book: petnames, the OpenPGP keys the box knows, and this box's gateway aliases.

Petnames live in ``BOXDIR/contacts.toml`` (written through ``BoxApi.add_contact``).
The keys (``keys/openpgp-peers.json``, learned by Autocrypt or imported by
hand) and the aliases (``[gateway]`` of ``onionmail.toml``) are shown, never
changed here. Everything is read and written in worker threads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Input, Static

from onionmail.box.api import BoxApi, Contact, GatewayRegistration, KnownKey
from tui.widgets.plain import PlainStatic, PlainTable


@dataclass(frozen=True)
class AddressBook:
    contacts: list[Contact]
    keys: list[KnownKey]
    aliases: list[GatewayRegistration]


def grouped(fingerprint: str) -> str:
    """A fingerprint in groups of four, as OpenPGP tools print it."""
    return " ".join(fingerprint[i : i + 4] for i in range(0, len(fingerprint), 4))


def key_id(fingerprint: str) -> str:
    """The long key id (last 16 hex digits): enough to tell keys apart at a glance."""
    return fingerprint[-16:] if fingerprint else "none"


def aliases_text(aliases: list[GatewayRegistration]) -> str:
    if not aliases:
        return "your gateway aliases: none (register with 'onionmail gateway register')"
    lines = ["your gateway aliases:"]
    for reg in aliases:
        role = "sends clearnet mail" if reg.sends_clearnet else "receives only"
        lines.append(f"  {reg.alias}  at {reg.gateway}  ({role})")
    return "\n".join(lines)


class ContactsScreen(ModalScreen[Contact | None]):
    """Pick a contact (enter), add one (petname + address, then Add or Enter), change one
    (``e``: its petname and address go into the fields; Add saves the change) or delete
    one (``x``)."""

    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("e", "edit", "Edit"),
        Binding("x,delete", "delete", "Delete"),
    ]
    DEFAULT_CSS = """
    ContactsScreen { align: center middle; }
    ContactsScreen > Vertical {
        width: 116; height: 30; border: round $primary; background: $surface;
    }
    ContactsScreen #contacts { height: 1fr; }
    ContactsScreen #keys { height: 1fr; }
    ContactsScreen #aliases { height: auto; padding: 0 1; }
    ContactsScreen .title { text-style: bold; padding: 0 1; }
    ContactsScreen Horizontal { height: 3; }
    ContactsScreen #petname { width: 20; }
    ContactsScreen #address { width: 1fr; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.book = AddressBook([], [], [])
        self.editing = ""
        """The petname of the contact being changed (``e``), else empty."""

    @property
    def contacts(self) -> list[Contact]:
        return self.book.contacts

    @property
    def api(self) -> BoxApi:
        api: BoxApi = getattr(self.app, "api")  # noqa: B009 - the app is OnionMailApp
        return api

    def compose(self) -> ComposeResult:
        with Vertical():
            yield PlainStatic(
                "address book — enter picks a contact · e edits it · x deletes it",
                classes="title",
            )
            yield PlainTable(id="contacts", cursor_type="row")
            with Horizontal():
                yield Input(placeholder="petname", id="petname")
                yield Input(placeholder="name@<56 chars>.onion", id="address")
                yield Button("Add", id="add")
            yield PlainStatic(
                "known OpenPGP keys (learned by Autocrypt or imported; read only)",
                classes="title",
            )
            yield PlainTable(id="keys", cursor_type="row")
            yield PlainStatic("", id="aliases")

    def on_mount(self) -> None:
        self.query_one("#contacts", DataTable).add_columns("petname", "address", "OpenPGP key")
        self.query_one("#keys", DataTable).add_columns(
            "address", "fingerprint", "source", "last seen"
        )
        self.query_one("#contacts", DataTable).focus()
        self.load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="address-book")
    def load(self) -> None:
        try:
            book = AddressBook(
                self.api.contacts(), self.api.known_keys(), self.api.gateway_registrations()
            )
        except Exception as exc:  # shown to the user, not swallowed
            self.app.call_from_thread(self.notify, str(exc), title="address book", severity="error")
            return
        self.app.call_from_thread(self._show, book)

    def _show(self, book: AddressBook) -> None:
        self.book = book
        table = self.query_one("#contacts", DataTable)
        table.clear()
        for c in book.contacts:
            table.add_row(c.petname, c.address, key_id(c.openpgp_key))
        keys = self.query_one("#keys", DataTable)
        keys.clear()
        for k in book.keys:
            seen = time.strftime("%Y-%m-%d", time.gmtime(k.last_seen))
            keys.add_row(k.address, grouped(k.fingerprint), k.source, seen)
        if not book.keys:
            keys.add_row("none yet", "", "", "")
        self.query_one("#aliases", Static).update(aliases_text(book.aliases))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "contacts" and 0 <= event.cursor_row < len(self.contacts):
            self.dismiss(self.contacts[event.cursor_row])

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self._save()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._save()

    def _save(self) -> None:
        petname = self.query_one("#petname", Input).value
        self.add(petname, self.query_one("#address", Input).value, self.editing)

    def _selected(self) -> Contact | None:
        table = self.query_one("#contacts", DataTable)
        if table.has_focus and 0 <= table.cursor_row < len(self.contacts):
            return self.contacts[table.cursor_row]
        return None

    def action_edit(self) -> None:
        contact = self._selected()
        if contact is None:
            return
        self.editing = contact.petname
        self.query_one("#petname", Input).value = contact.petname
        self.query_one("#address", Input).value = contact.address
        self.query_one("#petname", Input).focus()

    def action_delete(self) -> None:
        contact = self._selected()
        if contact is not None:
            self.delete(contact.petname)

    @work(thread=True, exit_on_error=False, group="address-book-add")
    def delete(self, petname: str) -> None:
        try:
            self.api.remove_contact(petname)
        except Exception as exc:  # shown to the user, not swallowed
            self.app.call_from_thread(
                self.notify, str(exc), title="contact not deleted", severity="error"
            )
            return
        self.app.call_from_thread(self.notify, f"{petname} deleted from the address book")
        self.app.call_from_thread(self.load)

    @work(thread=True, exit_on_error=False, group="address-book-add")
    def add(self, petname: str, address: str, replacing: str = "") -> None:
        try:
            self.api.add_contact(petname, address, replacing=replacing)
        except Exception as exc:  # shown to the user, not swallowed
            self.app.call_from_thread(
                self.notify, str(exc), title="contact not added", severity="error"
            )
            return
        self.app.call_from_thread(self._added)

    def _added(self) -> None:
        self.editing = ""
        self.query_one("#petname", Input).value = ""
        self.query_one("#address", Input).value = ""
        self.query_one("#contacts", DataTable).focus()
        self.load()

    def action_close(self) -> None:
        self.dismiss(None)
