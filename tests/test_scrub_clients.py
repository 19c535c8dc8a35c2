"""Every removal and rewrite of submission scrubbing, on what real mail clients send.

Each test runs on two kinds of message: the recordings in ``tests/data/clients/``
(swaks, neomutt, and Thunderbird written from its documented header set; see
the README there), and a fresh run of the real swaks and neomutt against the
box's real submission server in this session, so that the clients' current
output is what is proven scrubbed. Recorded messages are scrubbed with
:func:`scrub_submission`; live ones are what the server queued.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import pytest

from onionmail.config.box import ScrubSection
from onionmail.core.mail_address import parse_mail_address
from onionmail.message.rfc5322 import Message, parse_message
from onionmail.message.scrub import scrub_submission
from tests.leaks import host_identity_in
from tests.mail_clients import (
    ALICE,
    ALICE_ONION,
    ATTACHMENT_NAME,
    FIXTURES,
    RESEND_INPUT,
    Sent,
    run_neomutt,
    run_swaks,
    submission_server,
)

RECORDED = (
    "swaks",
    "swaks-attachment",
    "neomutt",
    "neomutt-attachment",
    "neomutt-resend",
    "thunderbird",
    "thunderbird-attachment",
)
LIVE = ("swaks", "swaks-attachment", "neomutt", "neomutt-attachment", "neomutt-resend")

HEADER_NAMES = {
    "swaks": ["Date", "To", "From", "Subject", "Message-Id", "X-Mailer"],
    "neomutt": [
        "Date",
        "From",
        "To",
        "Subject",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Disposition",
        "User-Agent",
    ],
    "neomutt-resend": [
        "Date",
        "From",
        "To",
        "Subject",
        "Message-ID",
        "X-Mozilla-Status",
        "X-Mozilla-Status2",
        "X-Account-Key",
        "X-UIDL",
        "Delivered-To",
        "Received",
        "Received",
        "Authentication-Results",
        "X-Originating-IP",
        "User-Agent",
        "MIME-Version",
        "Content-Type",
        "Content-Language",
        "Content-Disposition",
    ],
    "thunderbird": [
        "Message-ID",
        "Date",
        "MIME-Version",
        "User-Agent",
        "Content-Language",
        "To",
        "From",
        "Subject",
        "X-Priority",
        "Content-Type",
        "Content-Transfer-Encoding",
    ],
    "thunderbird-attachment": [
        "Content-Type",
        "Message-ID",
        "Date",
        "MIME-Version",
        "User-Agent",
        "Content-Language",
        "To",
        "From",
        "Subject",
    ],
}
HEADER_NAMES["swaks-attachment"] = HEADER_NAMES["swaks"] + ["MIME-Version", "Content-Type"]
HEADER_NAMES["neomutt-attachment"] = HEADER_NAMES["neomutt"]
"""What each client sent: the table of tests/data/clients/README.md."""

SENDER = parse_mail_address(ALICE)


@dataclass(frozen=True)
class Sample:
    """One client message: as sent, and as the box would send it on (default settings)."""

    label: str
    client: str
    raw: bytes
    scrubbed: bytes
    ehlo: str | None = None

    @property
    def before(self) -> Message:
        return parse_message(self.raw)

    @property
    def after(self) -> Message:
        return parse_message(self.scrubbed)


@pytest.fixture(scope="module")
def live_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Sent]:
    """swaks and neomutt, run once per module against the real submission server."""
    work = tmp_path_factory.mktemp("clients")
    with submission_server() as record:
        runs = [
            run_swaks(record, work),
            run_swaks(record, work, attach=True),
            run_neomutt(record, work),
            run_neomutt(record, work, attach=True),
            run_neomutt(record, work, resend=RESEND_INPUT),
        ]
    return {sent.client: sent for sent in runs}


@pytest.fixture
def sample(request: pytest.FixtureRequest) -> Sample:
    kind, client = str(request.param).split(":", 1)
    if kind == "live":
        sent: Sent = request.getfixturevalue("live_runs")[client]
        return Sample(f"live {client}", client, sent.raw, sent.queued, sent.ehlo)
    raw = (FIXTURES / f"{client}.eml").read_bytes()
    scrubbed, _ = scrub_submission(raw, sender=SENDER)
    return Sample(f"recorded {client}", client, raw, scrubbed)


def samples(*clients: str, recorded: bool = True) -> pytest.MarkDecorator:
    """Parametrize ``sample`` over the recordings and live runs of ``clients`` (none: all)."""
    chosen = clients or RECORDED
    params = [pytest.param(f"recorded:{c}", id=f"recorded:{c}") for c in chosen if recorded]
    params += [
        pytest.param(f"live:{c}", id=f"live:{c}", marks=pytest.mark.client)
        for c in chosen
        if c in LIVE
    ]
    return pytest.mark.parametrize("sample", params, indirect=True)


def names(message: Message) -> list[str]:
    return [name for name, _ in message.fields]


def lower_names(message: Message) -> set[str]:
    return {name.lower() for name, _ in message.fields}


# --- what the clients send --------------------------------------------------------------


@pytest.mark.parametrize("client", RECORDED)
def test_recordings_hold_what_the_clients_sent(client: str) -> None:
    raw = (FIXTURES / f"{client}.eml").read_bytes()
    assert names(parse_message(raw)) == HEADER_NAMES[client]


@pytest.mark.client
@pytest.mark.parametrize("client", LIVE)
def test_live_clients_still_send_what_was_recorded(client: str, live_runs: dict[str, Sent]) -> None:
    live = names(parse_message(live_runs[client].raw))
    assert live == HEADER_NAMES[client], "the client changed: python -m tests.mail_clients"


# --- always removed: trace fields -------------------------------------------------------


@samples("neomutt-resend")
def test_received_is_removed(sample: Sample) -> None:
    assert len(sample.before.get_all("Received")) == 2
    assert sample.after.get_all("Received") == []
    for leak in (b"laptop.home.arpa", b"198.51.100.7", b"192.168.1.20", b"203.0.113.25"):
        assert leak in sample.raw and leak not in sample.scrubbed


@samples("neomutt-resend")
def test_x_originating_ip_is_removed(sample: Sample) -> None:
    assert sample.before.get("X-Originating-IP") == b"[198.51.100.7]"
    assert sample.after.get("X-Originating-IP") is None


@samples("neomutt-resend")
def test_other_trace_fields_of_a_resent_message_are_removed(sample: Sample) -> None:
    for name in ("Delivered-To", "Authentication-Results"):
        assert sample.before.get(name) is not None
        assert sample.after.get(name) is None, name
    assert b"example.net" not in sample.scrubbed


# --- removed by default: what names the client ------------------------------------------


@samples("neomutt", "neomutt-attachment", "neomutt-resend", "thunderbird", "thunderbird-attachment")
def test_user_agent_is_removed(sample: Sample) -> None:
    assert sample.before.get("User-Agent") is not None
    assert sample.after.get("User-Agent") is None
    for marker in (b"NeoMutt", b"Thunderbird", b"Gecko", b"X11"):
        assert marker not in sample.scrubbed


@samples("swaks", "swaks-attachment")
def test_x_mailer_is_removed(sample: Sample) -> None:
    assert b"swaks" in (sample.before.get("X-Mailer") or b"")
    assert sample.after.get("X-Mailer") is None
    assert b"swaks" not in sample.scrubbed


@samples("neomutt-resend")
def test_thunderbird_folder_fields_are_removed(sample: Sample) -> None:
    fields = ("X-Mozilla-Status", "X-Mozilla-Status2", "X-Account-Key", "X-UIDL")
    assert all(sample.before.get(name) is not None for name in fields)
    assert not {name for name in lower_names(sample.after) if name.startswith("x-")}


@samples("thunderbird")
def test_x_priority_is_the_users_choice_and_kept(sample: Sample) -> None:
    assert sample.after.get("X-Priority") == b"2 (High)"
    removed, _ = scrub_submission(
        sample.raw, sender=SENDER, settings=ScrubSection(extra_remove_headers=("X-Priority",))
    )
    assert parse_message(removed).get("X-Priority") is None


@samples("thunderbird", "neomutt")
def test_keep_headers_sends_the_user_agent_when_asked(sample: Sample) -> None:
    kept, _ = scrub_submission(
        sample.raw, sender=SENDER, settings=ScrubSection(keep_headers=("User-Agent",))
    )
    assert parse_message(kept).get("User-Agent") == sample.before.get("User-Agent")


# --- Content-Language: removed unless configured ----------------------------------------


@samples("thunderbird", "thunderbird-attachment", "neomutt-resend")
def test_content_language_is_removed_by_default(sample: Sample) -> None:
    assert sample.before.get("Content-Language") == b"en-US"
    assert sample.after.get("Content-Language") is None


@samples("thunderbird", "thunderbird-attachment", "neomutt-resend")
def test_content_language_is_kept_when_configured(sample: Sample) -> None:
    kept, _ = scrub_submission(
        sample.raw, sender=SENDER, settings=ScrubSection(remove_content_language=False)
    )
    assert parse_message(kept).get("Content-Language") == b"en-US"


# --- rewritten: Message-ID and Date -----------------------------------------------------


@samples()
def test_message_id_is_regenerated_at_random_on_the_onion(sample: Sample) -> None:
    old = (sample.before.get("Message-ID") or b"").decode()
    local, _, host = old.strip("<>").partition("@")
    new = (sample.after.get("Message-ID") or b"").decode()
    assert re.fullmatch(rf"<[0-9a-f]{{32}}@{re.escape(ALICE_ONION)}>", new), new
    assert local.encode() not in sample.scrubbed
    if host != ALICE_ONION:  # swaks and neomutt: this machine; saved-message: laptop.home.arpa
        assert not re.search(rf"\b{re.escape(host)}\b".encode(), sample.scrubbed), host
    again, _ = scrub_submission(sample.raw, sender=SENDER)
    assert parse_message(again).get("Message-ID") != new.encode()


@samples()
def test_date_is_put_in_utc_without_seconds(sample: Sample) -> None:
    sent = email.utils.parsedate_to_datetime((sample.before.get("Date") or b"").decode())
    assert sent.utcoffset() and sent.utcoffset().total_seconds() != 0  # type: ignore[union-attr]
    expected = sent.astimezone(UTC).replace(second=0)
    assert sample.after.get("Date") == email.utils.format_datetime(expected, usegmt=True).encode()


@samples()
@pytest.mark.parametrize("rounding", [1, 900, 3600])
def test_date_rounding_is_configurable(sample: Sample, rounding: int) -> None:
    sent = email.utils.parsedate_to_datetime((sample.before.get("Date") or b"").decode())
    scrubbed, _ = scrub_submission(
        sample.raw, sender=SENDER, settings=ScrubSection(date_rounding=rounding)
    )
    stamped = email.utils.parsedate_to_datetime(parse_message(scrubbed).get("Date").decode())  # type: ignore[union-attr]
    assert stamped.utcoffset() is not None and stamped.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert 0 <= (sent - stamped).total_seconds() < rounding
    of_day = stamped.hour * 3600 + stamped.minute * 60 + stamped.second
    assert of_day % rounding == 0


# --- the EHLO name, and nothing added ---------------------------------------------------


@samples(*LIVE, recorded=False)
def test_ehlo_name_never_reaches_the_message(sample: Sample) -> None:
    assert sample.ehlo  # swaks and neomutt greet with this machine's host name
    pattern = rf"(?<![A-Za-z0-9-]){re.escape(sample.ehlo)}(?![A-Za-z0-9-])".encode()
    assert not re.search(pattern, sample.scrubbed, re.I)
    assert host_identity_in(sample.scrubbed) == []


@pytest.mark.client
def test_a_chosen_ehlo_name_is_not_written_into_the_message(tmp_path: Path) -> None:
    with submission_server() as record:
        sent = run_swaks(record, tmp_path, helo="alice-laptop.home.arpa")
    assert sent.ehlo == "alice-laptop.home.arpa"
    assert b"alice-laptop" not in sent.queued and b"127.0.0.1" not in sent.queued


@samples()
def test_the_box_adds_no_field(sample: Sample) -> None:
    assert lower_names(sample.after) <= lower_names(sample.before)
    assert sample.after.get("Received") is None


# --- kept: the user's fields and the body -----------------------------------------------


@samples()
def test_user_fields_and_body_are_kept(sample: Sample) -> None:
    for name in ("From", "To", "Subject", "MIME-Version", "Content-Type"):
        assert sample.after.get_all(name) == sample.before.get_all(name), name
    assert sample.after.body == sample.before.body


@samples("swaks-attachment", "neomutt-attachment", "thunderbird-attachment")
def test_attachment_names_are_not_scrubbed(sample: Sample) -> None:
    assert f'filename="{ATTACHMENT_NAME}"'.encode() in sample.after.body
    assert sample.after.body == sample.before.body


# --- the server applies [scrub] ---------------------------------------------------------


@pytest.mark.client
def test_submission_server_applies_the_scrub_settings(tmp_path: Path) -> None:
    settings = ScrubSection(
        date_rounding=3600, remove_content_language=False, keep_headers=("User-Agent",)
    )
    with submission_server(settings) as record:
        sent = run_neomutt(record, tmp_path, resend=RESEND_INPUT)
    queued = parse_message(sent.queued)
    assert queued.get("Content-Language") == b"en-US"
    assert b"Thunderbird/115" in (queued.get("User-Agent") or b"")
    assert re.search(rb":00:00 GMT$", queued.get("Date") or b"")
    assert queued.get("Received") is None and queued.get("X-Originating-IP") is None
