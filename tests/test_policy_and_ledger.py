"""The policy gate and the leak ledger (onionmail side of threat_model)."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import pytest

from onionmail.box.policy import check
from onionmail.box.policy_gate import LeakKeeper
from onionmail.config.box import parse_config
from onionmail.core.errors import ConfigError
from onionmail.core.mail_address import parse_mail_address
from onionmail.seal.identity import Identity
from onionmail.store.ledger import Ledger, ledger_key
from tests.smtp_client import RawSMTP, code
from threat_model import MailPath, leaks

ONION = Identity.generate().onion_address


def keeper(tmp_path: Path, policy: dict[str, object]) -> LeakKeeper:
    config = parse_config({"policy": policy}, tmp_path / "onionmail.toml")
    config = type(config)(**{**config.__dict__, "path": tmp_path / "onionmail.toml"})
    return LeakKeeper(config, b"\x07" * 32)


@pytest.mark.parametrize(
    ("path", "rule", "refused"),
    [
        (MailPath.ONION_SEALED, "never-clearnet", False),
        (MailPath.ONION_SEALED, "require-sealed", False),
        (MailPath.ONION_SEALED, "never-plaintext-subject", False),
        (MailPath.ONION_SEALED, "require-padding", False),
        (MailPath.ONION_PLAIN, "require-sealed", True),
        (MailPath.ONION_PLAIN, "never-clearnet", False),
        (MailPath.GATEWAY_CLEARNET, "never-clearnet", True),
        (MailPath.GATEWAY_CLEARNET, "never-plaintext-subject", True),
        (MailPath.GATEWAY_CLEARNET_OPENPGP, "never-clearnet", True),
    ],
)
def test_rules_against_the_model(path: MailPath, rule: str, refused: bool) -> None:
    violations = check(leaks(path), [rule])
    assert bool(violations) == refused, violations
    for violation in violations:
        assert violation.rule == rule and str(path) in violation.leak


def test_unknown_rule_and_bad_contact_are_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "onionmail.toml"
    with pytest.raises(ConfigError, match=r"\[policy\] rules: unknown rule 'never-ever'"):
        parse_config({"policy": {"rules": ["never-ever"]}}, path)
    with pytest.raises(ConfigError, match=r"\[policy\] contacts.'bob': expected an address"):
        parse_config({"policy": {"contacts": {"bob": ["require-sealed"]}}}, path)


def test_contact_rules_add_to_the_default(tmp_path: Path) -> None:
    policy = {
        "rules": ["never-clearnet"],
        "contacts": {ONION: ["require-padding"], f"bob@{ONION}": ["require-sealed"]},
    }
    config = parse_config({"policy": policy}, tmp_path / "onionmail.toml").policy
    assert config.rules_for(f"bob@{ONION}") == (
        "never-clearnet",
        "require-padding",
        "require-sealed",
    )
    assert config.rules_for(f"carol@{ONION}") == ("never-clearnet", "require-padding")
    assert config.rules_for("dave@example.org") == ("never-clearnet",)


def test_gate_names_the_rule_and_the_leak(tmp_path: Path) -> None:
    gate = keeper(tmp_path, {"rules": ["never-clearnet"], "contacts": {ONION: ["require-sealed"]}})
    assert gate.check_recipient(parse_mail_address(f"bob@{ONION}")) is None
    refusal = gate.check_recipient(parse_mail_address("dave@example.org"))
    assert refusal is not None and refusal.startswith("policy rule never-clearnet: ")
    assert "gateway" in refusal
    plain = gate.refuse_plain(f"bob@{ONION}")
    assert plain is not None and plain.startswith("policy rule require-sealed: ")
    assert gate.refuse_plain(f"bob@{Identity.generate().onion_address}") is None


async def test_submission_refuses_at_rcpt_with_the_rule(tmp_path: Path) -> None:
    from onionmail.box.submission import Stored, SubmissionHandler
    from tests.loopback_servers import credentials_for, serving, start_submission

    gate = keeper(tmp_path, {"rules": ["never-clearnet"]})

    def store(*_args: object) -> Stored:
        raise AssertionError("nothing may be queued")

    handler = SubmissionHandler(
        onion=ONION,
        local_parts=("alice",),
        credentials=credentials_for(tmp_path / "submission.json", "pw"),
        store=store,
        max_recipients=5,
        check_recipient=gate.check_recipient,
    )
    async with serving(start_submission(handler)) as port:
        client, _ = await RawSMTP.connect(port)
        await client.cmd("EHLO localhost")
        await client.cmd("AUTH PLAIN AGFsaWNlAHB3")  # \0alice\0pw
        assert code(await client.cmd(f"MAIL FROM:<alice@{ONION}>")) == 250
        reply = await client.cmd("RCPT TO:<dave@example.org>")
        assert reply.startswith("550 5.7.1 Refused by policy rule never-clearnet: "), reply
        await client.close()


def test_ledger_keeps_no_sensitive_value_and_needs_the_key(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger", ledger_key(b"\x01" * 32))
    message_id = f"8d1c0ffee@{ONION}"
    ledger.record(
        message_ids=[message_id],
        destination=ONION,
        direction="sent",
        matrix=leaks(MailPath.ONION_SEALED),
        state="queued",
        now=1_800_000_000,
    )
    ledger.record(
        message_ids=[message_id],
        destination=ONION,
        direction="sent",
        matrix=leaks(MailPath.ONION_PLAIN),
        state="delivered",
    )
    (entry,) = ledger.find(f"<{message_id}>")
    assert (entry.path, entry.state, entry.direction) == (MailPath.ONION_PLAIN, "delivered", "sent")
    for file in (tmp_path / "ledger").iterdir():
        text = file.read_text()
        assert ONION not in text and "8d1c0ffee" not in text
        assert oct(file.stat().st_mode & 0o777) == "0o600"
        assert set(json.loads(text)) == {
            "ids",
            "destination_hash",
            "direction",
            "day",
            "state",
            "matrix",
            "seal",
        }
    assert Ledger(tmp_path / "ledger", ledger_key(b"\x02" * 32)).find(message_id) == []


def test_a_ledger_entry_holds_its_whole_matrix(tmp_path: Path) -> None:
    """The matrix is encoded once per matrix and spliced into each entry: what is read back
    is the matrix that was recorded, for each of two paths in turn."""
    ledger = Ledger(tmp_path / "ledger", ledger_key(b"\x03" * 32))
    for path in (MailPath.ONION_SEALED, MailPath.CLEARNET_INBOUND):
        matrix = leaks(path)
        name = ledger.record(
            message_ids=[f"{path}@{ONION}"],
            destination=ONION,
            direction="received",
            matrix=matrix,
            state="stored",
        )
        raw = json.loads((tmp_path / "ledger" / f"{name}.json").read_bytes())
        assert raw["matrix"] == matrix.to_json() and raw["state"] == "stored"
        (entry,) = ledger.find(f"{path}@{ONION}")
        assert entry.matrix == matrix and entry.path is path


def test_plain_peer_refused_by_policy_bounces_before_mail_from(tmp_path: Path) -> None:
    """Checked at delivery: the plain peer gets EHLO and nothing else; the sender a DSN."""
    import asyncio

    from tests.test_delivery_agent import attempt_against

    seen: list[str] = []

    async def scenario() -> None:
        queue, sender_mail = await attempt_against(
            tmp_path,
            "250 OK",
            plain_refusal=lambda rcpt: "policy rule require-sealed: not sealed",
            commands=seen,
        )
        assert queue.states() == []
        (key,) = mailbox.Maildir(sender_mail, create=False).keys()
        dsn = mailbox.Maildir(sender_mail, create=False).get_bytes(key)
        assert b"policy rule require-sealed" in dsn

    asyncio.run(scenario())
    assert "MAIL" not in seen and "RCPT" not in seen


@pytest.mark.parametrize("passphrase", [None, b"correct horse battery staple"])
async def test_the_ledger_records_what_the_forecast_said_for_the_disk(
    tmp_path: Path, passphrase: bytes | None
) -> None:
    """Regression: 'onionmail run' never told the box its key was encrypted, so the ledger
    recorded box-seizure reading subject and body while 'leaks --to' predicted E. The box
    now reads it from its key file; the record after sending agrees with the forecast."""
    from onionmail.box.create import create_box
    from onionmail.box.daemon import Box
    from onionmail.config.box import load_config
    from onionmail.seal.identity import load_identity
    from onionmail.store.queue import QueuedMessage
    from threat_model import Item, Observer

    new = create_box(tmp_path / "alice", "alice", passphrase=passphrase, submission_port=0)
    config = new.box_dir / "onionmail.toml"  # no .Sent copy: the queue alone holds the mail
    config.write_text(config.read_text().replace("# keep_sent = true", "keep_sent = false"))
    identity = load_identity(new.box_dir / "keys" / "identity.key", passphrase)
    box = Box(load_config(new.box_dir), identity)  # as 'onionmail run' makes it
    bob = Identity.generate().onion_address
    rcpt = f"bob@{bob}"
    forecast = box.leaks.predicted(rcpt)
    message = b"Message-ID: <m1@x.onion>\r\nSubject: s\r\n\r\nhi\r\n"
    entry = QueuedMessage("q1", bob, new.address, (rcpt,), message, bytes(16), 0.0)
    await box.leaks.delivered(entry, seal_version=2)
    (recorded,) = box.leaks.find("m1@x.onion")
    assert recorded.seal == "v2"
    seized = (Observer.BOX_SEIZURE, Item.SUBJECT)
    assert recorded.matrix.cell(*seized) == forecast.cell(*seized)
    expected = "encrypted" if passphrase else "visible"
    assert str(recorded.matrix.cell(*seized).visibility) == expected
