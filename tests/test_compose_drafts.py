"""Replies, replies to all and forwards (onionmail.message.compose), and the TUI's r/g/f.

The drafts are checked field by field against RFC 5322 section 3.6.3
(Reply-To before From; In-Reply-To and References for threading); the TUI
tests open a message of the sample box and press the keys.
"""

from __future__ import annotations

import email
import email.policy
import os
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TextArea

from onionmail.box.api import BoxApi
from onionmail.message.compose import Draft, Original, build_message, forward_draft, reply_draft
from tests.test_tui import SIZE, app_for, compose_to, settled, wait_rows
from tests.tui_notifications import record_notifications
from tui.sample_box import create_sample_box
from tui.screens.compose import ComposeScreen
from tui.screens.inbox import InboxScreen
from tui.screens.message import MessageScreen
from tui.screens.unsent import UnsentPrompt

ME = "alice@me.onion"
HEADERS = (
    ("From", "Bob <bob@b.onion>"),
    ("To", f"Alice <{ME}>, carol@c.onion"),
    ("Cc", "dave@example.org, Bob <bob@b.onion>"),
    ("Subject", "Lunch"),
    ("Date", "Fri, 04 Dec 2026 12:00:00 +0000"),
    ("Message-ID", "<m2@b.onion>"),
    ("References", "<m0@c.onion> <m1@me.onion>"),
)
BODY = "Friday?\n\nBob\n"


def test_a_reply_goes_to_the_sender_threaded_and_quoted() -> None:
    draft = reply_draft(Original(HEADERS, BODY), [ME])
    assert draft.to == ("bob@b.onion",) and draft.cc == ()
    assert draft.subject == "Re: Lunch"
    assert draft.in_reply_to == "<m2@b.onion>"
    assert draft.references == "<m0@c.onion> <m1@me.onion> <m2@b.onion>"
    assert draft.body == (
        "\n\nOn Fri, 04 Dec 2026 12:00:00 +0000, Bob <bob@b.onion> wrote:\n> Friday?\n>\n> Bob\n"
    )


def test_reply_to_wins_and_re_is_not_doubled() -> None:
    headers = (*HEADERS[:3], ("Subject", "RE: Lunch"), ("Reply-To", "list@l.onion"))
    draft = reply_draft(Original(headers, BODY), [ME])
    assert draft.to == ("list@l.onion",) and draft.subject == "RE: Lunch"
    assert draft.in_reply_to == "" and draft.references == ""  # the original had no id


def test_a_reply_to_all_copies_everyone_but_me_once() -> None:
    draft = reply_draft(Original(HEADERS, BODY), [ME.upper()], everyone=True)
    assert draft.to == ("bob@b.onion",)
    assert draft.cc == ("carol@c.onion", "dave@example.org")


def test_a_forward_quotes_the_original_inline() -> None:
    draft = forward_draft(Original(HEADERS, BODY))
    assert draft.to == () and draft.subject == "Fwd: Lunch" and not draft.in_reply_to
    assert "From: Bob <bob@b.onion>\nDate: Fri, 04 Dec 2026" in draft.body
    assert draft.body.rstrip().endswith("Friday?\n\nBob")


def test_the_built_message_carries_the_thread_fields() -> None:
    draft = reply_draft(Original(HEADERS, BODY), [ME])
    parsed = email.message_from_bytes(
        build_message(ME, draft).as_bytes(policy=email.policy.SMTP), policy=email.policy.default
    )
    assert parsed["In-Reply-To"] == "<m2@b.onion>"
    assert parsed["References"] == "<m0@c.onion> <m1@me.onion> <m2@b.onion>"
    assert parsed["To"] == "bob@b.onion"
    assert parsed.get_content().replace("\r\n", "\n").startswith("\n\nOn Fri")
    assert build_message(ME, Draft(("x@y.onion",), subject="s")).get("In-Reply-To") is None


async def test_r_g_and_f_in_the_tui_fill_compose(tmp_path: Path) -> None:
    box = create_sample_box(tmp_path / "alice")
    app = app_for(box)
    own = BoxApi(box).own_addresses()
    async with app.run_test(size=SIZE) as pilot:
        table = app.screen.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 6)
        await pilot.press("down", "down", "enter")  # "Hello Alice", from bob's onion
        await settled(pilot)
        message = app.screen
        assert isinstance(message, MessageScreen) and message.summary.subject == "Hello Alice"
        await pilot.press("r")
        await settled(pilot)
        compose = app.screen
        assert isinstance(compose, ComposeScreen)
        to = compose.query_one("#to", Input).value
        assert to.endswith(".onion") and to not in own
        assert compose.query_one("#subject", Input).value == "Re: Hello Alice"
        assert "\n> " in compose.query_one("#body", TextArea).text
        assert compose.thread["in_reply_to"].startswith("<")
        assert compose.replied is not None and compose.replied[0] == "alice"
        # compose now holds a message: a second answer does not overwrite it
        await pilot.press("escape", "i", "enter")
        await settled(pilot)
        await pilot.press("f")
        await settled(pilot)
        assert compose.query_one("#subject", Input).value == "Re: Hello Alice"
        for name in ("to", "cc", "subject"):
            compose.query_one(f"#{name}", Input).value = ""
        compose.query_one("#body", TextArea).text = ""
        await pilot.press("escape", "i", "enter")
        await settled(pilot)
        await pilot.press("f")
        await settled(pilot)
        assert compose.query_one("#subject", Input).value.startswith("Fwd: ")
        assert compose.query_one("#to", Input).value == "" and not compose.thread


