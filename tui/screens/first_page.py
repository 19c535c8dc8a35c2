"""The inbox's first screenful, read before the UI starts.

Read in a worker, the listing and the first headers compete for the
interpreter with the UI thread building its first frame and take several
times as long; read before ``App.run`` they cost what the disk costs, and
the first frame already holds the newest messages. The rest of the folder
is read in a worker as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from onionmail.box.api import BoxApi, MessageSummary
from onionmail.core.errors import OnionMailError
from onionmail.store.maildir import folder_stamp


@dataclass(frozen=True)
class FirstPage:
    """The folder list, the address book's petnames and the first folder's newest rows."""

    folders: list[str]
    petnames: dict[str, str]
    """Address (lower case) -> petname."""
    stamp: tuple[int, int]
    """The first folder's stamp, taken before it was listed."""
    keys: list[str]
    """Every message of the first folder, newest first."""
    summaries: list[MessageSummary]
    """The newest of them, parsed."""

    @property
    def folder(self) -> str:
        return self.folders[0]


def read_first_page(api: BoxApi, rows: int) -> FirstPage | None:
    """The first page, or None when it cannot be read: the inbox then reads the folder in a
    worker, which shows the error to the user."""
    try:
        folders = api.folders()
        if not folders:
            return None
        petnames = {c.address.lower(): c.petname for c in api.contacts()}
        stamp = folder_stamp(api.folder_path(folders[0]))
        keys = api.message_keys(folders[0])
        summaries = list(api.summaries(folders[0], keys[:rows]))
    except (OSError, OnionMailError):
        return None
    return FirstPage(folders, petnames, stamp, keys, summaries)
