"""The TUI driven through textual's pilot against a sample box directory (no tor needed)."""

from __future__ import annotations

import ast
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from rich.color import Color
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Input, Markdown, OptionList, Static

from onionmail.box.api import BoxApi
from tests.neomutt import neomutt_flags, neomutt_subjects
from tests.tui_notifications import record_notifications
from tui.app import OnionMailApp
from tui.sample_box import (
    ALIAS,
    BOB_ADDRESS,
    CLEARNET_ADDRESS,
    CORP,
    DAVE_FINGERPRINT,
    GATEWAY,
    ONION_MX_ADDRESS,
    OTHER_CLEARNET_ADDRESS,
    QUEUE_ID,
    _message,
    create_sample_box,
    write_message,
)
from tui.screens.compose import ComposeScreen
from tui.screens.contacts import ContactsScreen, grouped
from tui.screens.inbox import InboxScreen
from tui.screens.message import MessageScreen
from tui.screens.onion_qr import OnionQrScreen
from tui.screens.status import StatusScreen
from tui.screens.what_if import WhatIfScreen
from tui.widgets.leak_card import InvalidRecipientCard, LeakCard
from tui.widgets.leak_matrix import LeakTable
from tui.widgets.onion_qr import qr_modules

SIZE = (120, 40)


@pytest.fixture
def box(tmp_path: Path) -> Path:
    return create_sample_box(tmp_path / "alice")


def app_for(box_dir: Path) -> OnionMailApp:
    return OnionMailApp(BoxApi(box_dir))


def static_text(widget: Static) -> str:
    return str(widget.render())


def drawn_text(widget: Widget) -> str:
    """What the widget draws on the screen, line by line (for rich renderables like tables)."""
    lines = widget.render_lines(widget.content_region.reset_offset)
    return "\n".join(line.text for line in lines)


async def wait_rows(pilot: Pilot[Any], table: DataTable[object], count: int) -> None:
    for _ in range(100):
        if table.row_count >= count:
            return
        await pilot.pause(0.02)
    raise AssertionError(f"only {table.row_count} row(s), wanted {count}")


async def settled(pilot: Pilot[Any]) -> None:
    """Let the screen's workers (predictions, loads) finish and their results show."""
    await pilot.pause(0.05)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause(0.05)