async def test_quitting_with_an_unsent_message_asks_and_saves_it_to_drafts(
    tmp_path: Path,
) -> None:
    """ctrl+q with compose holding a message: escape stays, s files it in .Drafts (flags
    draft and seen) and quits; e on the draft brings it back; sending trashes it."""
    box = create_sample_box(tmp_path / "alice")
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        compose = await compose_to(pilot, app, "bob")
        compose.query_one("#subject", Input).value = "Half written"
        compose.query_one("#body", TextArea).text = "Dear Bob,\n"
        await pilot.press("ctrl+q")
        await settled(pilot)
        assert isinstance(app.screen, UnsentPrompt)
        await pilot.press("escape")  # stay: nothing lost
        await settled(pilot)
        assert app.is_running and compose.query_one("#subject", Input).value == "Half written"
        await pilot.press("ctrl+q")
        await settled(pilot)
        await pilot.press("s")
        await settled(pilot)
    assert not app.is_running
    drafts = box / "mail" / "alice" / ".Drafts" / "cur"
    (saved,) = list(drafts.iterdir())
    assert saved.name.endswith(":2,DS")
    parsed = email.message_from_bytes(saved.read_bytes())
    assert parsed["Subject"] == "Half written" and parsed.get_payload().startswith("Dear Bob")

    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        inbox = app.screen
        assert isinstance(inbox, InboxScreen)
        await settled(pilot)
        inbox.open_folder("alice/.Drafts")
        table = inbox.query_one("#messages", DataTable)
        await wait_rows(pilot, table, 1)
        await pilot.press("enter")
        await settled(pilot)
        await pilot.press("e")
        await settled(pilot)
        compose = app.screen
        assert isinstance(compose, ComposeScreen)
        assert compose.query_one("#subject", Input).value == "Half written"
        assert compose.query_one("#body", TextArea).text.startswith("Dear Bob")
        assert compose.from_draft is not None
        await pilot.press("ctrl+d")  # saved anew: the old copy goes to the trash
        await settled(pilot)
    assert len(list(drafts.iterdir())) == 1 and saved.name not in os.listdir(drafts)
    assert len(list((box / "mail" / "alice" / ".Trash" / "cur").iterdir())) == 1


