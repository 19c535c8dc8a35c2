"""Where the identity key's passphrase comes from: a file, systemd, or the terminal.

The identity seed derives every other key of the box (queue, ledger,
OpenPGP), so it is encrypted by default: ``init`` asks for a passphrase
unless told ``--no-passphrase``; ``run``, the TUI and the other commands ask
for it on the terminal when no file is given, and an unattended start reads
it from ``--passphrase-file`` or from systemd's credentials
(``LoadCredential=onionmail-passphrase:...``, read from
``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import getpass
import os
import sys
import tempfile
from pathlib import Path

from onionmail.cli.common import progress
from onionmail.core.errors import ConfigError
from onionmail.core.files import fsync_dir
from onionmail.seal.identity import (
    Identity,
    is_encrypted_identity,
    load_identity,
    read_passphrase_file,
    save_identity,
)

CREDENTIAL = "onionmail-passphrase"
"""The name of the systemd credential holding the passphrase."""
MIN_LENGTH = 12
"""Below this many characters a passphrase is refused; argon2id slows guessing, it does
not make a short passphrase strong."""
CLEAR_KEY_WARNING = (
    "warning: the identity key is stored in clear: whoever copies the box directory can "
    "read its queue and ledger and pose as it; set a passphrase with "
    "'onionmail keys passphrase --dir BOXDIR'"
)


def passphrase_for(key_path: Path, passphrase_file: Path | None) -> bytes | None:
    """The passphrase that opens the key at ``key_path``, or None when it is in clear.

    From ``passphrase_file``, else the systemd credential, else asked on the
    terminal; :class:`ConfigError` when none of them can give it.
    """
    if passphrase_file is not None:
        return read_passphrase_file(passphrase_file)
    if not is_encrypted_identity(key_path):
        return None
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / CREDENTIAL).is_file():
        return read_passphrase_file(Path(credentials) / CREDENTIAL)
    if sys.stdin.isatty():
        return getpass.getpass("passphrase of the box's identity key: ").encode()
    raise ConfigError(
        f"{key_path}: the identity key is encrypted and there is no terminal to ask for "
        f"its passphrase: give --passphrase-file FILE, or a systemd credential {CREDENTIAL!r}"
    )


def open_identity(key_path: Path, passphrase_file: Path | None) -> Identity:
    """The box's identity, its passphrase found as :func:`passphrase_for` says."""
    return load_identity(key_path, passphrase_for(key_path, passphrase_file))


def new_passphrase(passphrase_file: Path | None, *, no_passphrase: bool) -> bytes | None:
    """The passphrase a key is to be saved with (None: in clear, only when asked for).

    From ``passphrase_file``, or asked twice on the terminal; without either,
    and without ``no_passphrase``, :class:`ConfigError` says what to give.
    """
    if no_passphrase and passphrase_file is not None:
        raise ConfigError("--no-passphrase and --passphrase-file: choose one")
    if no_passphrase:
        return None
    if passphrase_file is not None:
        passphrase = read_passphrase_file(passphrase_file)
    elif sys.stdin.isatty():
        passphrase = _ask_twice()
    else:
        raise ConfigError(
            "the identity key is encrypted by default and there is no terminal to ask for "
            "a passphrase: give --passphrase-file FILE, or --no-passphrase to store it in clear"
        )
    if len(passphrase.decode("utf-8", "replace")) < MIN_LENGTH:
        raise ConfigError(
            f"the passphrase is shorter than {MIN_LENGTH} characters; a few words are "
            "easier to remember and harder to guess"
        )
    return passphrase


def _ask_twice() -> bytes:
    print(
        f"A passphrase protects the box's identity key (at least {MIN_LENGTH} characters; "
        "four or five random words are a good one).",
        file=sys.stderr,
    )
    first = getpass.getpass("new passphrase: ")
    if getpass.getpass("the same again: ") != first:
        raise ConfigError("the two passphrases differ; nothing was changed")
    return first.encode()


def replace_key_file(identity: Identity, key_path: Path, passphrase: bytes | None) -> None:
    """Write ``identity`` to ``key_path`` again, under ``passphrase`` (None: in clear),
    atomically: the old file stays whole until the new one is on disk."""
    folder = key_path.parent
    with tempfile.TemporaryDirectory(dir=folder, prefix=".rekey-") as scratch:
        staged = Path(scratch) / key_path.name
        save_identity(identity, staged, passphrase)
        os.replace(staged, key_path)
    fsync_dir(folder)
    if passphrase is None:
        progress(CLEAR_KEY_WARNING)