async def test_inbox_lists_newest_first_with_arrival_marks(box: Path) -> None:
    """How each message arrived (S/P/G/?) and whether it was encrypted, from the box's own
    fields: gateway mail is clear unless the box decrypted OpenPGP (Onionmail-OpenPGP)."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        rows = [table.get_row_at(i) for i in range(6)]
        assert [str(r[5]) for r in rows] == [
            "Keys",
            "Newsletter",
            "Hello Alice",
            "Forged result",
            "The report",
            "Meeting notes",
        ]
        assert [str(r[0]) for r in rows] == ["G", "G", "S", "?", "S", "P"]
        assert [str(r[1]) for r in rows] == [
            "OpenPGP",
            "clear",
            "sealed",
            "clear",
            "sealed",
            "clear",
        ]
        assert [str(r[2]) for r in rows] == [
            "signed",
            "unverified",
            "verified",
            "unverified",
            "verified",
            "unverified",
        ]
        status = static_text(app.screen.query_one("#inbox-status", Static))
        assert "G via gateway" in status


async def test_gateway_message_shows_the_openpgp_verdict(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        await pilot.press("enter")
        await settled(pilot)
        screen = app.screen
        assert isinstance(screen, MessageScreen) and screen.summary.subject == "Keys"
        head = static_text(screen.query_one("#headers", Static))
        assert "arrived: via gateway" in head
        assert f"OpenPGP, decrypted by the box; signature verified by {DAVE_FINGERPRINT}" in head
        await pilot.press("escape", "down", "enter")
        await settled(pilot)
        head = static_text(app.screen.query_one("#headers", Static))
        assert "the gateway read it in clear" in head


async def test_open_a_message_lists_its_attachment_and_ledger(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        await pilot.press("down", "down", "down", "down", "enter")
        await pilot.pause(0.2)
        screen = app.screen
        assert isinstance(screen, MessageScreen)
        assert screen.summary.subject == "The report"
        await pilot.pause(0.2)
        assert "report.pdf" in static_text(screen.query_one("#attachments", Static))
        assert "sealed onion" in static_text(screen.query_one("#headers", Static))
        assert screen.query(LeakTable), "the received message's ledger entry is shown"
        await pilot.press("escape")
        assert isinstance(app.screen, InboxScreen)


async def compose_to(pilot: Pilot[Any], app: OnionMailApp, recipient: str) -> ComposeScreen:
    await pilot.press("c")
    screen = app.screen
    assert isinstance(screen, ComposeScreen)
    compose: ComposeScreen = screen
    await pilot.press(*recipient)  # typed, key by key
    await settled(pilot)
    assert app.screen is screen, "letters typed into To must not switch screens"
    assert compose.query_one("#to", Input).value == recipient
    return compose


async def test_onion_and_clearnet_recipients_get_different_leak_cards(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, f"bob, {CLEARNET_ADDRESS}")
        cards = list(screen.query(LeakCard))
        # Dave's key is known: the box's own prediction is the OpenPGP gateway path
        assert [str(c.prediction.path) for c in cards] == [
            "onion-sealed",
            "gateway-clearnet-openpgp",
        ]
        assert cards[0].prediction.recipient == BOB_ADDRESS  # the petname resolved
        assert cards[0].prediction.refusal is None
        assert cards[1].prediction.refusal is None  # the sample box has a gateway
        route = static_text(cards[1].query_one(".route", Static))
        assert GATEWAY.onion_address in route and ALIAS in route
        assert DAVE_FINGERPRINT in static_text(cards[1].query_one(".openpgp", Static))
        assert not cards[0].query(".openpgp")
        observers = [set(c.query_one(LeakTable).observers) for c in cards]
        assert observers[0] != observers[1]
        # the reason of the focused cell shows under the table
        table = cards[0].query_one(LeakTable)
        table.focus()
        await pilot.press("right", "right")
        reason = static_text(cards[0].query_one(".reason", Static))
        assert reason.startswith("sender-network / the recipient's mail address: encrypted")


async def test_onion_mx_domain_is_shown_on_its_real_route_not_the_gateway(box: Path) -> None:
    """[onion_mx] sends corp.example straight to its onion: the card says so (path and
    route), as the box's own routing decides, and the what-if offers no gateway for it."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, ONION_MX_ADDRESS)
        card = screen.query_one(LeakCard)
        assert str(card.prediction.path) == "onion-sealed"
        route = static_text(card.query_one(".route", Static))
        assert "[onion_mx]" in route and CORP.onion_address in route
        assert GATEWAY.onion_address not in route
        assert "gateway-clearnet" not in static_text(card.query_one(".path", Static))
        await pilot.press("escape", "ctrl+w")
        await settled(pilot)
        what_if = app.screen
        assert isinstance(what_if, WhatIfScreen)
        by_label = {o.label: o for o in what_if.options}
        assert by_label["onion sealed"].available and by_label["onion sealed"].expected
        assert not by_label["gateway"].available
        assert not by_label["gateway+OpenPGP"].available
        assert "[onion_mx]" in by_label["gateway"].note


async def test_without_a_gateway_a_clearnet_recipient_is_refused(tmp_path: Path) -> None:
    app = app_for(create_sample_box(tmp_path / "alice", gateway=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, CLEARNET_ADDRESS)
        card = screen.query_one(LeakCard)
        assert card.has_class("refused")
        assert "no gateway is registered" in static_text(card.query_one(".refusal", Static))


async def test_policy_refusal_is_shown_before_anything_leaves(tmp_path: Path) -> None:
    box_dir = create_sample_box(tmp_path / "alice", policy_rules=("never-clearnet",))
    app = app_for(box_dir)
    shown = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, CLEARNET_ADDRESS)
        card = screen.query_one(LeakCard)
        assert card.has_class("refused")
        assert "never-clearnet" in static_text(card.query_one(".refusal", Static))
        await pilot.press("ctrl+s")
        await pilot.pause(0.1)
        texts = [n.message for n in shown]
        assert any("policy rule never-clearnet" in t for t in texts), texts
    assert len(BoxApi(box_dir).queue()) == 1  # only the sample entry: nothing was queued


async def test_send_to_a_box_that_is_not_running_says_what_to_do(box: Path) -> None:
    app = app_for(box)
    shown = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await compose_to(pilot, app, "bob")
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        texts = [n.message for n in shown]
        assert any("onionmail run --dir" in t for t in texts), texts


