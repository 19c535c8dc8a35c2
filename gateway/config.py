"""The gateway's configuration: ``GWDIR/gateway.toml``, typed, frozen, validated once.

Built like the box's (:mod:`onionmail.config.box`): one frozen dataclass per
section with a docstring per key, unknown keys are errors, and every error
names the file and the key. ``[tor]`` and ``[delivery]`` are the box's own
sections (the gateway launches or attaches to tor exactly as a box does,
and its two queues retry and expire with the box's rules).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.errors import GatewayConfigError
from onionmail.config.box import DeliverySection, TorSection, build_sections, read_toml
from onionmail.config.sections import SessionLimits
from onionmail.core.errors import AddressError, ConfigError
from onionmail.core.mail_address import parse_mail_address

CONFIG_NAME = "gateway.toml"


@dataclass(frozen=True)
class GatewaySettings:
    """[gateway]: who the gateway is."""

    domain: str = ""
    """The mail domain of the aliases (``alice@<domain>``); its MX must point at [smtp],
    its DKIM records at the keys ``onionmail-gateway init`` printed."""
    require_approval: bool = True
    """New registrations wait for ``onionmail-gateway approve`` before the alias works.
    Off, any Tor user gets an alias at once and can send DKIM-signed mail from the domain
    (within the sending limits of [onion])."""
    mx_host: str = ""
    """The host name of this server as the domain's MX names it (its A/AAAA, PTR, TLS
    certificate and TLSA record); empty: ``mail.<domain>``. See ``dns-records``."""
    public_addresses: tuple[str, ...] = ()
    """The public IPv4/IPv6 addresses clearnet servers reach the MX at, and the gateway
    sends from: for ``dns-records`` (A/AAAA, SPF, PTR) and ``check-dns``."""
    operator_forward: str = ""
    """Where mail to postmaster@, abuse@, hostmaster@ and security@ the domain goes (RFC
    5321, RFC 2142): empty keeps it in ``GWDIR/operator``, a Maildir (``neomutt -f``);
    an address gets each message attached to a DKIM-signed note from postmaster@."""
    max_aliases_per_box: int = 3
    """Most aliases one box (one onion key: each of its local parts may ask for one) may
    hold here, pending ones included."""
    dkim_selector: str = "gw1"
    """Prefix of the DKIM selectors: ``<selector>-ed25519`` and ``<selector>-rsa``."""
    keep_display_name: bool = True
    """Keep the display name the box's user wrote in From (see gateway.outbound.sender_rewrite)."""


@dataclass(frozen=True)
class SmtpSettings(SessionLimits):
    """[smtp]: the clearnet SMTP server, the MX of the gateway's domain."""

    host: str = "127.0.0.1"
    """Listen address (0.0.0.0 to serve the internet)."""
    port: int = 25
    """Listen port; 0 picks a free one (printed at start)."""
    tls_cert: str = ""
    """PEM file with the certificate chain offered with STARTTLS; empty: no STARTTLS."""
    tls_key: str = ""
    """PEM file with the private key of tls_cert."""
    max_message_size: int = 25 * 1024 * 1024
    """Largest message accepted (announced with ESMTP SIZE)."""
    max_recipients: int = 50
    """Most RCPT TO per message."""
    max_connections: int = 100
    """Sessions open at once; one more gets ``421 4.7.0``."""
    timeout: float = 300.0
    """Seconds a client may stay silent."""
    data_timeout: float = 1800.0
    """Seconds a whole DATA transfer may take."""
    rate_limit: int = 60
    """Messages one client address may send per rate_window; then ``450 4.7.1``."""
    rate_window: float = 3600.0
    """Seconds of the sliding window of rate_limit."""
    rate_allow: tuple[str, ...] = ()
    """Client addresses or networks (``192.0.2.0/24``) exempt from rate_limit: your own
    relays in front of the gateway, say. Refusals are logged with the client's IP."""
    enforce_dmarc: bool = True
    """Honour the DMARC policy of the From domain for mail that fails it: ``p=reject`` is
    refused at DATA with ``550 5.7.1``, ``p=quarantine`` is delivered marked and the box
    files it in Junk. Off: the verdict is only recorded for the box."""


