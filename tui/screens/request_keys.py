"""The Requests folder's keys: ``A`` accepts the sender, ``B`` blocks it, ``I`` ignores.

A stranger's mail lands in ``<local part>/.Requests`` (onionmail.admission).
Accepting makes the sender a contact and moves all its requests to INBOX;
blocking refuses its later mail and deletes its requests; ignoring deletes
the one message. The keys show in the footer only in a Requests folder.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.binding import Binding

from onionmail.admission import REQUESTS
from onionmail.core.errors import OnionMailError
from tui.screens.base import BoxScreen

if TYPE_CHECKING:
    from onionmail.admission.requests import Request

ACTIONS = ("accept_sender", "block_sender", "ignore_request")


class RequestKeys(BoxScreen):
    """Mixed into the inbox, which provides the folder, its summaries and the cursor."""

    BINDINGS = [
        Binding("A", "accept_sender", "Accept sender"),
        Binding("B", "block_sender", "Block sender"),
        Binding("I", "ignore_request", "Ignore"),
    ]
    folder: str
    summaries: dict[str, Any]

    def _selected(self) -> str | None:  # pragma: no cover - the inbox's
        raise NotImplementedError

    def open_folder(self, folder: str) -> None:  # pragma: no cover - the inbox's
        raise NotImplementedError

    def load_folders(self, keep: bool = False) -> Any:  # pragma: no cover - the inbox's
        raise NotImplementedError

    def in_requests(self) -> bool:
        return self.folder.partition("/")[2] == REQUESTS

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ACTIONS:
            return self.in_requests()
        return True

    def _request(self) -> tuple[str, Request] | None:
        key = self._selected()
        if key is None or not self.in_requests():
            return None
        part = self.folder.partition("/")[0]
        wanted = self.summaries[key].key
        found = next((r for r in self.api.requests.pending(part) if r.key == wanted), None)
        return (part, found) if found is not None else None

    def _done(self, said: str) -> None:
        self.notify(said)
        self.load_folders(keep=True)
        self.open_folder(self.folder)

    def _act(self, act: str) -> None:
        chosen = self._request()
        if chosen is None:
            return
        part, request = chosen
        if not request.sender and act != "ignore":
            self.notify("this message names no sender: only I (ignore) applies")
            return
        requests = self.api.requests
        try:
            if act == "accept":
                moved = requests.accept(part, request.sender)
                self._done(f"{request.sender} is a contact: {moved} message(s) moved to INBOX")
            elif act == "block":
                gone = requests.block(part, request.sender)
                self._done(f"{request.sender} is blocked: {gone} message(s) deleted")
            else:
                requests.ignore(part, request.key)
                self._done("deleted; the sender is still a stranger")
        except (OSError, OnionMailError) as exc:
            self.notify(f"could not {act}: {exc}", severity="error")

    def action_accept_sender(self) -> None:
        self._act("accept")

    def action_block_sender(self) -> None:
        self._act("block")

    def action_ignore_request(self) -> None:
        self._act("ignore")
