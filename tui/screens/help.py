"""The help screen: every key, in one place."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# onionmail — keys

| where | key | does |
|---|---|---|
| anywhere | `i` `c` `u` `s` `l` | inbox, compose, queue, status, ledger |
| anywhere | `?` / `F1` | this help |
| anywhere | `ctrl+q` | quit (asks first if compose holds an unsent message) |
| inbox | `↑` `↓` `enter` | choose and open a message |
| inbox | `tab` | folders / messages |
| inbox | `j` `k` `gg` `G` | down, up, first, last (also the arrows, `Home`, `End`) |
| inbox | `/` then `n` `N` | search From, To, Cc, Subject and text; next, previous match |
| inbox | `d` | delete: move to the mailbox's `.Trash` folder |
| inbox | `a` | archive: move to `.Archive` |
| inbox | `m` | mark read / unread (opening a message reads it) |
| inbox | `F` | flag / unflag |
| inbox | `ctrl+z` | undo the last delete, archive or flag change |
| inbox | `z` `Z` `T` | fold a thread (`(+N)`: N more) / fold every thread / threads or flat |
| inbox | `ctrl+r` | read the folder again (new mail appears by itself) |
| message | `escape` | back |
| message | `s` | save its attachments in a directory you name (never over a file) |
| message | `o` | open an attachment with the desktop's handler (`xdg-open`) |
| message | `h` | every header field as stored (else From, To, Cc, Date, Subject) |
| message | `r` / `g` `R` / `f` | reply / reply to all / forward (quoted, threaded) |
| compose | `ctrl+s` | send (refused here first if the policy would refuse) |
| compose | `ctrl+w` | what-if: compare the paths for the first recipient |
| compose | `ctrl+b` | address book (petnames, OpenPGP keys, your aliases); `e` edits, `x` deletes |
| compose | `escape` | leave the editor fields (then `i` etc. work) |
| compose | Attach field | files to attach, comma separated; `→` completes a path |
| compose | `ctrl+d` | save to Drafts (`e` on a draft goes on with it) |
| leak card | arrows | the reason of each observer × item cell |
| queue | `r` / `R` | retry the selected / every message now |
| queue | `x` | cancel the selected message (kept in queue/cancelled) |
| status | `y` | copy the onion address (OSC 52, the terminal's clipboard) |
| status | `o` | the onion address as a QR code |

Unread messages are **bold** and counted next to each folder; flags and folders
are Maildir's own, so neomutt and Dovecot see the same.

**Marks in the inbox**: `S` sealed onion (sender verified, encrypted end to end),
`P` plain onion peer (not verified), `G` via gateway, `?` unknown (not delivered
by this box over the network). **enc**: `sealed`, `sealed-v1` (an older box's seal,
without forward secrecy), `OpenPGP` (decrypted by the box),
`OpenPGP?` (not decrypted), `clear`. **sender**: `verified` (onion), `signed`
(OpenPGP signature by the known key), `bad sig`, `unverified`. **Leak colours**:
red visible, green encrypted, yellow padded or delayed, grey hidden.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 90; height: 34; border: round $primary; background: $surface;
    }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
