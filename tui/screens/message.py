"""One message: headers, how it arrived, attachments, body, and its ledger entry."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Header, Static

from onionmail.box.api import Arrival, ArrivalKind, MessageSummary, MessageView
from onionmail.message.compose import Draft, Original, forward_draft, reply_draft
from onionmail.message.reading import save_attachments
from onionmail.store.ledger import LedgerEntry
from tui.screens.base import BoxScreen
from tui.screens.compose import ComposeScreen
from tui.screens.prompt import LinePrompt
from tui.widgets.key_line import KeyLine
from tui.widgets.leak_matrix import LeakMatrixView
from tui.widgets.message_rows import petnamed
from tui.widgets.plain import PlainStatic

SHOWN_HEADERS = ("From", "To", "Cc", "Date", "Subject")
"""The short set; ``h`` shows every field as it was stored."""
ADDRESS_FIELDS = ("From", "To", "Cc")


def desktop_opener() -> str | None:
    """The desktop's handler for a file: ``open`` on macOS, else ``xdg-open`` where a
    desktop session has one (not on a server reached over ssh)."""
    if sys.platform == "darwin":
        return shutil.which("open")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    return shutil.which("xdg-open")


def encryption_words(arrival: Arrival) -> str:
    """How the message was protected end to end, from the box's own fields."""
    pgp = arrival.openpgp
    if arrival.encryption == "sealed":
        return "sealed envelope (encrypted end to end)"
    if pgp is not None and pgp.decrypted:
        words = f"OpenPGP, decrypted by the box; signature {pgp.signature or 'not checked'}"
        return words + (f" by {pgp.signer}" if pgp.signer else "")
    if arrival.encrypted:
        reason = f": {pgp.reason}" if pgp is not None and pgp.reason else ""
        return "OpenPGP, not decrypted by the box" + reason
    if arrival.kind == ArrivalKind.GATEWAY:
        return "not end-to-end encrypted (the gateway read it in clear)"
    return "not end-to-end encrypted"


