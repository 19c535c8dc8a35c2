"""Compose and send, with a leak card per recipient as soon as it is typed.

Recipients may be addresses or petnames from the address book. The cards
come from the box's own routing, policy gate and threat model
(``BoxApi.predict``, computed in a worker: it reads the config and the key
store), so a send the box would refuse is refused here, with the rule named,
before anything leaves.
"""

from __future__ import annotations

from pathlib import Path

from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.suggester import Suggester
from textual.widgets import Header, Input, Label, Static, TextArea

from onionmail.box.api import Contact
from onionmail.box.forecast import PathOption, Prediction
from onionmail.core.errors import OnionMailError
from onionmail.message.compose import Draft
from tui.screens.base import BoxScreen, typed_dir
from tui.screens.contacts import ContactsScreen
from tui.screens.what_if import WhatIfScreen
from tui.widgets.key_line import KeyLine
from tui.widgets.leak_card import InvalidRecipientCard, LeakCard
from tui.widgets.plain import PlainStatic


def split_recipients(text: str) -> list[str]:
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


class PathSuggester(Suggester):
    """Completes the last comma-separated path of the Attach field to an existing file or
    directory (the first in name order), as a shell's tab would."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        head, comma, last = value.rpartition(",")
        typed = last.lstrip()
        if not typed:
            return None
        path = Path(typed).expanduser()
        folder, stem = (path, "") if typed.endswith("/") else (path.parent, path.name)
        try:
            names = sorted(p.name for p in folder.iterdir() if p.name.startswith(stem))
        except OSError:
            return None
        names = [n for n in names if not n.startswith(".") or stem.startswith(".")]
        if not names or names[0] == stem:
            return None
        completed = typed[: len(typed) - len(stem)] + names[0]
        if (folder / names[0]).is_dir():
            completed += "/"
        return f"{head}{comma}{last[: len(last) - len(typed)]}{completed}"


class ComposeScreen(BoxScreen):
    BINDINGS = [
        Binding("ctrl+s", "send", "Send", priority=True),
        Binding("ctrl+w", "what_if", "What-if", priority=True),
        Binding("ctrl+b", "contacts", "Address book", priority=True),
        Binding("escape", "leave_fields", "Leave fields", show=False),
        Binding("ctrl+d", "save_draft", "Save draft", priority=True),
    ]
    DEFAULT_CSS = """
    ComposeScreen .field { height: 3; }
    ComposeScreen .field Label { width: 9; padding: 1 0 0 1; }
    ComposeScreen .field Input { width: 1fr; }
    ComposeScreen #body { height: 7; }
    ComposeScreen #cards { height: 1fr; }
    ComposeScreen #verdict { height: 1; padding: 0 1; }
    ComposeScreen #verdict.refused { color: $error; text-style: bold; }
    ComposeScreen.short .field { height: 1; margin-bottom: 0; }
    ComposeScreen.short .field Label { padding: 0 0 0 1; }
    ComposeScreen.short .field Input { height: 1; border: none; padding: 0 1; background: $boost; }
    ComposeScreen.short .field Input:focus { background: $primary 30%; }
    ComposeScreen.short #body { height: 4; }
    """
    SHORT = 30
    """Terminals lower than this get one-line fields, so the leak card keeps half the screen
    (at 80x24 too)."""

    def __init__(self) -> None:
        super().__init__()
        self.contacts: list[Contact] = []
        self.predictions: list[Prediction] = []
        self._shown: tuple[str, ...] = ()
        self._shown_attached = False
        self.box_running = True
        """Whether the box ran when the recipients were last checked (the verdict says so)."""
        self._last_field: Input | TextArea | None = None
        self.thread: dict[str, str] = {}
        """``in_reply_to`` and ``references`` of the reply being written, else empty."""
        self.replied: tuple[str, str] | None = None
        """(folder, key) of the message being answered: flagged replied once sent."""
        self.from_draft: tuple[str, str] | None = None
        """(folder, key) of the saved draft being edited: trashed once sent or saved anew."""

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical():
            for name, placeholder in (
                ("To", "address or petname, comma separated"),
                ("Cc", ""),
                ("Subject", ""),
                ("Attach", "files, comma separated (→ completes a path)"),
            ):
                with Horizontal(classes="field"):
                    yield Label(f"{name}:")
                    # back in a field, the cursor goes to its end: nothing typed is replaced
                    yield Input(
                        placeholder=placeholder,
                        id=name.lower(),
                        select_on_focus=False,
                        suggester=PathSuggester() if name == "Attach" else None,
                    )
            yield TextArea(id="body")
            yield PlainStatic("no recipient yet", id="verdict")
            yield VerticalScroll(id="cards")
        yield KeyLine()

    def on_resize(self) -> None:
        self.set_class(self.app.size.height < self.SHORT, "short")

    def on_mount(self) -> None:
        self.set_class(self.app.size.height < self.SHORT, "short")
        self.box_app.compose_screen = self  # quitting asks first when it holds a message
        self.query_one("#to", Input).focus()
        self.load_contacts()

    def has_content(self) -> bool:
        names = ("to", "cc", "subject", "attach")
        fields = [self.query_one(f"#{name}", Input).value for name in names]
        return any(fields) or bool(self.query_one("#body", TextArea).text.strip())

    def attachments(self) -> tuple[str, ...]:
        return tuple(
            p.strip() for p in self.query_one("#attach", Input).value.split(",") if p.strip()
        )

    def draft(self) -> Draft:
        """What compose holds now."""
        return Draft(
            tuple(split_recipients(self.query_one("#to", Input).value)),
            tuple(split_recipients(self.query_one("#cc", Input).value)),
            self.query_one("#subject", Input).value,
            self.query_one("#body", TextArea).text,
            attachments=self.attachments(),
            **self.thread,
        )

    def clear(self) -> None:
        for field in ("#to", "#cc", "#subject", "#attach"):
            self.query_one(field, Input).value = ""
        self.query_one("#body", TextArea).text = ""
        self.thread, self.replied, self.from_draft = {}, None, None

    def action_save_draft(self) -> None:
        if not self.has_content():
            self.notify("nothing to save", severity="warning")
            return
        try:
            folder = self.api.save_draft(self.draft())
        except (OSError, OnionMailError) as exc:
            self.box_app.show_error(exc, "save the draft")
            return
        self._drop_edited_draft()
        self.clear()
        self.notify(f"saved in {folder}: open it there and press e to go on")

    def _drop_edited_draft(self) -> None:
        """The draft being edited was saved again or sent: the old copy goes to the trash."""
        if self.from_draft is not None:
            folder, key = self.from_draft
            try:
                self.api.move(folder, key, f"{folder.partition('/')[0]}/.Trash")
            except (OSError, OnionMailError):
                pass  # moved or deleted meanwhile by another client
            self.from_draft = None

    def start(
        self,
        draft: Draft,
        replied: tuple[str, str] | None = None,
        from_draft: tuple[str, str] | None = None,
    ) -> None:
        """Fill compose with ``draft`` (a reply, a forward, a saved draft), unless it holds
        a message being written, which is never thrown away."""
        if self.has_content():
            self.notify(
                "compose holds an unsent message: send it or clear it first",
                severity="warning",
            )
            return
        self.query_one("#to", Input).value = ", ".join(draft.to)
        self.query_one("#cc", Input).value = ", ".join(draft.cc)
        self.query_one("#subject", Input).value = draft.subject
        body = self.query_one("#body", TextArea)
        body.text = draft.body
        self.thread = {"in_reply_to": draft.in_reply_to, "references": draft.references}
        self.thread = {k: v for k, v in self.thread.items() if v}
        self.replied = replied
        self.from_draft = from_draft
        if draft.to:
            body.focus()
            body.move_cursor((0, 0))
        else:
            self.query_one("#to", Input).focus()

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, (Input, TextArea)):
            self._last_field = event.widget

    def on_screen_resume(self) -> None:
        """Back in compose (``c``, or from the address book or what-if): typing goes into
        the field it went into before, never into the global keys (``l``, ``i``, ``u``)."""
        if not isinstance(self.focused, (Input, TextArea)):
            (self._last_field or self.query_one("#to", Input)).focus()

    @work(thread=True, exit_on_error=False)
    def load_contacts(self) -> None:
        self.fetch("read the address book", self.api.contacts, self._set_contacts)

    def _set_contacts(self, contacts: list[Contact]) -> None:
        self.contacts = contacts

    def resolve(self, text: str) -> str:
        for contact in self.contacts:
            if contact.petname == text:
                return contact.address
        return text

    def recipients(self) -> list[str]:
        fields = (self.query_one("#to", Input).value, self.query_one("#cc", Input).value)
        return [self.resolve(r) for text in fields for r in split_recipients(text)]

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id in ("to", "cc", "attach"):
            self.refresh_cards()

    def refresh_cards(self) -> None:
        """The leak cards for the recipients, for a message with or without attachments
        (their names are metadata too): predicted again when either changes."""
        recipients = tuple(self.recipients())
        attached = bool(self.attachments())
        if (recipients, attached) == (self._shown, self._shown_attached):
            return
        self.predict(recipients, attached)

    @work(thread=True, exclusive=True, exit_on_error=False, group="cards")
    def predict(self, recipients: tuple[str, ...], attached: bool = False) -> None:
        found: list[Prediction | str] = []
        self.box_running = self.api.running
        for rcpt in recipients:
            try:
                found.append(self.api.predict(rcpt, has_attachments=attached))
            except OnionMailError as exc:
                found.append(f"{rcpt}: {exc}")
            except Exception as exc:  # shown to the user, not swallowed
                self.fail(exc, f"predict the path to {rcpt}")
                return
        self.app.call_from_thread(self._show_cards, recipients, found, attached)

    def _show_cards(
        self, recipients: tuple[str, ...], found: list[Prediction | str], attached: bool = False
    ) -> None:
        if recipients != tuple(self.recipients()) or attached != bool(self.attachments()):
            return  # typed on meanwhile: a newer prediction is coming
        self._shown, self._shown_attached = recipients, attached
        cards = self.query_one("#cards", VerticalScroll)
        cards.remove_children()
        self.predictions = [p for p in found if isinstance(p, Prediction)]
        cards.mount_all(
            LeakCard(p) if isinstance(p, Prediction) else InvalidRecipientCard(p) for p in found
        )
        self._update_verdict()

    def refusal(self) -> str | None:
        """Why this message may not be sent, or None."""
        recipients = self.recipients()
        if not recipients:
            return "no recipient: fill in To"
        if tuple(recipients) != self._shown:
            return "still checking the recipients: try again in a moment"
        if len(self.predictions) != len(recipients):
            return "a recipient is not a valid address: correct it"
        for p in self.predictions:
            if p.refusal:
                return f"{p.recipient}: {p.refusal}"
        return None

    def _update_verdict(self) -> None:
        verdict = self.query_one("#verdict", Static)
        refusal = self.refusal()
        verdict.set_class(refusal is not None and bool(self.predictions), "refused")
        if refusal is None and not self.box_running:
            verdict.update(
                "the box is not running: start it (onionmail run --dir "
                f"{typed_dir(self.api.box_dir)}), then ctrl+s sends"
            )
        elif refusal is None:
            verdict.update("ready: ctrl+s sends through the box (scrubbed, padded, queued)")
        else:
            verdict.update(f"will not send — {refusal}")

    def action_leave_fields(self) -> None:
        self.set_focus(None)

    def action_send(self) -> None:
        refusal = self.refusal()
        if refusal is not None:
            self.notify(refusal, title="refused before sending", severity="error", timeout=12)
            return
        self.send(
            split_recipients(self.query_one("#to", Input).value),
            split_recipients(self.query_one("#cc", Input).value),
            self.query_one("#subject", Input).value,
            self.query_one("#body", TextArea).text,
        )

    @work(exclusive=True, exit_on_error=False, group="send")
    async def send(self, to: list[str], cc: list[str], subject: str, body: str) -> None:
        self.notify("sending to the box…", timeout=3)
        try:
            await self.api.send(
                [self.resolve(r) for r in to],
                [self.resolve(r) for r in cc],
                subject,
                body,
                password_file=self.box_app.password_file,
                attachments=self.attachments(),
                **self.thread,
            )
        except Exception as exc:  # shown to the user, not swallowed
            self.box_app.show_error(exc, "send")
            return
        self.notify("queued by the box: see the queue (u)", title="queued")
        if self.replied is not None:
            self.mark_replied(*self.replied)
        self._drop_edited_draft()
        self.clear()

    @work(thread=True, exit_on_error=False, group="replied")
    def mark_replied(self, folder: str, key: str) -> None:
        try:
            self.api.set_flags(folder, key, add="R")
        except (OSError, OnionMailError):
            pass  # moved or read elsewhere meanwhile: the flag is a courtesy

    def action_what_if(self) -> None:
        recipients = self.recipients()
        if not recipients:
            self.notify("enter a recipient first", severity="warning")
            return
        self.what_if(recipients[0])

    @work(thread=True, exclusive=True, exit_on_error=False, group="what-if")
    def what_if(self, recipient: str) -> None:
        self.fetch(
            "compare the paths",
            lambda: self.api.what_if(recipient),
            lambda options: self._show_what_if(recipient, options),
        )

    def _show_what_if(self, recipient: str, options: list[PathOption]) -> None:
        if self.app.screen is self:
            self.app.push_screen(WhatIfScreen(recipient, options))

    def action_contacts(self) -> None:
        def chosen(contact: Contact | None) -> None:
            self.load_contacts()
            if contact is not None:
                to = self.query_one("#to", Input)
                to.value = ", ".join([*split_recipients(to.value), contact.address])

        self.app.push_screen(ContactsScreen(), chosen)
