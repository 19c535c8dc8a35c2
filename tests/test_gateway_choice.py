"""Which gateway sends clearnet mail is the user's explicit choice (``[gateway] sending``).

Registering with a second gateway used to put it first in ``[gateway]``,
which silently made it the sending one (and changed the From of clearnet
mail). Now registering never changes the choice; ``onionmail gateway use``
does, and status, the TUI and routing all follow it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onionmail.box.api import BoxApi
from onionmail.config.box import load_config
from onionmail.core.errors import ConfigError
from onionmail.gateway_link.client import record_registration, use_gateway
from onionmail.seal.identity import Identity
from tests.box_process import create_test_box
from tui.screens.status import gateways_text

FIRST, SECOND = Identity.generate().onion_address, Identity.generate().onion_address


def onionmail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onionmail.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def box(tmp_path: Path) -> Path:
    box_dir = create_test_box(tmp_path / "alice", "alice").box_dir
    record_registration(box_dir, FIRST, "alice@one.example")
    return box_dir


def test_a_second_registration_leaves_the_sending_gateway_as_it_was(box: Path) -> None:
    assert load_config(box).gateway.sending_gateway == FIRST
    record_registration(box, SECOND, "alice@two.example")
    gateway = load_config(box).gateway
    assert gateway.sending_gateway == FIRST
    assert gateway.onions == {FIRST, SECOND}  # both relay clearnet mail to the box
    api = BoxApi(box)
    assert api.route("bob@clear.example") == FIRST
    sending = api.sending_gateway()
    assert sending is not None and sending.alias == "alice@one.example"
    shown = str(gateways_text(tuple(api.gateway_registrations({}))))
    assert shown.index("alice@one.example  sends clearnet mail") < shown.index(
        "alice@two.example  receives only"
    )


def test_gateway_use_switches_and_status_says_which_sends(box: Path) -> None:
    record_registration(box, SECOND, "alice@two.example")
    used = onionmail("gateway", "use", "--dir", str(box), "--gateway", SECOND)
    assert used.returncode == 0, used.stderr
    assert f"clearnet mail now goes through {SECOND}, from alice@two.example" in used.stdout
    assert load_config(box).gateway.sending_gateway == SECOND
    assert BoxApi(box).route("bob@clear.example") == SECOND
    status = onionmail("status", "--dir", str(box))
    assert f"gateway:     alice@two.example at {SECOND} (sends clearnet mail)" in status.stdout
    assert f"gateway:     alice@one.example at {FIRST} (receives only)" in status.stdout
    # registering again with the first one (a renewal) does not take the choice back
    record_registration(box, FIRST, "alice@one.example")
    assert load_config(box).gateway.sending_gateway == SECOND


def test_a_gateway_not_registered_cannot_be_used(box: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[gateway\] has no .* register with it first"):
        use_gateway(box, SECOND)
    refused = onionmail("gateway", "use", "--dir", str(box), "--gateway", SECOND)
    assert refused.returncode != 0 and "register with it first" in refused.stderr
    assert load_config(box).gateway.sending_gateway == FIRST


def test_two_gateways_and_no_choice_is_a_config_error_naming_file_and_key(box: Path) -> None:
    config = box / "onionmail.toml"
    text = config.read_text().replace(
        "[gateway]\n", f'[gateway]\n"{SECOND}" = "alice@two.example"\n', 1
    )
    config.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(box)
    assert str(config) in str(error.value) and "no sending" in str(error.value)
    assert "onionmail gateway use" in str(error.value)