async def test_quitting_with_an_empty_compose_does_not_ask(tmp_path: Path) -> None:
    app = app_for(create_sample_box(tmp_path / "alice"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        await settled(pilot)
        await pilot.press("ctrl+q")
        await settled(pilot)
    assert not app.is_running


async def test_an_encrypted_key_is_opened_in_a_dialog(tmp_path: Path) -> None:
    """No --passphrase-file: the TUI asks in a dialog; a wrong passphrase is said and asked
    again, the right one opens the key and the ledger."""
    from onionmail.box.create import create_box
    from tui.app import OnionMailApp
    from tui.screens.unlock import UnlockPrompt

    new = create_box(tmp_path / "alice", "alice", passphrase=b"correct horse battery")
    app = OnionMailApp(BoxApi(new.box_dir), ask_passphrase=True)
    assert not app.api.ledger_available
    async with app.run_test(size=SIZE) as pilot:
        await settled(pilot)
        assert isinstance(app.screen, UnlockPrompt)
        await pilot.press(*"wrong one", "enter")
        for _ in range(100):
            await pilot.pause(0.1)
            if "try again" in str(app.screen.query_one("#unlock-status").render()):
                break
        assert isinstance(app.screen, UnlockPrompt)
        await pilot.press(*"correct horse battery", "enter")
        for _ in range(100):
            await pilot.pause(0.1)
            if not isinstance(app.screen, UnlockPrompt):
                break
        assert app.api.ledger_available
        await pilot.press("l")
        await settled(pilot)
        assert "locked" not in str(app.screen.query_one("#ledger-status").render())


def test_attachments_are_saved_under_safe_names_and_never_overwrite(tmp_path: Path) -> None:
    from email.message import EmailMessage

    from onionmail.message.reading import save_attachments

    msg = EmailMessage()
    msg["Subject"] = "files"
    msg.set_content("see attached")
    for name, data in (
        ("../../.bashrc", b"evil"),
        ("report.pdf", b"%PDF one"),
        ("report.pdf", b"%PDF two"),
        ("", b"nameless"),
    ):
        msg.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    target = tmp_path / "out"
    paths = save_attachments(msg.as_bytes(), target)
    assert [p.name for p in paths] == ["bashrc", "report.pdf", "report (2).pdf", "attachment-4"]
    assert all(p.parent == target for p in paths)
    assert (target / "report (2).pdf").read_bytes() == b"%PDF two"
    assert oct((target / "bashrc").stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / ".bashrc").exists()


async def open_the_report(pilot: Pilot[Any]) -> None:
    """The sample inbox's "The report", the message with an attachment, open."""
    await wait_rows(pilot, pilot.app.screen.query_one("#messages", DataTable), 6)
    await pilot.press("down", "down", "down", "down", "enter")
    await settled(pilot)


async def test_s_saves_a_message_s_attachments_where_the_user_says(tmp_path: Path) -> None:
    box = create_sample_box(tmp_path / "alice")
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        await open_the_report(pilot)
        await pilot.press("s")
        await settled(pilot)
        answer = app.screen.query_one(Input)
        answer.value = str(tmp_path / "saved")
        await pilot.press("enter")
        await settled(pilot)
    saved = list((tmp_path / "saved").iterdir())
    assert len(saved) == 1 and saved[0].stat().st_size > 0


def test_attached_files_become_mime_parts_and_a_missing_one_is_refused(tmp_path: Path) -> None:
    from onionmail.message.compose import AttachmentError

    (tmp_path / "report.pdf").write_bytes(b"%PDF-1.4 x")
    (tmp_path / "notes").write_bytes(b"\x00\x01")
    draft = Draft(
        ("bob@b.onion",),
        subject="files",
        body="see attached",
        attachments=(str(tmp_path / "report.pdf"), str(tmp_path / "notes")),
    )
    msg = build_message(ME, draft)
    parts = [(p.get_filename(), p.get_content_type()) for p in msg.iter_attachments()]
    assert parts == [("report.pdf", "application/pdf"), ("notes", "application/octet-stream")]
    missing = Draft(("bob@b.onion",), attachments=(str(tmp_path / "gone.txt"),))
    with pytest.raises(AttachmentError, match="cannot attach .*gone.txt"):
        build_message(ME, missing)


async def test_the_attach_field_completes_paths(tmp_path: Path) -> None:
    from tui.screens.compose import PathSuggester

    (tmp_path / "report.pdf").write_bytes(b"x")
    (tmp_path / "docs").mkdir()
    (tmp_path / ".hidden").write_bytes(b"x")
    suggest = PathSuggester().get_suggestion
    assert await suggest(f"{tmp_path}/re") == f"{tmp_path}/report.pdf"
    assert await suggest(f"a.txt, {tmp_path}/do") == f"a.txt, {tmp_path}/docs/"
    assert await suggest(f"{tmp_path}/") == f"{tmp_path}/docs/"  # dot files only when typed
    assert await suggest(f"{tmp_path}/zz") is None and await suggest("") is None


async def test_attachments_change_the_leak_card_before_sending(tmp_path: Path) -> None:
    """A file in Attach: the cards are predicted again for a message with attachments (their
    names are metadata too), as the ledger will record it."""
    from threat_model import Item, Observer, Visibility

    box = create_sample_box(tmp_path / "alice")
    (tmp_path / "plan.pdf").write_bytes(b"%PDF")
    app = app_for(box)
    async with app.run_test(size=SIZE) as pilot:
        compose = await compose_to(pilot, app, "bob")

        def attachment_cell() -> Visibility:
            (prediction,) = compose.predictions
            return prediction.matrix.cell(Observer.RECIPIENT_BOX, Item.ATTACHMENT_NAMES).visibility

        assert attachment_cell() is Visibility.HIDDEN
        compose.query_one("#attach", Input).value = str(tmp_path / "plan.pdf")
        await settled(pilot)
        await settled(pilot)
        assert attachment_cell() is Visibility.VISIBLE
        assert compose.draft().attachments == (str(tmp_path / "plan.pdf"),)


async def test_o_opens_an_attachment_with_the_desktop_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The desktop's handler (here a stand-in ``xdg-open`` on PATH that copies what it is
    given) gets the attachment from a private directory; without a desktop session the
    TUI says so instead of running a handler in its own terminal."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    handed = tmp_path / "handed"
    opener = bin_dir / "xdg-open"
    opener.write_text(f'#!/bin/sh\ncp "$1" {handed}\necho "$1" > {handed}.path\n')
    opener.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    box = create_sample_box(tmp_path / "alice")
    app = app_for(box)
    shown = record_notifications(app)
    async with app.run_test(size=SIZE) as pilot:
        await open_the_report(pilot)
        monkeypatch.delenv("DISPLAY", raising=False)
        await pilot.press("o")
        await settled(pilot)
        assert "no desktop handler here" in shown[-1].message
        monkeypatch.setenv("DISPLAY", ":0")
        await pilot.press("o")
        await settled(pilot)
        for _ in range(100):
            if handed.with_suffix(".path").exists():
                break
            await pilot.pause(0.05)
    assert handed.read_bytes() == b"%PDF-1.4 sample\n" * 40
    given = Path(handed.with_suffix(".path").read_text().strip())
    assert given.name == "report.pdf"
    assert not given.parent.exists() or given.parent.stat().st_mode & 0o077 == 0