class MessageScreen(BoxScreen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "answer('reply')", "Reply"),
        Binding("R,g", "answer('all')", "Reply all"),
        Binding("f", "answer('forward')", "Forward"),
        Binding("h", "toggle_headers", "All headers"),
        Binding("e", "edit_draft", "Edit draft"),
        Binding("s", "save_attachments", "Save"),
        Binding("o", "open_attachment", "Open"),
    ]
    DEFAULT_CSS = """
    MessageScreen #headers { padding: 0 1; background: $boost; height: auto; }
    MessageScreen #attachments { padding: 0 1; height: auto; color: $accent; }
    MessageScreen #body { padding: 1 1; height: auto; }
    MessageScreen #ledger { padding: 0 1; height: auto; }
    """

    def __init__(self, summary: MessageSummary) -> None:
        super().__init__()
        self.summary = summary
        self.view: MessageView | None = None
        self.all_headers = False
        self.petnames: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll():
            yield PlainStatic("loading…", id="headers")
            yield PlainStatic("", id="attachments")
            yield PlainStatic("", id="body")
            yield VerticalScroll(id="ledger")
        yield KeyLine()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exit_on_error=False)
    def load(self) -> None:
        def read() -> tuple[MessageView, list[LedgerEntry]]:
            view = self.api.open_message(self.summary.folder, self.summary.key)
            self.petnames = {c.address.lower(): c.petname for c in self.api.contacts()}
            return view, self.api.ledger_for(view.summary.message_id)

        self.fetch("open the message", read, lambda found: self._show(*found))

    def action_answer(self, how: str) -> None:
        """Reply, reply to all or forward: compose, filled in (quoted, threaded)."""
        if self.view is None:
            self.notify("the message is still loading", severity="warning")
            return
        original = Original(self.view.headers, self.view.body)
        if how == "forward":
            draft = forward_draft(original)
        else:
            draft = reply_draft(original, self.api.own_addresses(), everyone=how == "all")
        replied = (self.summary.folder, self.summary.key) if how != "forward" else None
        self._to_compose(draft, replied, None)

    def action_edit_draft(self) -> None:
        """A saved draft (in a ``.Drafts`` folder) back into compose, to go on with it."""
        if self.view is None or not self.summary.folder.endswith("/.Drafts"):
            self.notify("only a saved draft (Drafts folder) can be edited", severity="warning")
            return
        original = Original(self.view.headers, self.view.body)
        draft = Draft(
            tuple(original.addresses("To")),
            tuple(original.addresses("Cc")),
            original.get("Subject"),
            self.view.body,
            in_reply_to=original.get("In-Reply-To"),
            references=original.get("References"),
        )
        self._to_compose(draft, None, (self.summary.folder, self.summary.key))

    def _to_compose(
        self, draft: Draft, replied: tuple[str, str] | None, from_draft: tuple[str, str] | None
    ) -> None:
        self.app.pop_screen()
        self.app.switch_mode("compose")
        compose = self.app.screen
        if isinstance(compose, ComposeScreen):  # its fields exist once it is drawn
            self.app.call_after_refresh(compose.start, draft, replied, from_draft)

    def action_save_attachments(self) -> None:
        if self.view is None or not self.view.attachments:
            self.notify("this message has no attachments", severity="warning")
            return
        where = str(Path.home() / "Downloads")
        self.app.push_screen(LinePrompt("save the attachments in", where), self._save_in)

    def _save_in(self, directory: str | None) -> None:
        if directory:
            self.save(Path(directory).expanduser())

    @work(thread=True, exit_on_error=False, group="save")
    def save(self, directory: Path) -> None:
        def write() -> list[Path]:
            raw = (self.api.folder_path(self.summary.folder) / self.summary.key).read_bytes()
            return save_attachments(raw, directory)

        self.fetch(
            "save the attachments",
            write,
            lambda paths: self.notify(
                f"saved {len(paths)} file(s) in {directory}: " + ", ".join(p.name for p in paths)
            ),
        )

    def action_open_attachment(self) -> None:
        """``o``: an attachment opened by the desktop's handler (``xdg-open``), from a private
        directory that is erased when the TUI ends; with several, which one is asked."""
        if self.view is None or not self.view.attachments:
            self.notify("this message has no attachments", severity="warning")
            return
        if desktop_opener() is None:
            self.notify(
                "no desktop handler here (xdg-open); s saves the attachments", severity="warning"
            )
            return
        count = len(self.view.attachments)
        if count == 1:
            self.open_attachment(0)
            return
        names = ", ".join(f"{n} {a.filename}" for n, a in enumerate(self.view.attachments, 1))
        self.app.push_screen(LinePrompt(f"open which one? {names}", "1"), self._open_number)

    def _open_number(self, answer: str | None) -> None:
        count = len(self.view.attachments) if self.view is not None else 0
        if answer and answer.strip().isdigit() and 1 <= int(answer) <= count:
            self.open_attachment(int(answer) - 1)
        elif answer:
            self.notify(f"no attachment {answer!r}: 1 to {count}", severity="warning")

    @work(thread=True, exit_on_error=False, group="save")
    def open_attachment(self, index: int) -> None:
        def start() -> str:
            raw = (self.api.folder_path(self.summary.folder) / self.summary.key).read_bytes()
            path = save_attachments(raw, Path(tempfile.mkdtemp(prefix="onionmail-")))[index]
            atexit.register(shutil.rmtree, path.parent, True)
            opener = desktop_opener()
            if opener is None:
                raise FileNotFoundError("the desktop handler (xdg-open) is gone")
            handler = subprocess.Popen(  # its own session: nothing reaches the TUI's terminal
                [opener, str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            # reaped when it ends, however long the viewer stays open; the TUI never waits
            threading.Thread(target=handler.wait, daemon=True).start()
            return path.name

        self.fetch("open the attachment", start, lambda name: self.notify(f"opening {name}"))

    def action_toggle_headers(self) -> None:
        self.all_headers = not self.all_headers
        if self.view is not None:
            self.query_one("#headers", Static).update(self._headers(self.view))

    def _headers(self, view: MessageView) -> Text:
        """The short set with petnames, or (``h``) every field as stored; then how it came."""
        head = Text()
        for name, value in view.headers:
            if self.all_headers or name in SHOWN_HEADERS:
                if not self.all_headers and name in ADDRESS_FIELDS:
                    value = petnamed(value, self.petnames)
                head.append(f"{name}: ", "bold")
                head.append(f"{value}\n")
        a = view.summary.arrival
        head.append("arrived: ", "bold")
        head.append(a.kind, "green" if a.verified else "yellow")
        head.append(" · sender ")
        if a.verified:
            head.append("verified", "green")
        elif a.openpgp is not None and a.openpgp.signed_by_sender:
            head.append("signed (OpenPGP, by the key the box holds for it)", "green")
        else:
            head.append("not verified", "red")
        head.append(" · ")
        head.append(encryption_words(a), "green" if a.encrypted else "yellow")
        return head

    def _show(self, view: MessageView, ledger: list[LedgerEntry]) -> None:
        self.view = view
        self.query_one("#headers", Static).update(self._headers(view))
        if view.attachments:
            lines = [f"attachments ({len(view.attachments)}):"] + [
                f"  📎 {x.filename}  {x.content_type}  {x.size} bytes" for x in view.attachments
            ]
            self.query_one("#attachments", Static).update("\n".join(lines))
        else:
            self.query_one("#attachments", Static).update("no attachments")
        self.query_one("#body", Static).update(Text(view.body))
        box = self.query_one("#ledger", VerticalScroll)
        if not self.api.ledger_available:
            box.mount(PlainStatic("ledger: locked (start with --passphrase-file to read it)"))
        elif not ledger:
            box.mount(PlainStatic("ledger: no entry for this message"))
        for entry in ledger:
            box.mount(
                PlainStatic(
                    f"ledger: {entry.direction} {entry.day}, path {entry.path}, {entry.state}"
                    + (f", {entry.seal}" if entry.seal else "")
                )
            )
            box.mount(LeakMatrixView(entry.matrix))