async def what_if_for(pilot: Pilot[Any], app: OnionMailApp, recipient: str) -> WhatIfScreen:
    await compose_to(pilot, app, recipient)
    await pilot.press("ctrl+w")
    await settled(pilot)
    screen = app.screen
    assert isinstance(screen, WhatIfScreen)
    return screen


async def test_what_if_compares_gateway_with_and_without_openpgp(box: Path) -> None:
    """Dave's key is known: gateway+OpenPGP is available, its note names the key; Erin has
    none: only the plain gateway path is."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await what_if_for(pilot, app, CLEARNET_ADDRESS)
        by_label = {o.label: o for o in screen.options}
        assert by_label["gateway"].available and not by_label["gateway"].expected
        assert not by_label["onion sealed"].available
        openpgp = by_label["gateway+OpenPGP"]
        assert openpgp.available and openpgp.expected and DAVE_FINGERPRINT in openpgp.note
        assert str(openpgp.matrix.path) == "gateway-clearnet-openpgp"
        table = screen.query_one(DataTable)
        available = [str(c) for c in table.get_row_at(0)]
        assert available[3:5] == ["yes", "yes"]
        labels = [str(c.label) for c in table.ordered_columns]
        assert labels[3:5] == ["gateway", "gateway+OpenPGP *"]
        await pilot.press("right", "right", "right", "right")  # the gateway+OpenPGP column
        assert DAVE_FINGERPRINT in static_text(screen.query_one("#reason", Static))
        await pilot.press("escape")
        compose = app.screen
        assert isinstance(compose, ComposeScreen)
        compose.query_one("#to", Input).value = OTHER_CLEARNET_ADDRESS
        await settled(pilot)
        await pilot.press("escape", "ctrl+w")
        await settled(pilot)
        assert isinstance(app.screen, WhatIfScreen)
        by_label = {o.label: o for o in app.screen.options}
        assert by_label["gateway"].available and by_label["gateway"].expected
        assert not by_label["gateway+OpenPGP"].available
        assert "no OpenPGP key known" in by_label["gateway+OpenPGP"].note


async def test_what_if_compares_the_paths(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await what_if_for(pilot, app, "bob")
        assert isinstance(screen, WhatIfScreen)
        labels = [o.label for o in screen.options]
        assert labels[:4] == [
            "onion sealed",
            "onion plain peer",
            "gateway",
            "gateway+OpenPGP",
        ]
        table = screen.query_one(DataTable)
        await pilot.press("down", "down", "right")
        assert table.cursor_coordinate.column == 1
        assert "tor-guard" in static_text(screen.query_one("#reason", Static))


async def test_queue_shows_destination_not_subject_and_cancels(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("u")
        table = app.screen.query_one("#queue", DataTable)
        await wait_rows(pilot, table, 1)
        row = [str(cell) for cell in table.get_row_at(0)]
        assert row[0] == QUEUE_ID[:8] and row[1] == BOB_ADDRESS.split("@")[1]
        assert row[2] == "3" and "0xF2" in row[4]
        await pilot.press("x")
        for _ in range(50):
            if table.row_count == 0:
                break
            await pilot.pause(0.05)
        assert table.row_count == 0
    assert (box / "queue" / "cancelled" / f"{QUEUE_ID}.msg").exists()


async def test_ledger_and_status_screens(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("l")
        table = app.screen.query_one("#entries", DataTable)
        await wait_rows(pilot, table, 3)
        assert {str(table.get_row_at(i)[2]) for i in range(3)} == {"onion-sealed", "onion-plain"}
        await pilot.pause(0.1)
        assert app.screen.query(LeakTable)
        await pilot.press("s")
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, StatusScreen) and screen.current is not None
        assert screen.current.state == "not running"
        assert screen.current.onion == BoxApi(box).onion
        gateways = drawn_text(screen.query_one("#status", Static))
        assert ALIAS in gateways and GATEWAY.onion_address in gateways
        assert "sends clearnet mail" in gateways
        await pilot.press("question_mark")
        await pilot.pause(0.1)
        assert "keys" in app.screen.query_one(Markdown).source


async def test_nothing_reaches_stdout_or_stderr_even_on_errors(
    box: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Errors go to the UI (a notification that says what to do), never to the terminal."""
    app = app_for(box)
    shown = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await compose_to(pilot, app, "bob")
        await pilot.press("ctrl+s")  # the box is not running: an error, shown in the UI
        await pilot.pause(0.3)
        for key in ("escape", "i", "u", "s", "l", "?"):
            await pilot.press(key)
            await pilot.pause(0.1)
        assert shown
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


