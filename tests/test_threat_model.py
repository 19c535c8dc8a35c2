"""The threat model: completeness, JSON, the claims it makes, its layering and its prose."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

from threat_model import (
    NOT_ON_PATH,
    Cell,
    Item,
    LeakMatrix,
    MailPath,
    MatrixFormatError,
    MessageTraits,
    ModelConfig,
    ModelConfigError,
    Observer,
    Timing,
    TraitsError,
    Visibility,
    leaks,
    observers_for,
    path_prose,
    render_table,
)

V, E, P, D, H = (
    Visibility.VISIBLE,
    Visibility.ENCRYPTED,
    Visibility.PADDED,
    Visibility.DELAYED,
    Visibility.HIDDEN,
)
PATHS_DIR = Path(__file__).resolve().parent.parent / "threat_model" / "paths"
GATEWAY_PATHS = (MailPath.GATEWAY_CLEARNET, MailPath.GATEWAY_CLEARNET_OPENPGP)
ONION_PATHS = (MailPath.ONION_SEALED, MailPath.ONION_PLAIN)
ADDRESSES = (Item.SENDER_ADDRESS, Item.RECIPIENT_ADDRESS)
CONTENT = (Item.SUBJECT, Item.BODY, Item.ATTACHMENT_NAMES)
TOR_SIDE = (Observer.SENDER_NETWORK, Observer.TOR_GUARD, Observer.TOR_RELAYS)
WITH_ATTACHMENTS = MessageTraits(has_attachments=True)

ALL_CONFIGS = [
    ModelConfig(padding, timing, tls, scrubbing, passphrase)
    for padding, timing, tls, scrubbing, passphrase in itertools.product(
        (True, False), Timing, (True, False), (True, False), (True, False)
    )
]
ALL_TRAITS = [
    MessageTraits(has_attachments=a, direction=d)
    for a, d in itertools.product((True, False), ("sent", "received"))
]


def every_matrix() -> list[tuple[MailPath, MessageTraits, ModelConfig, LeakMatrix]]:
    return [
        (path, traits, config, leaks(path, traits, config))
        for path, traits, config in itertools.product(MailPath, ALL_TRAITS, ALL_CONFIGS)
    ]


# -- completeness ---------------------------------------------------------------


def test_every_cell_exists_with_a_reason_for_every_combination() -> None:
    for path, traits, config, matrix in every_matrix():
        assert matrix.path is path
        assert len(matrix.cells) == len(Observer) * len(Item)
        for observer, item in itertools.product(Observer, Item):
            cell = matrix.cell(observer, item)
            assert isinstance(cell.visibility, Visibility)
            assert cell.reason.strip(), (path, traits, config, observer, item)


def test_absent_observers_are_hidden_not_on_this_path() -> None:
    for path, _traits, _config, matrix in every_matrix():
        present = observers_for(path)
        for observer, item in itertools.product(Observer, Item):
            cell = matrix.cell(observer, item)
            if observer in present:
                assert cell.reason != NOT_ON_PATH, (path, observer, item)
            else:
                assert cell == Cell(H, NOT_ON_PATH), (path, observer, item)


def test_observers_on_each_path() -> None:
    for path in ONION_PATHS:
        assert Observer.GATEWAY_OPERATOR not in observers_for(path)
        assert Observer.GATEWAY_MX_NETWORK not in observers_for(path)
        assert Observer.RECIPIENT_PROVIDER not in observers_for(path)
    for path in GATEWAY_PATHS:
        assert {Observer.GATEWAY_OPERATOR, Observer.RECIPIENT_PROVIDER} <= set(observers_for(path))
    inbound = observers_for(MailPath.CLEARNET_INBOUND)
    assert Observer.SENDER_PROVIDER in inbound and Observer.GATEWAY_OPERATOR in inbound
    for path in MailPath:
        on_path = observers_for(path)
        assert list(on_path) == [o for o in Observer if o in on_path], "in Observer order"
        for always in (Observer.RECIPIENT_BOX, Observer.BOX_SEIZURE, Observer.BOX_LOGS):
            assert always in on_path


def test_no_attachments_means_nothing_to_see() -> None:
    for path in MailPath:
        matrix = leaks(path, MessageTraits(has_attachments=False))
        for observer in observers_for(path):
            cell = matrix.cell(observer, Item.ATTACHMENT_NAMES)
            assert cell == Cell(H, "this message has no attachments")


def test_bad_direction_is_refused() -> None:
    with pytest.raises(TraitsError, match="direction must be 'sent' or 'received'"):
        MessageTraits(direction="sideways")
    assert issubclass(TraitsError, ValueError)


def test_timing_is_checked_and_accepted_as_its_name() -> None:
    assert ModelConfig(timing="delay").timing is Timing.DELAY  # type: ignore[arg-type]
    held = leaks(MailPath.ONION_SEALED, config=ModelConfig(timing="batch"))  # type: ignore[arg-type]
    assert held.cell(Observer.GLOBAL_PASSIVE, Item.SEND_TIME).visibility is D
    with pytest.raises(ModelConfigError, match="timing must be one of 'immediate'"):
        ModelConfig(timing="whenever")  # type: ignore[arg-type]


def test_visible_to_lists_only_visible_items() -> None:
    matrix = leaks(MailPath.ONION_SEALED, WITH_ATTACHMENTS)
    assert matrix.visible_to(Observer.TOR_RELAYS) == frozenset({Item.SEND_TIME})
    assert matrix.visible_to(Observer.GATEWAY_OPERATOR) == frozenset()
    recipient = matrix.visible_to(Observer.RECIPIENT_BOX)
    assert {*CONTENT, *ADDRESSES, Item.SIZE, Item.RELATION} <= recipient
    assert Item.SENDER_IP not in recipient


# -- JSON -----------------------------------------------------------------------


@pytest.mark.parametrize("path", list(MailPath))
def test_json_round_trip(path: MailPath) -> None:
    config = ModelConfig(padding=False, timing=Timing.BATCH, starttls_enforced=False)
    matrix = leaks(path, WITH_ATTACHMENTS, config)
    text = json.dumps(matrix.to_json())
    again = LeakMatrix.from_json(json.loads(text))
    assert again == matrix
    assert hash(again) == hash(matrix)
    assert again.cell(Observer.BOX_LOGS, Item.SEND_TIME) == matrix.cell(
        Observer.BOX_LOGS, Item.SEND_TIME
    )


def test_json_layout_is_keyed_by_names() -> None:
    data = leaks(MailPath.ONION_SEALED).to_json()
    assert data["version"] == 1 and data["path"] == "onion-sealed"
    cell = data["cells"]["tor-relays"]["sender-address"]
    assert cell["visibility"] == "encrypted" and cell["reason"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d.update(path="pigeon"), "unknown path 'pigeon'"),
        (lambda d: d.update(version=99), "unsupported leak matrix version 99"),
        (lambda d: d["cells"].pop("tor-guard"), "observer tor-guard is missing"),
        (lambda d: d["cells"]["tor-guard"].pop("size"), r"cells\.tor-guard\.size: missing"),
        (
            lambda d: d["cells"]["box-logs"]["body"].update(visibility="sort-of"),
            "unknown visibility 'sort-of'",
        ),
        (
            lambda d: d["cells"]["box-logs"]["body"].update(reason=" "),
            "the reason must be a non-empty string",
        ),
        (lambda d: d["cells"].update(pigeon={}), "unknown observer 'pigeon'"),
    ],
)
def test_damaged_json_is_refused_with_what_is_wrong(damage: object, message: str) -> None:
    data = json.loads(json.dumps(leaks(MailPath.ONION_SEALED).to_json()))
    damage(data)  # type: ignore[operator]
    with pytest.raises(MatrixFormatError, match=message):
        LeakMatrix.from_json(data)


def test_an_incomplete_matrix_cannot_be_built() -> None:
    cells = dict(leaks(MailPath.ONION_PLAIN).cells)
    del cells[Observer.BOX_LOGS, Item.BODY]
    with pytest.raises(MatrixFormatError, match="lacks 1 cell"):
        LeakMatrix(MailPath.ONION_PLAIN, cells)


def test_cells_are_read_only() -> None:
    matrix = leaks(MailPath.ONION_SEALED)
    with pytest.raises(TypeError):
        matrix.cells[Observer.BOX_LOGS, Item.BODY] = Cell(V, "oops")  # type: ignore[index]


# -- claims -----------------------------------------------------------------------


def test_sealed_path_relays_guards_and_networks_never_see_addresses() -> None:
    for traits, config in itertools.product(ALL_TRAITS, ALL_CONFIGS):
        matrix = leaks(MailPath.ONION_SEALED, traits, config)
        for observer, item in itertools.product((*TOR_SIDE, Observer.GLOBAL_PASSIVE), ADDRESSES):
            assert matrix.cell(observer, item).visibility is E, (observer, item, config)
        for observer, item in itertools.product(TOR_SIDE, CONTENT):
            assert matrix.cell(observer, item).visibility is not V


def test_sealed_path_ip_addresses() -> None:
    matrix = leaks(MailPath.ONION_SEALED)
    assert matrix.cell(Observer.TOR_GUARD, Item.SENDER_IP).visibility is V
    assert matrix.cell(Observer.TOR_GUARD, Item.RECIPIENT_ADDRESS).visibility is E
    assert matrix.cell(Observer.TOR_GUARD, Item.RELATION).visibility is H
    for item in (Item.SENDER_IP, Item.RECIPIENT_IP, Item.RELATION):
        assert matrix.cell(Observer.TOR_RELAYS, item).visibility is H
    assert matrix.cell(Observer.RECIPIENT_BOX, Item.SENDER_IP).visibility is H
    assert matrix.cell(Observer.SENDER_NETWORK, Item.RECIPIENT_IP).visibility is H


def test_gateway_without_openpgp_operator_reads_the_subject() -> None:
    matrix = leaks(MailPath.GATEWAY_CLEARNET, WITH_ATTACHMENTS)
    for item in (*CONTENT, *ADDRESSES, Item.SIZE, Item.RELATION):
        assert matrix.cell(Observer.GATEWAY_OPERATOR, item).visibility is V, item
        assert matrix.cell(Observer.RECIPIENT_PROVIDER, item).visibility is V, item
    assert matrix.cell(Observer.GATEWAY_OPERATOR, Item.SENDER_IP).visibility is H


def test_gateway_with_openpgp_hides_content_but_not_addresses_or_size() -> None:
    matrix = leaks(MailPath.GATEWAY_CLEARNET_OPENPGP, WITH_ATTACHMENTS)
    for observer in (Observer.GATEWAY_OPERATOR, Observer.RECIPIENT_PROVIDER):
        for item in CONTENT:
            assert matrix.cell(observer, item).visibility is E, (observer, item)
        for item in (*ADDRESSES, Item.SIZE, Item.RELATION):
            assert matrix.cell(observer, item).visibility is V, (observer, item)
    assert "'...'" in matrix.cell(Observer.GATEWAY_OPERATOR, Item.SUBJECT).reason
    assert "does not pad" in matrix.cell(Observer.GATEWAY_OPERATOR, Item.SIZE).reason


def test_padding_off_shows_the_size() -> None:
    for path in (MailPath.ONION_SEALED, *GATEWAY_PATHS, MailPath.CLEARNET_INBOUND):
        on = leaks(path, config=ModelConfig(padding=True))
        off = leaks(path, config=ModelConfig(padding=False))
        for observer in (Observer.TOR_GUARD, Observer.TOR_RELAYS):
            assert on.cell(observer, Item.SIZE).visibility is P, (path, observer)
            assert "4096" in on.cell(observer, Item.SIZE).reason
            assert off.cell(observer, Item.SIZE).visibility is V, (path, observer)
    plain = leaks(MailPath.ONION_PLAIN, config=ModelConfig(padding=True))
    assert plain.cell(Observer.TOR_RELAYS, Item.SIZE).visibility is V


def test_clearnet_legs_are_never_padded() -> None:
    for path in (*GATEWAY_PATHS, MailPath.CLEARNET_INBOUND):
        matrix = leaks(path)
        for observer in (Observer.GATEWAY_MX_NETWORK, Observer.GLOBAL_PASSIVE):
            assert matrix.cell(observer, Item.SIZE).visibility is V, (path, observer)


@pytest.mark.parametrize("timing", [Timing.DELAY, Timing.BATCH])
def test_timing_policy_delays_the_send_time_for_the_global_adversary(timing: Timing) -> None:
    for path in (*ONION_PATHS, *GATEWAY_PATHS):
        immediate = leaks(path)
        held = leaks(path, config=ModelConfig(timing=timing))
        for observer in (Observer.GLOBAL_PASSIVE, *TOR_SIDE):
            assert immediate.cell(observer, Item.SEND_TIME).visibility is V, (path, observer)
            assert held.cell(observer, Item.SEND_TIME).visibility is D, (path, observer)
        # The Date field still says when the message was written ...
        assert held.cell(Observer.RECIPIENT_BOX, Item.SEND_TIME).visibility is V
        # ... and holding a transfer does not stop both ends from seeing it at once.
        assert held.cell(Observer.GLOBAL_PASSIVE, Item.RELATION).visibility is V


def test_no_timing_policy_on_mail_nobody_onionmail_sent() -> None:
    config = ModelConfig(timing=Timing.DELAY)
    received_plain = leaks(MailPath.ONION_PLAIN, MessageTraits(direction="received"), config)
    inbound = leaks(MailPath.CLEARNET_INBOUND, config=config)
    for matrix in (received_plain, inbound):
        assert matrix.cell(Observer.GLOBAL_PASSIVE, Item.SEND_TIME).visibility is V


def test_starttls_enforcement_decides_what_the_mx_network_reads() -> None:
    path = MailPath.GATEWAY_CLEARNET
    enforced = leaks(path, WITH_ATTACHMENTS, ModelConfig(starttls_enforced=True))
    strippable = leaks(path, WITH_ATTACHMENTS, ModelConfig(starttls_enforced=False))
    for item in (*CONTENT, *ADDRESSES):
        assert enforced.cell(Observer.GATEWAY_MX_NETWORK, item).visibility is E, item
        assert strippable.cell(Observer.GATEWAY_MX_NETWORK, item).visibility is V, item
    assert "strip" in strippable.cell(Observer.GATEWAY_MX_NETWORK, Item.BODY).reason
    # Inbound the gateway offers STARTTLS but never requires it: strippable either way.
    for enforced_outbound in (True, False):
        inbound = leaks(
            MailPath.CLEARNET_INBOUND,
            WITH_ATTACHMENTS,
            ModelConfig(starttls_enforced=enforced_outbound),
        )
        for item in (*CONTENT, *ADDRESSES):
            assert inbound.cell(Observer.GATEWAY_MX_NETWORK, item).visibility is V, item
        assert "strip" in inbound.cell(Observer.GATEWAY_MX_NETWORK, Item.BODY).reason
    openpgp = leaks(
        MailPath.GATEWAY_CLEARNET_OPENPGP, WITH_ATTACHMENTS, ModelConfig(starttls_enforced=False)
    )
    assert openpgp.cell(Observer.GATEWAY_MX_NETWORK, Item.BODY).visibility is E
    assert openpgp.cell(Observer.GATEWAY_MX_NETWORK, Item.RECIPIENT_ADDRESS).visibility is V


def test_recipient_box_sees_the_body_on_every_path() -> None:
    for path, traits, _config, matrix in every_matrix():
        for item in (Item.BODY, Item.SUBJECT, Item.SIZE, Item.RELATION):
            assert matrix.cell(Observer.RECIPIENT_BOX, item).visibility is V, (path, traits, item)


def test_box_logs_never_carry_addresses_or_content() -> None:
    for path, _traits, _config, matrix in every_matrix():
        for item in Item:
            expected = V if item is Item.SEND_TIME else H
            assert matrix.cell(Observer.BOX_LOGS, item).visibility is expected, (path, item)


def test_with_a_sent_copy_the_sending_box_s_disk_shows_the_message() -> None:
    """[submission] keep_sent (the default): the .Sent copy lies in clear like received mail,
    so the passphrase no longer hides a sent message from whoever takes the disk."""
    for path, passphrase in itertools.product((*ONION_PATHS, *GATEWAY_PATHS), (True, False)):
        matrix = leaks(path, WITH_ATTACHMENTS, ModelConfig(key_passphrase=passphrase))
        for item in (*CONTENT, Item.RECIPIENT_ADDRESS, Item.RELATION, Item.SIZE):
            cell = matrix.cell(Observer.BOX_SEIZURE, item)
            assert cell.visibility is V and ".Sent" in cell.reason, (path, item)


def test_seizure_of_the_sending_box_depends_on_the_passphrase() -> None:
    """Without a sent copy (``keep_sent = false``) only the queue holds a sent message."""
    for path in (*ONION_PATHS, *GATEWAY_PATHS):
        bare = leaks(path, WITH_ATTACHMENTS, ModelConfig(key_passphrase=False, sent_copy=False))
        locked = leaks(path, WITH_ATTACHMENTS, ModelConfig(key_passphrase=True, sent_copy=False))
        for item in CONTENT:
            assert bare.cell(Observer.BOX_SEIZURE, item).visibility is V, (path, item)
            assert locked.cell(Observer.BOX_SEIZURE, item).visibility is E, (path, item)
        # The queue file is never padded, and its clear header names the destination onion.
        assert locked.cell(Observer.BOX_SEIZURE, Item.SIZE).visibility is V
        expected = V if path in ONION_PATHS else E
        assert locked.cell(Observer.BOX_SEIZURE, Item.RECIPIENT_ADDRESS).visibility is expected
        assert "clear header" in locked.cell(Observer.BOX_SEIZURE, Item.RECIPIENT_ADDRESS).reason


def test_seizure_of_the_receiving_box_finds_the_maildir_in_clear() -> None:
    for path, passphrase in itertools.product(
        (*ONION_PATHS, MailPath.CLEARNET_INBOUND), (True, False)
    ):
        traits = MessageTraits(has_attachments=True, direction="received")
        matrix = leaks(path, traits, ModelConfig(key_passphrase=passphrase))
        for item in (*CONTENT, *ADDRESSES, Item.RELATION):
            assert matrix.cell(Observer.BOX_SEIZURE, item).visibility is V, (path, item)
        assert "Maildir" in matrix.cell(Observer.BOX_SEIZURE, Item.BODY).reason


def test_scrubbing_removes_the_client_fingerprint() -> None:
    for path in (*ONION_PATHS, *GATEWAY_PATHS):
        scrubbed = leaks(path, config=ModelConfig(scrubbing=True))
        kept = leaks(path, config=ModelConfig(scrubbing=False))
        for observer in observers_for(path):
            assert scrubbed.cell(observer, Item.CLIENT_FINGERPRINT).visibility is H, observer
        assert kept.cell(Observer.RECIPIENT_BOX, Item.CLIENT_FINGERPRINT).visibility is V
        assert kept.cell(Observer.TOR_RELAYS, Item.CLIENT_FINGERPRINT).visibility is E
    openpgp = leaks(MailPath.GATEWAY_CLEARNET_OPENPGP)
    assert "Version:" in openpgp.cell(Observer.RECIPIENT_PROVIDER, Item.CLIENT_FINGERPRINT).reason


def test_message_id_host_names_the_onion_only_past_the_gateway() -> None:
    for path in ONION_PATHS:
        for config in (ModelConfig(scrubbing=True), ModelConfig(scrubbing=False)):
            matrix = leaks(path, config=config)
            for observer in observers_for(path):
                if observer is Observer.SENDER_PROVIDER:
                    continue
                assert matrix.cell(observer, Item.MESSAGE_ID_HOST).visibility is H, observer
    for path in GATEWAY_PATHS:
        matrix = leaks(path)
        assert matrix.cell(Observer.GATEWAY_OPERATOR, Item.MESSAGE_ID_HOST).visibility is H
        # The box (and the gateway) move it to the alias's domain: the clearnet side never
        # learns the onion behind the alias (tests/test_leaks_gateway_wire.py).
        for observer in (
            Observer.RECIPIENT_PROVIDER,
            Observer.RECIPIENT_BOX,
            Observer.GATEWAY_MX_NETWORK,
            Observer.GLOBAL_PASSIVE,
        ):
            cell = matrix.cell(observer, Item.MESSAGE_ID_HOST)
            assert cell.visibility is H and "alias's domain" in cell.reason, observer


def test_clearnet_inbound() -> None:
    matrix = leaks(MailPath.CLEARNET_INBOUND, WITH_ATTACHMENTS)
    for observer in (Observer.SENDER_PROVIDER, Observer.GATEWAY_OPERATOR):
        for item in (*CONTENT, *ADDRESSES, Item.CLIENT_FINGERPRINT):
            assert matrix.cell(observer, item).visibility is V, (observer, item)
        assert matrix.cell(observer, Item.RECIPIENT_IP).visibility is H
    assert "ciphertext" in matrix.cell(Observer.GATEWAY_OPERATOR, Item.BODY).reason
    assert matrix.cell(Observer.TOR_RELAYS, Item.BODY).visibility is E
    assert matrix.cell(Observer.TOR_GUARD, Item.RECIPIENT_IP).visibility is V
    assert matrix.cell(Observer.TOR_GUARD, Item.SENDER_IP).visibility is H
    # The path fixes the direction: this is always mail the box received.
    assert matrix == leaks(
        MailPath.CLEARNET_INBOUND, MessageTraits(has_attachments=True, direction="received")
    )


def test_plain_peer_holds_everything_in_clear() -> None:
    sent = leaks(MailPath.ONION_PLAIN, WITH_ATTACHMENTS)
    assert "plain SMTP server" in sent.cell(Observer.RECIPIENT_BOX, Item.BODY).reason
    assert sent.cell(Observer.SENDER_PROVIDER, Item.BODY).visibility is H
    received = leaks(
        MailPath.ONION_PLAIN, MessageTraits(has_attachments=True, direction="received")
    )
    assert received.cell(Observer.SENDER_PROVIDER, Item.BODY).visibility is V
    assert received.cell(Observer.RECIPIENT_BOX, Item.CLIENT_FINGERPRINT).visibility is V


# -- rendering ------------------------------------------------------------------


def test_render_table_shows_the_observers_on_the_path_and_a_legend() -> None:
    matrix = leaks(MailPath.ONION_SEALED)
    text = render_table(matrix)
    lines = text.splitlines()
    assert lines[0].split()[0] == "observer" and "subj" in lines[0]
    for observer in observers_for(MailPath.ONION_SEALED):
        (row,) = [line for line in lines if line.split()[:1] == [str(observer)]]
        assert len(row.split()) == 1 + len(Item)
    assert "gateway-operator" not in "\n".join(lines[: 1 + len(observers_for(matrix.path))])
    assert "not on this path: sender-provider, gateway-operator" in text
    assert "legend: V visible" in text and ". hidden" in text
    assert " \u2014 " not in text


def test_render_table_with_reasons_lists_every_cell_on_the_path() -> None:
    matrix = leaks(MailPath.GATEWAY_CLEARNET_OPENPGP, WITH_ATTACHMENTS)
    text = render_table(matrix, reasons=True)
    cell = matrix.cell(Observer.GATEWAY_OPERATOR, Item.SUBJECT)
    assert f"gateway-operator / subject: encrypted \u2014 {cell.reason}" in text
    listed = [line for line in text.splitlines() if " \u2014 " in line]
    assert len(listed) == len(observers_for(matrix.path)) * len(Item)


# -- layering and prose -------------------------------------------------------------


def test_importing_threat_model_pulls_in_no_project_or_third_party_code() -> None:
    script = (
        "import json, sys\n"
        "before = set(sys.modules)\n"
        "import threat_model\n"
        "print(json.dumps(sorted(set(sys.modules) - before)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(result.stdout)
    tops = {name.split(".")[0] for name in loaded}
    for forbidden in ("onionmail", "gateway", "tui", "textual", "dns"):
        assert forbidden not in tops, f"threat_model imports {forbidden}"
    assert tops - {"threat_model"} <= set(sys.stdlib_module_names), tops


@pytest.mark.parametrize("path", list(MailPath))
def test_prose_exists_for_every_path_with_both_sections(path: MailPath) -> None:
    text = path_prose(path)
    assert text == (PATHS_DIR / f"{path}.md").read_text(encoding="utf-8")
    assert text.startswith(f"# {path}:")
    protects, _, does_not = text.partition("\n## Does not protect against\n")
    assert "\n## Protects against\n" in protects and does_not
    for section in (protects.split("\n## Protects against\n")[1], does_not):
        claims = [line for line in section.splitlines() if line.startswith("**")]
        assert claims, f"{path}: a section without a claim"
        for claim in claims:
            assert claim.endswith("**"), f"{path}: a claim is one bold line: {claim}"


def test_no_prose_without_a_path() -> None:
    assert sorted(p.stem for p in PATHS_DIR.glob("*.md")) == sorted(str(p) for p in MailPath)
