"""The identity key is encrypted by default; its passphrase comes from a file, systemd or a tty."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from onionmail.cli.passphrase import CREDENTIAL, passphrase_for
from onionmail.core.errors import ConfigError
from onionmail.seal.identity import PassphraseError, is_encrypted_identity, load_identity

PASSPHRASE = b"correct horse battery staple"


def onionmail(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line with no terminal on stdin, as under a service manager."""
    return subprocess.run(
        [sys.executable, "-m", "onionmail.cli", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def secret_file(tmp_path: Path, name: str, value: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(value + b"\n")
    path.chmod(0o600)
    return path


def key_of(box: Path) -> Path:
    return box / "keys" / "identity.key"


def test_init_without_a_terminal_or_a_choice_refuses_and_writes_nothing(tmp_path: Path) -> None:
    result = onionmail("init", "--dir", str(tmp_path / "box"), "--name", "alice")
    assert result.returncode == 1
    assert "--passphrase-file" in result.stderr and "--no-passphrase" in result.stderr
    assert not (tmp_path / "box").exists()


def test_init_encrypts_the_key_with_the_passphrase_from_a_file(tmp_path: Path) -> None:
    phrase = secret_file(tmp_path, "phrase", PASSPHRASE)
    result = onionmail("init", "--dir", str(tmp_path / "box"), "--passphrase-file", str(phrase))
    assert result.returncode == 0, result.stderr
    assert is_encrypted_identity(key_of(tmp_path / "box"))
    assert "in clear" not in result.stderr
    with pytest.raises(PassphraseError):
        load_identity(key_of(tmp_path / "box"))
    load_identity(key_of(tmp_path / "box"), PASSPHRASE)


def test_a_short_passphrase_is_refused(tmp_path: Path) -> None:
    phrase = secret_file(tmp_path, "phrase", b"hunter2")
    result = onionmail("init", "--dir", str(tmp_path / "box"), "--passphrase-file", str(phrase))
    assert result.returncode == 1 and "shorter than 12 characters" in result.stderr


def test_init_no_passphrase_stores_in_clear_and_says_so(tmp_path: Path) -> None:
    result = onionmail("init", "--dir", str(tmp_path / "box"), "--no-passphrase")
    assert result.returncode == 0, result.stderr
    assert not is_encrypted_identity(key_of(tmp_path / "box"))
    assert "stored in clear" in result.stderr and "keys passphrase" in result.stderr


def test_keys_passphrase_sets_changes_and_removes_it(tmp_path: Path) -> None:
    box = tmp_path / "box"
    assert onionmail("init", "--dir", str(box), "--no-passphrase").returncode == 0
    seed = load_identity(key_of(box)).seed
    first = secret_file(tmp_path, "first", PASSPHRASE)
    second = secret_file(tmp_path, "second", b"a different long passphrase")

    result = onionmail("keys", "passphrase", "--dir", str(box), "--new-passphrase-file", str(first))
    assert result.returncode == 0, result.stderr
    assert load_identity(key_of(box), PASSPHRASE).seed == seed

    result = onionmail(
        "keys", "passphrase", "--dir", str(box),
        "--passphrase-file", str(first), "--new-passphrase-file", str(second),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with pytest.raises(PassphraseError):
        load_identity(key_of(box), PASSPHRASE)
    assert load_identity(key_of(box), b"a different long passphrase").seed == seed

    result = onionmail(
        "keys", "passphrase", "--dir", str(box), "--passphrase-file", str(second), "--no-passphrase"
    )
    assert result.returncode == 0, result.stderr
    assert load_identity(key_of(box)).seed == seed and not is_encrypted_identity(key_of(box))
    assert [p.name for p in key_of(box).parent.iterdir() if p.name.startswith(".")] == []


def test_an_encrypted_key_without_a_terminal_names_the_ways_to_give_it(tmp_path: Path) -> None:
    phrase = secret_file(tmp_path, "phrase", PASSPHRASE)
    made = onionmail("init", "--dir", str(tmp_path / "box"), "--passphrase-file", str(phrase))
    assert made.returncode == 0, made.stderr
    result = onionmail("keys", "export", "--dir", str(tmp_path / "box"))
    assert result.returncode == 1
    assert "--passphrase-file" in result.stderr and CREDENTIAL in result.stderr


def test_systemd_credential_gives_the_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    phrase = secret_file(tmp_path, "phrase", PASSPHRASE)
    assert (
        onionmail(
            "init", "--dir", str(tmp_path / "box"), "--passphrase-file", str(phrase)
        ).returncode
        == 0
    )
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    secret_file(credentials, CREDENTIAL, PASSPHRASE)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    assert passphrase_for(key_of(tmp_path / "box"), None) == PASSPHRASE
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(ConfigError, match="no terminal"):
        passphrase_for(key_of(tmp_path / "box"), None)
