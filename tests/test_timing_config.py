"""[timing]: typed, validated, defaults off, and errors that name the key but no contact."""

from __future__ import annotations

from pathlib import Path

import pytest

from onionmail.config.box import (
    CONFIG_NAME,
    ContactTiming,
    TimingSection,
    load_config,
    render_config,
)
from onionmail.core.errors import ConfigError
from onionmail.seal.identity import Identity

BOB = Identity.generate().onion_address
CAROL = Identity.generate().onion_address


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / CONFIG_NAME).write_text(text)
    return tmp_path


def test_defaults_send_at_once_and_no_cover(tmp_path: Path) -> None:
    timing = load_config(write(tmp_path, "")).timing
    assert timing == TimingSection()
    assert (timing.mode, timing.cover_rate, timing.cover_contacts) == ("immediate", 0.0, ())
    assert (timing.mean_delay, timing.batch_interval, timing.contacts) == (600.0, 900.0, ())


def test_rendered_config_shows_every_timing_key_with_its_default(tmp_path: Path) -> None:
    rendered = render_config(("alice",), 0)
    timing_part = rendered[rendered.index("[timing]") :]
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and " = " in line else line
        for line in timing_part.splitlines()
    )
    assert load_config(write(tmp_path, uncommented)).timing == TimingSection()
    for key in ("mode", "mean_delay", "batch_interval", "cover_rate", "cover_contacts"):
        assert f"# {key} = " in timing_part
    assert "[timing.contacts." in timing_part


def test_a_full_timing_section_is_read(tmp_path: Path) -> None:
    text = f"""
[timing]
mode = "delay"
mean_delay = 120
batch_interval = 60.5
cover_rate = 1800
cover_contacts = ["Bob@{BOB.upper()}", "{CAROL}"]

[timing.contacts."{BOB}"]
mode = "batch"

[timing.contacts."carol@{CAROL}"]
mean_delay = 30
"""
    timing = load_config(write(tmp_path, text)).timing
    assert (timing.mode, timing.mean_delay, timing.batch_interval) == ("delay", 120.0, 60.5)
    assert timing.cover_rate == 1800.0
    assert timing.cover_contacts == (f"bob@{BOB}", CAROL)
    assert timing.contacts == (
        ContactTiming(BOB, "batch", 120.0, 60.5),  # unset keys come from [timing]
        ContactTiming(f"carol@{CAROL}", "delay", 30.0, 60.5),
    )


def test_fractional_cover_rates_are_allowed(tmp_path: Path) -> None:
    text = f'[timing]\ncover_rate = 0.25\ncover_contacts = ["{BOB}"]\n'
    assert load_config(write(tmp_path, text)).timing.cover_rate == 0.25


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[timing]\nmode = 'random'\n", "[timing] mode: expected one of immediate, delay, batch"),
        ("[timing]\nmode = 1\n", "[timing] mode: expected a string"),
        ("[timing]\nmean_delay = 0\n", "[timing] mean_delay: expected above 0"),
        ("[timing]\nmean_delay = 21601\n", "[timing] mean_delay: expected above 0, at most"),
        ("[timing]\nmean_delay = '5m'\n", "[timing] mean_delay: expected a number"),
        ("[timing]\nbatch_interval = -1\n", "[timing] batch_interval: expected above 0"),
        ("[timing]\nbatch_interval = 86401\n", "[timing] batch_interval"),
        ("[timing]\ncover_rate = -1\n", "[timing] cover_rate: expected 0-3600"),
        ("[timing]\ncover_rate = 3601\n", "[timing] cover_rate: expected 0-3600"),
        ("[timing]\ncover_rate = 1\n", "[timing] cover_rate: cover traffic needs cover_contacts"),
        ("[timing]\ncover_contacts = 'x'\n", "[timing] cover_contacts: expected a list of strings"),
        ("[timing]\ncover_contacts = ['bob@example.org']\n", "cover_contacts: entry 1:"),
        ("[timing]\ncover_contacts = ['abc.onion']\n", "cover_contacts: entry 1:"),
        (f"[timing]\ncover_contacts = ['{BOB[:-6]}']\n", "cover_contacts: entry 1: expected"),
        (f"[timing]\ncover_contacts = ['{BOB}', '{BOB.upper()}']\n", "appears twice"),
        ("[timing]\nspeed = 1\n", "[timing] speed: unknown key"),
        ("timing = 3\n", "[timing]: expected a table"),
        ("[timing]\ncontacts = 3\n", "[timing] contacts: expected tables"),
        ("[timing.contacts]\nx = 3\n", "[timing.contacts] entry 1: expected a table"),
        ("[timing.contacts.'bob@example.org']\nmode = 'delay'\n", "[timing.contacts] entry 1:"),
        (f"[timing.contacts.'{BOB}']\nmode = 'later'\n", "[timing.contacts] entry 1 mode:"),
        (f"[timing.contacts.'{BOB}']\ncover_rate = 1\n", "entry 1 cover_rate: unknown key"),
        (f"[timing.contacts.'{BOB}']\nmean_delay = 0\n", "entry 1 mean_delay: expected above"),
        (
            f"[timing.contacts.'{BOB}']\n[timing.contacts.'{BOB.upper()}']\n",
            "[timing.contacts] entry 2: the same contact as an earlier entry",
        ),
        (
            "[timing]\nmode = 'delay'\nmean_delay = 21600\n[delivery]\nmax_lifetime = 86400\n",
            "[timing] mean_delay: mail may be held 172800 s, more than half of [delivery]",
        ),
        (
            f"[delivery]\nmax_lifetime = 3600\n[timing.contacts.'{BOB}']\nmode = 'batch'\n"
            "batch_interval = 3600\n",
            "[timing.contacts] entry 1 batch_interval: mail may be held 3600 s",
        ),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / CONFIG_NAME}: ")
    assert fragment in str(info.value)


def test_errors_never_repeat_a_contact_address(tmp_path: Path) -> None:
    """A config error may reach a system log; it must not say whom the user writes to."""
    bad_checksum = BOB[:10] + ("a" if BOB[10] != "a" else "b") + BOB[11:]
    for text in (
        f"[timing]\ncover_contacts = ['bob@{bad_checksum}']\n",
        f"[timing.contacts.'bob@{BOB}']\nmode = 'x'\n",
        f"[timing.contacts.'{bad_checksum}']\nmode = 'delay'\n",
    ):
        write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path)
        message = str(info.value)
        assert BOB[:20] not in message and "bob@" not in message, message


def test_timing_section_is_frozen(tmp_path: Path) -> None:
    timing = load_config(write(tmp_path, "")).timing
    with pytest.raises(AttributeError):
        timing.mode = "delay"  # type: ignore[misc]
