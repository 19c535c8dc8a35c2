"""``[gateway]`` and ``[onion_mx]`` of ``onionmail.toml``: where non-onion mail goes.

Both are tables whose keys are data (onions, domains), not setting names,
so they are parsed here rather than by the generic section builder::

    [gateway]
    # gateway onion = the alias this box registered there (onionmail gateway register)
    "<56 characters>.onion" = "alice@gw.example"
    "<another gateway>.onion" = "alice@other.example"
    # which of them clearnet mail goes through (onionmail gateway use); needed with two
    sending = "<56 characters>.onion"

    [onion_mx]
    # domain = onion: mail to anyone@corp.example goes straight to that onion
    "corp.example" = "<56 characters>.onion"

``[gateway]``: ``sending`` names the gateway clearnet mail is sent through
(with one gateway it may be left out); registering with another gateway
never changes it, so the From of clearnet mail never changes behind the
user's back. Every entry is a gateway whose sealed mail (clearnet mail for
the alias) the inbound server accepts. Mail from any other onion must still come from its
own address. ``[onion_mx]`` is OnionMX without DNS (the box does no DNS): a
static route from a mail domain to the onion of its server, which is then
treated as any onion peer (sealed if it announces the seal, plain otherwise).
Errors name a gateway or a route by position, never by the address.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from onionmail.core.errors import AddressError, ConfigError
from onionmail.core.mail_address import parse_mail_address
from onionmail.core.onion_address import is_onion_address

SENDING_KEY = "sending"
"""The key of ``[gateway]`` that names the sending gateway (every other key is an onion)."""


@dataclass(frozen=True)
class GatewaySection:
    """[gateway]: the clearnet gateways this box is registered with, in file order."""

    registrations: tuple[tuple[str, str], ...] = ()
    """(gateway onion, alias address) pairs, in file order."""
    sending: str = ""
    """``sending``: the gateway clearnet mail goes through ("" with one gateway: that one)."""

    @property
    def onions(self) -> frozenset[str]:
        """Gateways whose relayed clearnet mail is accepted."""
        return frozenset(onion for onion, _ in self.registrations)

    @property
    def sending_gateway(self) -> str | None:
        """The onion clearnet mail goes to, or None when no gateway is configured."""
        if self.sending:
            return self.sending
        return self.registrations[0][0] if len(self.registrations) == 1 else None

    def alias_at(self, onion: str) -> str:
        return dict(self.registrations).get(onion, "")


@dataclass(frozen=True)
class OnionMxSection:
    """[onion_mx]: static routes from a mail domain to the onion of its server."""

    routes: Mapping[str, str] = field(default_factory=dict)
    """Lowercase domain -> onion host."""

    def onion_for(self, domain: str) -> str | None:
        return self.routes.get(domain.lower())


def _onion(text: Any, where: str) -> str:
    if not isinstance(text, str) or not is_onion_address(text.lower()):
        raise ConfigError(f"{where}: expected a v3 .onion host (56 characters + .onion)")
    return text.lower()


def parse_gateway(table: Any, path: Path) -> GatewaySection:
    where = f"{path}: [gateway]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of gateway onion = alias address")
    pairs = []
    sending = table.get(SENDING_KEY, "")
    gateways = [(key, value) for key, value in table.items() if key != SENDING_KEY]
    for n, (key, value) in enumerate(gateways, 1):
        entry = f"{where} entry {n}"
        onion = _onion(key, f"{entry} (the key)")
        if not isinstance(value, str):
            raise ConfigError(f"{entry}: expected the alias address as a string")
        try:
            alias = parse_mail_address(value)
        except AddressError as exc:
            raise ConfigError(f"{entry}: {exc}") from None
        if alias.is_onion:
            raise ConfigError(f"{entry}: an alias is a clearnet address, not a .onion one")
        pairs.append((onion, str(alias)))
    if sending:
        sending = _onion(sending, f"{where} {SENDING_KEY}")
        if sending not in {onion for onion, _ in pairs}:
            raise ConfigError(f"{where} {SENDING_KEY}: not one of the gateways listed here")
    elif len(pairs) > 1:
        raise ConfigError(
            f'{where}: {len(pairs)} gateways and no {SENDING_KEY} = "<onion>": say which one '
            "clearnet mail goes through (onionmail gateway use --gateway ONION)"
        )
    return GatewaySection(tuple(pairs), sending)


def parse_onion_mx(table: Any, path: Path) -> OnionMxSection:
    where = f"{path}: [onion_mx]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table of domain = onion")
    routes: dict[str, str] = {}
    for n, (key, value) in enumerate(table.items(), 1):
        entry = f"{where} entry {n}"
        domain = str(key).lower().rstrip(".")
        try:
            parse_mail_address(f"x@{domain}")
        except AddressError:
            raise ConfigError(f"{entry}: the key is not a mail domain") from None
        if domain.endswith(".onion"):
            raise ConfigError(f"{entry}: an onion needs no route; mail to it goes there anyway")
        routes[domain] = _onion(value, entry)
    return OnionMxSection(routes)