async def test_status_copies_the_onion_address_with_osc52(
    box: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = app_for(box)
    copied: list[str] = []
    original = app.copy_to_clipboard

    def spy(text: str) -> None:
        copied.append(text)
        original(text)

    monkeypatch.setattr(app, "copy_to_clipboard", spy)
    shown = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await settled(pilot)
        await pilot.press("y")
        await pilot.pause(0.05)
        onion = BoxApi(box).onion
        assert copied == [onion]
        assert app.clipboard == onion
        assert any("copied" in n.message for n in shown)


def dark(color: Color | None) -> bool:
    return color is not None and color.get_truecolor().hex == "#000000"


async def test_status_shows_the_onion_address_as_a_qr_code(box: Path) -> None:
    """The QR symbol drawn is the one for the onion: each character cell holds two module
    rows (upper half block: foreground = upper module, background = lower)."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        await settled(pilot)
        await pilot.press("o")
        await settled(pilot)
        screen = app.screen
        assert isinstance(screen, OnionQrScreen)
        onion = BoxApi(box).onion
        qr = screen.query_one("#qr", Static)
        lines = qr.render_lines(qr.content_region.reset_offset)
        modules = qr_modules(onion)
        width = len(modules[0])
        assert drawn_text(qr).splitlines()[0] == "\u2580" * width
        assert len(lines) == (len(modules) + 1) // 2
        for n, line in enumerate(lines):
            cells = [seg.style for seg in line if seg.text for _ in seg.text][:width]
            top = [style is not None and dark(style.color) for style in cells]
            bottom = [style is not None and dark(style.bgcolor) for style in cells]
            assert top == modules[2 * n], f"module row {2 * n}"
            below = modules[2 * n + 1] if 2 * n + 1 < len(modules) else [False] * width
            assert bottom == below, f"module row {2 * n + 1}"
        assert static_text(screen.query_one("#qr-caption", Static)) == onion
        await pilot.press("escape")
        assert isinstance(app.screen, StatusScreen)


async def address_book(pilot: Pilot[Any], app: OnionMailApp) -> ContactsScreen:
    await compose_to(pilot, app, "")
    await pilot.press("ctrl+b")
    await settled(pilot)
    screen = app.screen
    assert isinstance(screen, ContactsScreen)
    return screen


async def test_address_book_shows_keys_and_gateway_aliases(box: Path) -> None:
    """Petnames with the key the box holds for each address, every known OpenPGP key
    (address and fingerprint, read only) and this box's own gateway aliases."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await address_book(pilot, app)
        contacts = screen.query_one("#contacts", DataTable)
        rows = {
            str(r[0]): [str(cell) for cell in r]
            for r in (contacts.get_row_at(i) for i in range(contacts.row_count))
        }
        assert rows["dave"][2] == DAVE_FINGERPRINT[-16:]
        assert rows["bob"][2] == "none"
        keys = screen.query_one("#keys", DataTable)
        first = [str(cell) for cell in keys.get_row_at(0)[:3]]
        assert first == [CLEARNET_ADDRESS, grouped(DAVE_FINGERPRINT), "manual"]
        aliases = static_text(screen.query_one("#aliases", Static))
        assert ALIAS in aliases and GATEWAY.onion_address in aliases
        screen.query_one("#petname", Input).value = "erin"
        screen.query_one("#address", Input).value = OTHER_CLEARNET_ADDRESS
        await pilot.click("#add")
        await settled(pilot)
        await settled(pilot)
        assert contacts.row_count == 4
        await pilot.press("escape")
    assert any(c.petname == "erin" for c in BoxApi(box).contacts())


HOSTILE_SUBJECT = "[/] [link=https://evil.example]click[/link] [bold red]loud"
HOSTILE_NAME = "[@click=app.quit]Mallory[/]"
HOSTILE_SENDER = f'"{HOSTILE_NAME}" <mallory@example.org>'
HOSTILE_FILE = "[/]report[b].pdf"


async def test_markup_in_a_message_is_shown_as_text_never_parsed(tmp_path: Path) -> None:
    """A Subject of ``[/]`` used to raise MarkupError at every listing (a remote, lasting
    denial of the UI); links and styles rendered. Every field comes out literally."""
    box_dir = create_sample_box(tmp_path / "alice")
    hostile = _message(HOSTILE_SENDER, HOSTILE_SUBJECT, 50, "", "[/]body[/]", HOSTILE_FILE)
    write_message(box_dir / "mail" / "alice", 50, hostile)  # the newest message
    app = app_for(box_dir)
    shown = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 7)
        newest = [str(cell) for cell in table.get_row_at(0)]
        assert newest[5] == HOSTILE_SUBJECT and HOSTILE_NAME in newest[4]
        await settled(pilot)  # drawn after the rows arrive
        assert HOSTILE_SUBJECT[:18] in drawn_text(table)  # as drawn (the column is narrower)
        await pilot.press("enter")
        await settled(pilot)
        assert isinstance(app.screen, MessageScreen)
        headers = static_text(app.screen.query_one("#headers", Static))
        assert HOSTILE_SUBJECT in headers and HOSTILE_NAME in headers
        assert HOSTILE_FILE in static_text(app.screen.query_one("#attachments", Static))
        assert "[/]body[/]" in static_text(app.screen.query_one("#body", Static))
        await pilot.press("escape", "i")
        await settled(pilot)
    assert [n for n in shown if n.title.startswith("could not")] == []


