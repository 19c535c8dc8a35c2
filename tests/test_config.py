"""Config: typed, validated, and every error names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmail.config import CONFIG_NAME, load_config, render_config
from onionmail.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / CONFIG_NAME).write_text(text)
    return tmp_path


def test_rendered_config_loads_with_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, render_config(("alice",), 0, "/x/testnet")))
    assert config.box.local_parts == ("alice",)
    assert config.submission.port == 0
    assert config.tor.testnet == "/x/testnet"
    assert config.delivery.max_lifetime == 5 * 24 * 3600
    assert config.box_dir == tmp_path


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="onionmail init"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[submission]\nport = 'x'\n", "[submission] port: expected an integer"),
        ("[submission]\nprot = 25\n", "[submission] prot: unknown key"),
        ("[mystery]\n", "[mystery]: unknown section"),
        ("[submission]\nhost = '0.0.0.0'\n", "[submission] host: must be a loopback"),
        ("[box]\nlocal_parts = ['Al ice']\n", "[box] local_parts"),
        ("[box]\nlocal_parts = []\n", "[box] local_parts"),
        ("[tor]\nmode = 'bridge'\n", "[tor] mode"),
        ("[tor]\nmode = 'attach'\n", "[tor] control_socket"),
        ("[inbound]\nrequire_seal_for_onion_senders = 1\n", "expected true or false"),
        ("[delivery]\nretry_initial = 0\n", "[delivery] retry_initial"),
        ("box = 3\n", "[box]: expected a table"),
        ("[box\n", "not valid TOML"),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(tmp_path / CONFIG_NAME) in str(info.value)
    assert fragment in str(info.value)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    with pytest.raises(AttributeError):
        config.submission.port = 1  # type: ignore[misc]
