"""[scrub] in onionmail.toml: typed, validated, defaults the safe ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmail.config.box import CONFIG_NAME, ScrubSection, load_config, render_config
from onionmail.core.errors import ConfigError
from onionmail.message.scrub import is_removed


def load(tmp_path: Path, text: str) -> ScrubSection:
    (tmp_path / CONFIG_NAME).write_text(text)
    return load_config(tmp_path).scrub


def test_defaults_are_the_safe_ones(tmp_path: Path) -> None:
    scrub = load(tmp_path, render_config(("alice",), 0))
    assert scrub == ScrubSection()
    assert scrub.date_rounding == 60 and scrub.remove_content_language
    for name in ("Received", "User-Agent", "X-Mailer", "X-Originating-IP", "Content-Language"):
        assert is_removed(name, scrub), name
    for name in ("Subject", "X-Priority", "Organization", "X-Custom"):
        assert not is_removed(name, scrub), name


def test_values_are_read(tmp_path: Path) -> None:
    scrub = load(
        tmp_path,
        "[scrub]\ndate_rounding = 3600\nremove_content_language = false\n"
        'extra_remove_headers = ["X-Priority", "X-Corp-*"]\nkeep_headers = ["User-Agent"]\n',
    )
    assert scrub == ScrubSection(3600, False, ("X-Priority", "X-Corp-*"), ("User-Agent",))
    assert is_removed("x-corp-tracking", scrub) and is_removed("X-PRIORITY", scrub)
    assert not is_removed("User-Agent", scrub) and not is_removed("Content-Language", scrub)
    assert is_removed("Received", scrub)


def test_keep_headers_takes_a_client_prefix(tmp_path: Path) -> None:
    scrub = load(tmp_path, '[scrub]\nkeep_headers = ["X-Mozilla-*"]\n')
    assert not is_removed("X-Mozilla-Status", scrub) and is_removed("User-Agent", scrub)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("date_rounding = 0", "[scrub] date_rounding: expected a divisor of 86400"),
        ("date_rounding = 7", "[scrub] date_rounding: expected a divisor of 86400"),
        ("date_rounding = 172800", "[scrub] date_rounding"),
        ("date_rounding = 60.5", "[scrub] date_rounding: expected an integer"),
        ("remove_content_language = 'yes'", "expected true or false"),
        ("extra_remove_headers = 'X-Priority'", "expected a list of strings"),
        ("extra_remove_headers = ['Date']", "would remove date"),
        ("extra_remove_headers = ['Content-*']", "would remove content-transfer-encoding"),
        ("extra_remove_headers = ['*']", "is not a field name"),
        ("extra_remove_headers = ['X Bad']", "is not a field name"),
        ("extra_remove_headers = ['X-*-Bad']", "is not a field name"),
        ("keep_headers = ['Received']", "[scrub] keep_headers: 'Received' is a trace field"),
        ("keep_headers = ['X-Originating-IP']", "is a trace field"),
        ("keep_headers = ['Content-Language']", "remove_content_language = false"),
        ("keep_headers = ['Subject']", "is not removed anyway"),
        ("keep_headers = ['X-Mailer']\nextra_remove_headers = ['X-Mailer']", "also in extra"),
        ("dates_rounding = 60", "[scrub] dates_rounding: unknown key"),
    ],
)
def test_bad_values_name_the_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load(tmp_path, f"[scrub]\n{text}\n")
    assert str(tmp_path / CONFIG_NAME) in str(raised.value)
    assert fragment in str(raised.value)