def test_every_text_widget_of_the_tui_is_a_plain_one() -> None:
    """Static and DataTable parse strings as markup: the screens use PlainStatic and
    PlainTable (tui/widgets/plain.py), which never do, so no new screen can forget."""
    root = Path(__file__).resolve().parent.parent / "tui"
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "plain.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func.value if isinstance(node.func, ast.Subscript) else node.func
                if isinstance(func, ast.Name) and func.id in ("Static", "DataTable"):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {func.id}(...)")
    assert found == []


async def test_typing_after_coming_back_to_compose_goes_on_where_it_was(box: Path) -> None:
    """Leaving compose for another screen and coming back: the letters go on into the
    field they went into before (here the subject), appended, never into a global key."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, "bob")
        await pilot.press("tab", "tab", "h", "i", "escape", "i")
        in_inbox = isinstance(app.screen, InboxScreen)  # not narrowing app.screen for below
        assert in_inbox
        await pilot.press("c")
        assert app.screen is screen
        await pilot.press("l", "u")
        await settled(pilot)
        assert app.screen is screen
        assert screen.query_one("#subject", Input).value == "hilu"
        assert screen.query_one("#to", Input).value == "bob"


async def test_an_invalid_onion_is_refused_in_its_card_with_a_sentence(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, "bob@abcdef.onion")
        (card,) = screen.query(InvalidRecipientCard)
        text = static_text(card)
        assert "56 characters before .onion, this one has 6" in text
        assert "Error(" not in text and "'" not in text  # a sentence, not a repr
        assert "will not send" in static_text(screen.query_one("#verdict", Static))


async def test_the_verdict_says_when_the_box_is_not_running(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await compose_to(pilot, app, "bob")
        verdict = static_text(screen.query_one("#verdict", Static))
        assert verdict.startswith("the box is not running") and "ready" not in verdict
        assert "BOXDIR" not in verdict and "--dir" in verdict


async def test_an_empty_queue_says_so(box: Path) -> None:
    BoxApi(box).cancel(QUEUE_ID)
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("u")
        await settled(pilot)
        assert static_text(app.screen.query_one("#queue-status", Static)) == "the queue is empty"


async def test_what_if_never_stars_a_path_that_is_not_available(tmp_path: Path) -> None:
    app = app_for(create_sample_box(tmp_path / "alice", gateway=False))
    async with app.run_test(size=SIZE) as pilot:
        screen = await what_if_for(pilot, app, "dave@example.org")
        assert not [o for o in screen.options if o.expected and not o.available]


async def test_flags_and_folders_are_maildir_s_and_neomutt_reads_them(
    box: Path, tmp_path: Path
) -> None:
    """F flags "Keys", d moves "Newsletter" to the trash, opening "Hello Alice" reads it:
    the files are renamed and moved as the Maildir specification says, the folder list
    counts the unread, and a real neomutt sees the same flags and folders."""
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        await pilot.press("F", "down", "d")
        await settled(pilot)
        assert table.row_count == 5
        assert [str(table.get_row_at(i)[5]) for i in range(2)] == ["⚑ Keys", "Hello Alice"]
        assert table.get_row_at(1)[4].style == "bold"  # unread: bold
        await pilot.press("enter")
        await settled(pilot)
        assert isinstance(app.screen, MessageScreen)
        await pilot.press("escape")
        await settled(pilot)
        assert table.get_row_at(1)[4].style == ""  # read now
        folders = app.screen.query_one("#folders", OptionList)
        labels = [str(folders.get_option_at_index(i).prompt) for i in range(folders.option_count)]
        assert labels == ["alice  4", "alice/.Trash  1"], labels  # 6 unread, 1 read, 1 gone
    mail = box / "mail" / "alice"
    read = [p.name for p in (mail / "cur").iterdir()]
    assert sorted(name.rpartition(":2,")[2] for name in read) == ["F", "S"]
    assert len(list((mail / ".Trash" / "new").iterdir())) == 1
    work = tmp_path / "neomutt"
    work.mkdir()
    # replied: the flag compose sets once a reply is queued (BoxApi.set_flags, add "R")
    api = BoxApi(box)
    (hello,) = [k for k in api.message_keys("alice") if k.endswith(":2,S")]
    api.set_flags("alice", hello, add="R")
    seen = neomutt_flags(mail, work)
    assert seen["Keys"] == {"F"} and seen["Hello Alice"] == {"R", "A"}
    assert seen["The report"] == set() and "Newsletter" not in seen
    assert neomutt_subjects(mail / ".Trash", work) == ["Newsletter"]


async def test_undo_takes_back_a_delete_and_a_flag(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        await pilot.press("d")
        await settled(pilot)
        assert table.row_count == 5 and (box / "mail" / "alice" / ".Trash").is_dir()
        await pilot.press("ctrl+z")
        await wait_rows(pilot, table, 6)
        assert not list((box / "mail" / "alice" / ".Trash" / "new").iterdir())
        await pilot.press("m")  # read without opening it
        await settled(pilot)
        assert [p.name.rpartition(":2,")[2] for p in (box / "mail/alice/cur").iterdir()] == ["S"]
        await pilot.press("m", "F", "ctrl+z")  # unread again, flagged, flag undone
        await settled(pilot)
    flags = [p.name.rpartition(":2,")[2] for p in (box / "mail/alice/cur").iterdir()]
    assert flags == [""]


async def test_search_finds_in_fields_and_text_and_n_moves_through(box: Path) -> None:
    """/ searches From, To, Cc, Subject and the text, also inside a quoted-printable body;
    n and N go through the matches; j, k, gg and G move the cursor."""
    mail = box / "mail" / "alice"
    encoded = (
        b"From: zed@example.org\nTo: alice@x.onion\nSubject: =?utf-8?q?Caf=C3=A9?=\n"
        b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n"
        b"\nthe secret word is cr=C3=A8me\n"
    )
    write_message(mail, 40, encoded)
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 7)
        await pilot.press("G")
        assert table.cursor_row == 6
        await pilot.press("k", "k")
        assert table.cursor_row == 4
        await pilot.press("g", "g")
        assert table.cursor_row == 0
        await pilot.press("j")
        assert table.cursor_row == 1
        await pilot.press("slash", *"crème", "enter")
        await settled(pilot)
        assert str(table.get_row_at(table.cursor_row)[5]) == "Café"
        await pilot.press("slash", *"report", "enter")  # a subject and a body word
        await settled(pilot)
        screen = app.screen
        assert isinstance(screen, InboxScreen) and len(screen.matches) >= 1
        first = table.cursor_row
        await pilot.press("n")
        after = table.cursor_row
        await pilot.press("N")
        assert table.cursor_row == first and (after != first or len(screen.matches) == 1)
        await pilot.press("slash", *"nowhere-at-all", "enter")
        await settled(pilot)
        status = static_text(screen.query_one("#inbox-status", Static))
        assert "not found" in status


async def test_new_mail_appears_by_itself_and_the_cursor_stays(box: Path) -> None:
    mail = box / "mail" / "alice"
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        await pilot.press("down", "down")
        chosen = str(table.get_row_at(table.cursor_row)[5])
        write_message(mail, 50, _message("zed@example.org", "Arrived just now", 50, "", "hi"))
        await wait_rows(pilot, table, 7)
        assert str(table.get_row_at(0)[5]) == "Arrived just now"  # newest first
        assert str(table.get_row_at(table.cursor_row)[5]) == chosen
        # another client reads a message: the row is no longer bold
        new = next((mail / "new").iterdir())
        new.rename(mail / "cur" / f"{new.name}:2,S")
        for _ in range(60):
            await pilot.pause(0.1)
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            if sum(r[4].style != "bold" for r in rows) == 1:
                break
        assert sum(r[4].style != "bold" for r in rows) == 1


async def test_petnames_stand_for_onions_and_h_shows_every_field(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        await settled(pilot)
        row = [str(c) for c in table.get_row_at(2)]
        assert row[5] == "Hello Alice" and row[4] == "bob"  # the address book's petname
        await pilot.press("down", "down", "enter")
        await settled(pilot)
        head = static_text(app.screen.query_one("#headers", Static))
        assert "From: bob\n" in head and BOB_ADDRESS not in head
        assert "Message-ID" not in head and "Authentication-Results" not in head
        await pilot.press("h")
        head = static_text(app.screen.query_one("#headers", Static))
        assert BOB_ADDRESS in head and "Message-ID: " in head
        assert "Authentication-Results: " in head
        await pilot.press("h")
        assert "Message-ID" not in static_text(app.screen.query_one("#headers", Static))


async def test_html_only_mail_is_shown_as_text_never_as_source(box: Path) -> None:
    html = (
        "<html><head><style>p {color: red}</style></head><body><h1>Sale</h1>"
        "<p>Hello <b>Alice</b>, see <a href='https://example.org/x'>the offer</a>.</p>"
        "<img src='https://tracker.example/p.gif' alt='logo'></body></html>"
    )
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "shop@example.org", "alice@x.onion", "HTML only"
    msg.set_content(html, subtype="html")
    write_message(box / "mail" / "alice", 60, msg.as_bytes())
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 7)
        await pilot.press("enter")
        await settled(pilot)
        body = static_text(app.screen.query_one("#body", Static))
        assert "# Sale" in body and "Hello **Alice**" in body
        assert "[the offer](https://example.org/x)" in body and "logo" in body
        assert "<p>" not in body and "color: red" not in body and "tracker" not in body


async def test_80x24_keeps_the_subject_and_a_wider_terminal_gets_every_column(
    box: Path,
) -> None:
    app = app_for(box)
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        assert [str(c.label) for c in table.columns.values()] == ["", "from", "subject"]
        assert str(table.get_row_at(0)[2]) == "Keys"
        region = table.region
        assert region.width > 50  # the subject has room, the folder list narrowed
        await pilot.press("down")
        await pilot.resize_terminal(120, 40)
        await settled(pilot)
        assert len(table.columns) == 6 and str(table.get_row_at(1)[5]) == "Newsletter"
        assert table.cursor_row == 1


async def test_a_contact_is_renamed_readdressed_and_deleted(box: Path) -> None:
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        screen = await address_book(pilot, app)
        contacts = screen.query_one("#contacts", DataTable)
        names = [str(contacts.get_row_at(i)[0]) for i in range(contacts.row_count)]
        contacts.move_cursor(row=names.index("bob"))
        await pilot.press("e")
        assert screen.query_one("#address", Input).value == BOB_ADDRESS
        screen.query_one("#petname", Input).value = "robert"
        await pilot.press("enter")
        await settled(pilot)
        await settled(pilot)
        book = {c.petname: c.address for c in BoxApi(box).contacts()}
        assert book.get("robert") == BOB_ADDRESS and "bob" not in book
        names = [str(contacts.get_row_at(i)[0]) for i in range(contacts.row_count)]
        contacts.focus()
        contacts.move_cursor(row=names.index("dave"))
        await pilot.press("x")
        await settled(pilot)
        await settled(pilot)
    assert "dave" not in {c.petname for c in BoxApi(box).contacts()}
    assert "robert" in (box / "contacts.toml").read_text()
