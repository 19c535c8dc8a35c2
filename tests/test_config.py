"""Config: typed, validated, and every error names the file and the key."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from onionmail.config.box import CONFIG_NAME, Config, load_config, render_config
from onionmail.core.errors import ConfigError


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
        ("[box]\nmax_connections_total = 0\n", "[box] max_connections_total: at least 1"),
        ("[submission]\nmax_connections = 0\n", "[submission] max_connections: at least 1"),
        ("[inbound]\nmax_connections = 1.5\n", "[inbound] max_connections: expected an integer"),
        ("[inbound]\nmax_line_length = 999\n", "[inbound] max_line_length: expected 1000-65536"),
        ("[submission]\nmax_line_length = 65537\n", "[submission] max_line_length"),
        ("[inbound]\nmax_bad_commands = 0\n", "[inbound] max_bad_commands: at least 1"),
        ("[submission]\ndata_timeout = 0\n", "[submission] data_timeout: must be positive"),
        ("[inbound]\ntransaction_timeout = 0\n", "[inbound] transaction_timeout: must be"),
        ("[inbound]\nmax_session_time = -1\n", "[inbound] max_session_time: must be positive"),
        ("[submission]\nmax_commands = 0\n", "[submission] max_commands: must be positive"),
        ("[inbound]\nmax_commands = 'x'\n", "[inbound] max_commands: expected an integer"),
        ("[tor]\npow_defenses = 'yes'\n", "[tor] pow_defenses: expected true or false"),
        ("[tor]\npow_queue_rate = -1\n", "[tor] pow_queue_rate: expected 0-4294967295"),
        ("[tor]\npow_queue_rate = 4294967296\n", "[tor] pow_queue_rate"),
        ("[tor]\npow_queue_burst = 10\n", "[tor] pow_queue_burst: expected at least pow_queue"),
        ("[tor]\npow_queue_rate = 0\npow_queue_burst = 0\n", "[tor] pow_queue_burst"),
        ("[tor]\nmax_streams_per_circuit = 65536\n", "[tor] max_streams_per_circuit"),
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


def test_limits_have_their_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""))
    assert config.box.max_connections_total == 25
    for section, connections in ((config.submission, 10), (config.inbound, 20)):
        assert section.max_connections == connections
        assert section.max_line_length == 1000
        assert section.max_bad_commands == 20
        assert section.timeout == 300.0
        assert section.data_timeout == 1800.0
        assert section.max_recipients == 100
        assert section.max_message_size == 25 * 1024 * 1024
    assert config.tor.pow_defenses is True
    assert (config.tor.pow_queue_rate, config.tor.pow_queue_burst) == (25, 250)
    assert config.tor.max_streams_per_circuit == 10


def test_limits_are_read(tmp_path: Path) -> None:
    text = (
        "[box]\nmax_connections_total = 7\n"
        "[inbound]\nmax_connections = 3\nmax_line_length = 4000\nmax_bad_commands = 2\n"
        "data_timeout = 60\n"
        "[tor]\npow_defenses = false\npow_queue_rate = 0\npow_queue_burst = 1\n"
        "max_streams_per_circuit = 0\n"
    )
    config = load_config(write(tmp_path, text))
    assert config.box.max_connections_total == 7
    assert config.inbound.max_connections == 3
    assert config.inbound.max_line_length == 4000
    assert config.inbound.max_bad_commands == 2
    assert config.inbound.data_timeout == 60.0
    assert config.submission.max_connections == 10
    assert not config.tor.pow_defenses
    assert (config.tor.pow_queue_rate, config.tor.pow_queue_burst) == (0, 1)
    assert config.tor.max_streams_per_circuit == 0


def test_rendered_comments_show_every_key_with_its_default(tmp_path: Path) -> None:
    """Uncommenting every ``# key = value`` line of a fresh config changes nothing."""
    rendered = render_config(("alice",), 0)
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and " = " in line else line
        for line in rendered.splitlines()
    )
    config = load_config(write(tmp_path, uncommented))
    defaults = Config(path=config.path)
    assert config.inbound == defaults.inbound
    assert config.tor == defaults.tor
    assert config.delivery == defaults.delivery
    assert config.box.max_connections_total == defaults.box.max_connections_total
    for name in ("host", "max_message_size", "max_recipients", "timeout", "data_timeout"):
        assert getattr(config.submission, name) == getattr(defaults.submission, name)
    for name in ("max_connections", "max_line_length", "max_bad_commands"):
        assert getattr(config.submission, name) == getattr(defaults.submission, name)
    for section in ("box", "submission", "inbound", "tor", "delivery"):
        keys = {f.name for f in fields(getattr(defaults, section))} - {"local_parts", "port"}
        keys -= {"control_socket", "control_port", "socks_port"}  # attach mode: see the mode line
        for key in keys:
            assert f"{key} = " in rendered, f"[{section}] {key} missing from render_config"
