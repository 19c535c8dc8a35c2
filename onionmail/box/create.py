"""Creating a box directory: identity, configuration, submission credentials."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from onionmail.config.box import CONFIG_NAME, render_config
from onionmail.core.errors import ConfigError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.core.mail_address import is_valid_local_part
from onionmail.seal.identity import Identity, save_identity
from onionmail.store.credentials import Credentials, generate_password


@dataclass(frozen=True, repr=False)
class NewBox:
    """What ``init`` produced. The password is shown once; only its digest is kept."""

    box_dir: Path
    identity: Identity
    local_part: str
    password: str
    password_file: Path

    @property
    def address(self) -> str:
        return f"{self.local_part}@{self.identity.onion_address}"


def create_box(
    box_dir: Path,
    local_part: str,
    *,
    passphrase: bytes | None = None,
    testnet: Path | None = None,
    submission_port: int = 1587,
    retry_initial: float | None = None,
) -> NewBox:
    """Create a box in ``box_dir`` (0700); refuses to touch an existing box.

    ``retry_initial`` (seconds) is written as ``[delivery] retry_initial`` when
    given: on a private test network a peer's freshly published onion is often
    not found on the first try, and the demo should not wait the default 30 s.
    """
    box_dir = box_dir.absolute()
    local_part = local_part.lower()
    if not is_valid_local_part(local_part):
        raise ConfigError(f"--name: {local_part!r} is not a valid local part")
    if not 0 <= submission_port <= 65535:
        raise ConfigError("--submission-port: expected 0-65535")
    if (box_dir / CONFIG_NAME).exists():
        raise ConfigError(f"{box_dir / CONFIG_NAME}: a box already exists here; not overwritten")
    ensure_private_dir(box_dir)
    identity = Identity.generate()
    save_identity(identity, box_dir / "keys" / "identity.key", passphrase)
    testnet_text = str(testnet.absolute()) if testnet else ""
    config_text = render_config((local_part,), submission_port, testnet_text, retry_initial)
    write_private_file(box_dir / CONFIG_NAME, config_text.encode())
    password = generate_password()
    Credentials(box_dir / "keys" / "submission.json").set_password(local_part, password)
    password_file = box_dir / f"submission-password.{local_part}"
    write_private_file(password_file, (password + "\n").encode())
    return NewBox(box_dir, identity, local_part, password, password_file)
