"""The box's side of registering with a clearnet gateway (``onionmail gateway register``).

One sealed SMTP transaction over Tor to ``register@<gateway onion>`` (the
protocol and why it is shaped so: :mod:`onionmail.gateway_link.protocol`). The
tor used is the running box's own (attached through its control socket, so
no second tor fights over ``BOXDIR/tor``), or, when the box is not running,
a tor launched in ``BOXDIR/tor`` for the duration of the command. Either
way the command reports tor's bootstrap and each attempt to reach the
gateway: a gateway whose onion was just published is often not reachable
at the first try, so attempts are repeated until ``timeout``.

On success the gateway and the alias are written to ``[gateway]`` in
``onionmail.toml`` (also while the registration is still pending the
operator's approval: the alias is reserved, and mail through the gateway
is refused by it until approved). A running box reads its configuration
once, so it must be restarted to use the gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiosmtplib

from onionmail.config.box import CONFIG_NAME, Config, load_config
from onionmail.config.gateway import SENDING_KEY
from onionmail.core.errors import (
    ConfigError,
    DeliveryError,
    PermanentDeliveryError,
    RegistrationError,
)
from onionmail.core.files import write_private_file
from onionmail.core.onion_address import is_onion_address
from onionmail.gateway_link.protocol import (
    REGISTRATION_LOCAL_PART,
    RegistrationReply,
    build_registration,
    parse_registration_reply,
)
from onionmail.seal.envelope import (
    SEAL_KEYWORD,
    SealedContent,
    encode_for_smtp,
    parse_seal_keyword_params,
    seal,
)
from onionmail.seal.handshake import SEAL2_KEYWORD, parse_announcement, seal_in_session
from onionmail.seal.identity import Identity
from onionmail.seal.mail_key import MailKeyring
from onionmail.store.lock import running_pid
from onionmail.tor.control import BoxTor
from onionmail.tor.socks import open_tor_stream

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

DEFAULT_TIMEOUT = 180.0
"""Seconds to keep trying to reach the gateway (tor's bootstrap not included)."""
RETRY_PAUSE = 2.0
SMTP_TIMEOUT = 60.0


async def register_with_gateway(
    config: Config,
    identity: Identity,
    *,
    gateway_onion: str,
    alias: str,
    local_part: str,
    testnet_options: dict[str, Any] | None = None,
    progress: Progress | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> RegistrationReply:
    """Register ``local_part@<box onion>`` as ``alias`` at the gateway; return its answer.

    Raises :class:`RegistrationError` when the gateway refuses (its reason
    included), :class:`~onionmail.core.errors.TorError` when tor cannot be had,
    and :class:`DeliveryError` when the gateway stayed unreachable.
    """
    say = progress or (lambda _msg: None)
    gateway_onion = gateway_onion.strip().lower()
    if not is_onion_address(gateway_onion):
        raise RegistrationError("--gateway: expected the gateway's v3 .onion host")
    if local_part not in config.box.local_parts:
        raise RegistrationError(f"--name: {local_part!r} is not a local part of this box")
    tor = _tor_for(config, testnet_options or {})
    await tor.start(say)
    try:
        return await _attempts(
            tor, config, identity, gateway_onion, alias, local_part, say, timeout
        )
    finally:
        await tor.stop()


def _tor_for(config: Config, testnet_options: dict[str, Any]) -> BoxTor:
    data_dir = config.box_dir / "tor"
    settings = config.tor
    if settings.mode == "launch" and running_pid(config.box_dir) is not None:
        # The running box's tor: attach, do not launch a second one on its data directory.
        settings = dataclasses.replace(
            settings, mode="attach", control_socket=str(data_dir / "control.sock")
        )
    return BoxTor(settings, data_dir, testnet_options)


async def _attempts(
    tor: BoxTor,
    config: Config,
    identity: Identity,
    gateway_onion: str,
    alias: str,
    local_part: str,
    say: Progress,
    timeout: float,
) -> RegistrationReply:
    box_address = f"{local_part}@{identity.onion_address}"
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        say(f"reaching the gateway over tor (attempt {attempt})")
        try:
            return await _register_once(
                tor.socks_address, config, identity, gateway_onion, alias, box_address
            )
        except PermanentDeliveryError:
            raise
        except DeliveryError as exc:
            if time.monotonic() + RETRY_PAUSE > deadline:
                raise DeliveryError(
                    f"the gateway was not reachable within {timeout:g} s ({exc}); "
                    "check the onion address, or try again later"
                ) from None
            say(f"not reachable yet ({exc}); retrying in {RETRY_PAUSE:g} s")
            await asyncio.sleep(RETRY_PAUSE)


async def _register_once(
    socks: tuple[str, int],
    config: Config,
    identity: Identity,
    gateway_onion: str,
    alias: str,
    box_address: str,
) -> RegistrationReply:
    sock = await open_tor_stream(
        socks[0],
        socks[1],
        gateway_onion,
        25,
        timeout=config.tor.socks_timeout,
        isolation=secrets.token_hex(8),
    )
    smtp = aiosmtplib.SMTP(
        sock=sock, local_hostname="localhost", timeout=SMTP_TIMEOUT, start_tls=False
    )
    rcpt = f"{REGISTRATION_LOCAL_PART}@{gateway_onion}"
    try:
        await smtp.connect()
        await smtp.ehlo()
        params = smtp.esmtp_extensions.get(SEAL_KEYWORD.lower())
        if params is None:
            raise RegistrationError("the peer does not announce the seal: not an onionmail gateway")
        await smtp.mail(box_address)
        await smtp.rcpt(rcpt)
        request = build_registration(identity, box_address, gateway_onion, alias)
        content = SealedContent(
            envelope_id=secrets.token_bytes(16),
            created=int(time.time()),
            session_challenge=parse_seal_keyword_params(params),
            mail_from=box_address,
            recipients=(rcpt,),
            message=request.to_bytes(),
        )
        handshake = smtp.esmtp_extensions.get(SEAL2_KEYWORD.lower())
        if handshake is not None:
            # the handshake seal: the gateway learns the box's mail key certificate here
            keyring = MailKeyring.open(config.box_dir / "keys" / "mail-keys", identity)
            announcement = parse_announcement(handshake, gateway_onion, time.time())
            envelope = seal_in_session(
                content,
                keyring=keyring,
                announcement=announcement,
                sender_onion=identity.onion_address,
                recipient_onion=gateway_onion,
            )
        else:
            envelope = seal(content, sender=identity, recipient_onion=gateway_onion)
        reply = await smtp.data(encode_for_smtp(envelope))
    except aiosmtplib.SMTPResponseException as exc:
        if 500 <= exc.code < 600:
            raise RegistrationError(f"the gateway refused: {exc.code} {exc.message}") from None
        raise DeliveryError(f"the gateway answered {exc.code} {exc.message}") from None
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP with the gateway failed: {exc}") from None
    finally:
        smtp.close()
    return parse_registration_reply(reply.message)


_GATEWAY_HEADER = re.compile(r"^\s*\[gateway\]\s*(#.*)?$")
_TABLE_HEADER = re.compile(r"^\s*\[")


def record_registration(box_dir: Path, gateway_onion: str, alias_address: str) -> None:
    """Write ``"<gateway onion>" = "<alias>"`` into ``[gateway]`` of onionmail.toml.

    A line for the same gateway is replaced; otherwise the entry goes right
    under the ``[gateway]`` header (added at the end when missing). The
    sending gateway does not change: with a second gateway, the first one is
    written as ``sending`` if nothing was. The result is validated, and the
    old file kept, if it does not load.
    """
    before = load_config(box_dir).gateway
    entries = [f'"{gateway_onion}" = "{alias_address}"']
    others = {onion for onion, _ in before.registrations} - {gateway_onion}
    if others and not before.sending and before.sending_gateway is not None:
        entries.append(f'{SENDING_KEY} = "{before.sending_gateway}"')
    _rewrite_gateway_table(box_dir, f'"{gateway_onion}"', entries)


def use_gateway(box_dir: Path, gateway_onion: str) -> str:
    """Make ``gateway_onion`` (one of ``[gateway]``) the one clearnet mail goes through;
    returns its alias. :class:`ConfigError` when the box is not registered there."""
    gateway_onion = gateway_onion.strip().lower()
    alias = load_config(box_dir).gateway.alias_at(gateway_onion)
    if not alias:
        raise ConfigError(
            f"{box_dir / CONFIG_NAME}: [gateway] has no {gateway_onion}: register with it first "
            "(onionmail gateway register)"
        )
    _rewrite_gateway_table(box_dir, SENDING_KEY, [f'{SENDING_KEY} = "{gateway_onion}"'])
    return alias


def _rewrite_gateway_table(box_dir: Path, key: str, entries: list[str]) -> None:
    """Replace the lines of ``[gateway]`` starting with ``key`` (and any ``sending``
    line ``entries`` brings) by ``entries``, under the header; validated, or undone."""
    path = box_dir / CONFIG_NAME
    old = path.read_text(encoding="utf-8")
    replaced = {key, *(entry.split(" =", 1)[0] for entry in entries)}
    kept: list[str] = []
    header = -1
    inside = False
    for line in old.splitlines():
        if _TABLE_HEADER.match(line):
            inside = bool(_GATEWAY_HEADER.match(line))
            header = len(kept) if inside else header
        elif inside and line.strip().split(" =", 1)[0].strip() in replaced:
            continue
        kept.append(line)
    if header >= 0:
        kept[header + 1 : header + 1] = entries
    else:
        kept += ["", "[gateway]", *entries]
    write_private_file(path, ("\n".join(kept) + "\n").encode())
    try:
        load_config(box_dir)
    except ConfigError:
        write_private_file(path, old.encode())
        raise