@dataclass(frozen=True)
class OnionSettings(SessionLimits):
    """[onion]: the SMTP server behind the gateway's onion, for registered boxes."""

    max_message_size: int = 25 * 1024 * 1024
    """Largest message a box may send through the gateway (before sealing)."""
    max_recipients: int = 50
    """Most RCPT TO per message."""
    max_connections: int = 50
    """Box sessions open at once."""
    timeout: float = 300.0
    """Seconds a box may stay silent."""
    data_timeout: float = 1800.0
    """Seconds a whole DATA transfer may take."""
    alias_messages_per_hour: int = 100
    """Messages one alias may send in any hour; past it ``450 4.7.1`` (the box retries)."""
    alias_recipients_per_day: int = 500
    """Recipients one alias may send to in any 24 hours (each RCPT counts)."""
    box_messages_per_hour: int = 200
    """Messages one box (one onion, all its aliases together) may send in any hour."""
    box_recipients_per_day: int = 1000
    """Recipients one box may send to in any 24 hours."""
    onionbalance_instance: bool = False
    """Run as one of several instances behind the gateway's onion, published by Onionbalance:
    this instance publishes a backend onion of its own (key in ``GWDIR/instance``) and
    answers for the gateway's; every instance holds the same ``keys/`` and [storage] url.
    See docs/scale-out.md and ``onionmail-gateway onionbalance-config``."""


@dataclass(frozen=True)
class DnsSettings:
    """[dns]: the validating resolver (keep it on loopback; see gateway.dns)."""

    resolver: str = "127.0.0.1"
    """IP address of the validating resolver. Loopback only, unless
    trust_remote_resolver: the gateway trusts its AD bit (DNSSEC validated) for DANE
    and MTA-STS, and nothing protects that bit on the way from another machine."""
    trust_remote_resolver: bool = False
    """Accept a resolver that is not on loopback. Its AD bit crosses a network where
    anyone on the path can set it: only for a resolver reached over a channel you
    trust (a link you control, or DNS over TLS terminated on loopback is better)."""
    port: int = 53
    """Its port."""
    timeout: float = 5.0
    """Seconds for one lookup, all retries included."""


@dataclass(frozen=True)
class OutboundSettings:
    """[outbound]: clearnet delivery."""

    ca_file: str = ""
    """PEM bundle of CAs for PKIX checks of MX certificates; empty: the system store."""
    mx_port: int = 25
    """Port of the MX hosts (25 on the internet; tests point it at a private MTA)."""
    allow_private_mx: bool = False
    """Connect to MX hosts and MTA-STS policy hosts whose addresses are not public
    (loopback, private, link-local, reserved ranges). Off: a registered box cannot make
    the gateway connect inside its own network and read a banner back in a bounce. On
    only for a private test network."""
    mta_sts: bool = True
    """Honour MTA-STS policies (RFC 8461); DANE and "TLS required" apply regardless."""
    mta_sts_connect_to: tuple[str, ...] = ()
    """``"mta-sts.<domain>=ADDRESS:PORT"`` entries: fetch that policy host's HTTPS from
    ADDRESS:PORT instead of resolving it (a pinned egress, or tests on loopback). The
    certificate (against ca_file) and ``Host`` are still checked against the name."""
    connect_timeout: float = 30.0
    """Seconds for TCP connect plus the greeting."""
    command_timeout: float = 60.0
    """Seconds for each SMTP command's reply."""
    data_timeout: float = 180.0
    """Seconds for the message and the final reply."""


@dataclass(frozen=True)
class MetricsSettings:
    """[metrics]: the Prometheus endpoint (gateway.metrics)."""

    listen: str = ""
    """``HOST:PORT`` on loopback (``127.0.0.1:9464``) where ``/metrics`` is served;
    empty: no endpoint. Counts and queue depths only, never an address."""


@dataclass(frozen=True)
class StorageSettings:
    """[storage]: where registrations and the sending limits' counters live."""

    url: str = ""
    """Empty: SQLite in ``GWDIR/state/gateway.sqlite`` (one instance). ``postgresql://
    user@host/db`` (libpq's URL, a password in ``~/.pgpass`` or the URL): PostgreSQL,
    shared by several instances of the gateway (docs/scale-out.md)."""


@dataclass(frozen=True)
class GatewayConfig:
    """The whole configuration of one gateway."""

    path: Path
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    onion: OnionSettings = field(default_factory=OnionSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    outbound: OutboundSettings = field(default_factory=OutboundSettings)
    tor: TorSection = field(default_factory=TorSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)

    @property
    def gateway_dir(self) -> Path:
        return self.path.parent


_SECTIONS: dict[str, type[Any]] = {
    "gateway": GatewaySettings,
    "smtp": SmtpSettings,
    "onion": OnionSettings,
    "dns": DnsSettings,
    "outbound": OutboundSettings,
    "tor": TorSection,
    "delivery": DeliverySection,
    "metrics": MetricsSettings,
    "storage": StorageSettings,
}


def load_gateway_config(gateway_dir: Path) -> GatewayConfig:
    """Read and validate ``gateway_dir/gateway.toml``."""
    path = gateway_dir / CONFIG_NAME
    hint = f"create the gateway with 'onionmail-gateway init --dir {gateway_dir} --domain DOMAIN'"
    try:
        raw = read_toml(path, hint)
    except ConfigError as exc:
        raise GatewayConfigError(str(exc)) from None
    return parse_gateway_config(raw, path)


def parse_gateway_config(raw: dict[str, Any], path: Path) -> GatewayConfig:
    try:
        sections = build_sections(raw, _SECTIONS, path)
    except ConfigError as exc:
        raise GatewayConfigError(str(exc)) from None
    config = GatewayConfig(path=path, **sections)
    _check(config)
    return config


def _check(config: GatewayConfig) -> None:
    p = config.path
    try:
        parse_mail_address(f"postmaster@{config.gateway.domain}")
    except AddressError:
        raise GatewayConfigError(f"{p}: [gateway] domain: expected a mail domain") from None
    if config.gateway.domain.endswith(".onion"):
        raise GatewayConfigError(f"{p}: [gateway] domain: must be a clearnet domain")
    if bool(config.smtp.tls_cert) != bool(config.smtp.tls_key):
        raise GatewayConfigError(f"{p}: [smtp] tls_key: tls_cert and tls_key go together")
    for section, key in (("smtp", "port"), ("dns", "port"), ("outbound", "mx_port")):
        if not 0 <= getattr(getattr(config, section), key) <= 65535:
            raise GatewayConfigError(f"{p}: [{section}] {key}: expected 0-65535")
    for section in ("smtp", "onion"):
        settings = getattr(config, section)
        for key in ("max_message_size", "max_recipients", "max_connections", "max_commands"):
            if getattr(settings, key) < 1:
                raise GatewayConfigError(f"{p}: [{section}] {key}: at least 1")
        for key in ("timeout", "data_timeout", "transaction_timeout", "max_session_time"):
            if getattr(settings, key) <= 0:
                raise GatewayConfigError(f"{p}: [{section}] {key}: must be positive")
    for key in (
        "alias_messages_per_hour",
        "alias_recipients_per_day",
        "box_messages_per_hour",
        "box_recipients_per_day",
    ):
        if getattr(config.onion, key) < 1:
            raise GatewayConfigError(f"{p}: [onion] {key}: at least 1")
    _check_each(config.gateway.public_addresses, ipaddress.ip_address,
                f"{p}: [gateway] public_addresses", "an IP address")  # fmt: skip
    if config.gateway.operator_forward:
        try:
            parse_mail_address(config.gateway.operator_forward)
        except AddressError:
            raise GatewayConfigError(
                f"{p}: [gateway] operator_forward: expected a mail address"
            ) from None
        if config.gateway.operator_forward.lower().endswith("@" + config.gateway.domain):
            raise GatewayConfigError(
                f"{p}: [gateway] operator_forward: an address outside {config.gateway.domain}"
            )
    if config.storage.url and not config.storage.url.startswith(("postgresql://", "postgres://")):
        raise GatewayConfigError(
            f"{p}: [storage] url: expected empty (SQLite) or postgresql://user@host/db"
        )
    if config.metrics.listen:
        try:
            parse_listen(config.metrics.listen)
        except ValueError:
            raise GatewayConfigError(
                f"{p}: [metrics] listen: expected HOST:PORT with a loopback host "
                "(127.0.0.1:9464): the endpoint is for a collector on this machine"
            ) from None
    if config.gateway.max_aliases_per_box < 1:
        raise GatewayConfigError(f"{p}: [gateway] max_aliases_per_box: at least 1")
    if config.smtp.rate_limit < 1 or config.smtp.rate_window <= 0:
        raise GatewayConfigError(f"{p}: [smtp] rate_limit: at least 1 per positive rate_window")
    _check_each(config.smtp.rate_allow, lambda text: ipaddress.ip_network(text, strict=False),
                f"{p}: [smtp] rate_allow", "an IP address or network")  # fmt: skip
    resolver = config.dns.resolver
    try:
        loopback = ipaddress.ip_address(resolver).is_loopback
    except ValueError:
        raise GatewayConfigError(f"{p}: [dns] resolver: expected an IP address") from None
    if not loopback and not config.dns.trust_remote_resolver:
        raise GatewayConfigError(
            f"{p}: [dns] resolver: not on loopback; the gateway trusts the resolver's "
            "DNSSEC verdict (AD bit), which a network path can forge: run a validating "
            "resolver on this machine, or set [dns] trust_remote_resolver = true"
        )
    if config.tor.mode not in ("launch", "attach"):
        raise GatewayConfigError(f"{p}: [tor] mode: expected 'launch' or 'attach'")
    if config.onion.onionbalance_instance and config.tor.mode == "attach":
        # SETCONF HiddenServiceDir replaces every onion service the attached tor has.
        raise GatewayConfigError(
            f"{p}: [onion] onionbalance_instance: needs a tor of the gateway's own "
            "([tor] mode = 'launch'); an attached tor's other onion services would be replaced"
        )
    for entry in config.outbound.mta_sts_connect_to:
        if mta_sts_connect_target(entry) is None:
            raise GatewayConfigError(
                f"{p}: [outbound] mta_sts_connect_to: expected 'mta-sts.DOMAIN=ADDRESS:PORT', "
                f"got {entry!r}"
            )
    d = config.delivery
    if not 0 < d.retry_initial <= d.retry_max or d.max_lifetime <= 0:
        raise GatewayConfigError(f"{p}: [delivery] retry_initial: positive, <= retry_max")


def _check_each(values: tuple[str, ...], parse: Any, where: str, expected: str) -> None:
    """Each of ``values`` parses with ``parse``, else an error naming ``where``."""
    for value in values:
        try:
            parse(value)
        except ValueError:
            raise GatewayConfigError(f"{where}: {value!r} is not {expected}") from None


def mta_sts_connect_target(entry: str) -> tuple[str, tuple[str, int]] | None:
    """``"mta-sts.d=ADDR:PORT"`` as ``("mta-sts.d", (ADDR, PORT))``; None when malformed."""
    host, sep, target = entry.partition("=")
    address, colon, port = target.rpartition(":")
    host = host.strip().rstrip(".").lower()
    if not (sep and colon and address and host.startswith("mta-sts.") and port.isdigit()):
        return None
    if not 0 < int(port) <= 65535:
        return None
    return host, (address.strip("[]"), int(port))


def render_gateway_config(domain: str, *, require_approval: bool, testnet: str = "") -> str:
    """The text ``onionmail-gateway init`` writes; defaults shown commented."""
    testnet_line = f'testnet = "{testnet}"' if testnet else '# testnet = ""'
    return f"""# onionmail gateway configuration. Every key but [gateway] domain is optional.
# Each key is documented in gateway/config.py and README.md, section "Gateway".

[gateway]
domain = "{domain}"
require_approval = {"true" if require_approval else "false"}  # false: any Tor user gets an alias
# mx_host = ""                 # this server's name in the MX record; empty: mail.<domain>
# public_addresses = []        # its public IPv4/IPv6: for dns-records and check-dns
# operator_forward = ""         # postmaster@/abuse@... mail: empty keeps it in GWDIR/operator
# max_aliases_per_box = 3
# dkim_selector = "gw1"        # publishes gw1-ed25519._domainkey and gw1-rsa._domainkey
# keep_display_name = true

[smtp]                         # the clearnet MX of the domain
# host = "127.0.0.1"           # "0.0.0.0" to serve the internet
# port = 25
# tls_cert = ""                # PEM chain offered with STARTTLS (strongly recommended)
# tls_key = ""
# max_message_size = 26214400
# max_recipients = 50
# max_connections = 100
# timeout = 300.0
# data_timeout = 1800.0
# rate_limit = 60              # messages per client address per rate_window
# rate_window = 3600.0
# rate_allow = []              # addresses/networks exempt from rate_limit (your own relays)
# enforce_dmarc = true         # p=reject refused (550), p=quarantine to the box's Junk

[onion]                        # the boxes' side, behind the gateway's onion
# max_message_size = 26214400
# max_recipients = 50
# max_connections = 50
# alias_messages_per_hour = 100   # sending limits; past them 450 4.7.1 (the box retries)
# alias_recipients_per_day = 500
# box_messages_per_hour = 200     # one box, all its aliases
# box_recipients_per_day = 1000

[dns]                          # a validating resolver, on loopback
# resolver = "127.0.0.1"       # loopback only (its AD bit is trusted)
# trust_remote_resolver = false
# port = 53
# timeout = 5.0

[outbound]
# ca_file = ""                 # empty: the system's CA store
# mx_port = 25
# allow_private_mx = false     # true only on a private test network
# mta_sts = true
# mta_sts_connect_to = []      # ["mta-sts.DOMAIN=ADDRESS:PORT"]: fetch from there

[tor]
# mode = "launch"              # or "attach" with control_socket / control_port
{testnet_line}

[metrics]
# listen = ""                  # "127.0.0.1:9464": Prometheus /metrics (loopback only)

[storage]
# url = ""                     # empty: SQLite in state/; "postgresql://user@host/db" to share

[delivery]
# retry_initial = 30.0
# retry_max = 3600.0
# max_lifetime = 432000.0
"""


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ValueError unless the host
    is a loopback address and the port a port."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback or not port.isdigit() or int(port) > 65535:
        raise ValueError(listen)
    return host, int(port)
