"""The box's configuration: ``BOXDIR/onionmail.toml``, typed, frozen, validated once.

Every error names the file and the key, for example::

    /home/a/box/onionmail.toml: [submission] port: expected an integer 1-65535, got "x"

Unknown keys are errors too: a misspelt ``max_mesage_size`` silently ignored
would leave the user believing a limit is in force.

The section dataclasses live in :mod:`onionmail.config.sections`; this module
loads, validates and renders them, and re-exports them.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from onionmail.config.gateway import GatewaySection, OnionMxSection, parse_gateway, parse_onion_mx
from onionmail.config.sections import (
    DELAY_CAP,
    POLICY_RULES,
    TIMING_MODES,
    BoxSection,
    ContactTiming,
    DeliverySection,
    DevicesSection,
    InboundSection,
    PolicySection,
    ScrubSection,
    SubmissionSection,
    TimingSection,
    TorSection,
)
from onionmail.config.template import render_config
from onionmail.core import header_fields
from onionmail.core.errors import AddressError, ConfigError
from onionmail.core.mail_address import is_valid_local_part, parse_onion_mail_address
from onionmail.core.onion_address import ONION_SUFFIX, decode_onion_address

CONFIG_NAME = "onionmail.toml"

MIN_LINE_LENGTH = 1000
MAX_LINE_LENGTH = 65536
UINT32_MAX = 2**32 - 1
MAX_STREAMS = 65535  # tor's HS_CONFIG_MAX_STREAMS_PER_RDV_CIRCUIT
MAX_MEAN_DELAY = 6 * 3600.0
MAX_BATCH_INTERVAL = 24 * 3600.0
MAX_COVER_RATE = 3600.0

__all__ = [
    "BoxSection",
    "CONFIG_NAME",
    "Config",
    "ContactTiming",
    "DELAY_CAP",
    "DeliverySection",
    "InboundSection",
    "POLICY_RULES",
    "PolicySection",
    "ScrubSection",
    "DevicesSection",
    "SubmissionSection",
    "TIMING_MODES",
    "TimingSection",
    "TorSection",
    "load_config",
    "parse_config",
    "build_sections",
    "read_toml",
    "render_config",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Config:
    """The whole configuration of one box."""

    path: Path
    box: BoxSection = field(default_factory=BoxSection)
    submission: SubmissionSection = field(default_factory=SubmissionSection)
    inbound: InboundSection = field(default_factory=InboundSection)
    tor: TorSection = field(default_factory=TorSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)
    policy: PolicySection = field(default_factory=PolicySection)
    timing: TimingSection = field(default_factory=TimingSection)
    scrub: ScrubSection = field(default_factory=ScrubSection)
    devices: DevicesSection = field(default_factory=DevicesSection)
    gateway: GatewaySection = field(default_factory=GatewaySection)
    onion_mx: OnionMxSection = field(default_factory=OnionMxSection)

    @property
    def box_dir(self) -> Path:
        return self.path.parent


def load_config(box_dir: Path) -> Config:
    """Read and validate ``box_dir/onionmail.toml``."""
    path = box_dir / CONFIG_NAME
    raw = read_toml(path, f"create the box with 'onionmail init --dir {box_dir}'")
    return parse_config(raw, path)


def read_toml(path: Path, missing_hint: str) -> dict[str, Any]:
    """A configuration file's TOML; :class:`ConfigError` naming ``path`` if it cannot be read
    (``missing_hint`` says how to create it). The gateway's config file is read the same way."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; {missing_hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def build_sections(
    raw: Mapping[str, Any],
    sections: Mapping[str, type[Any]],
    path: Path,
    *,
    others: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Each of ``sections`` built from its table in ``raw`` (:func:`build_section`); a
    table that is neither one of them nor in ``others`` (parsed by the caller) is an error."""
    known = [*sections, *others]
    for name in raw:
        if name not in known:
            raise ConfigError(f"{path}: [{name}]: unknown section (known: {', '.join(known)})")
    built: dict[str, Any] = {}
    for name, cls in sections.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}]: expected a table")
        built[name] = build_section(cls, table, f"{path}: [{name}]")
    return built


_SECTIONS: dict[str, type[Any]] = {
    "box": BoxSection,
    "submission": SubmissionSection,
    "inbound": InboundSection,
    "tor": TorSection,
    "delivery": DeliverySection,
    "policy": PolicySection,
    "scrub": ScrubSection,
    "devices": DevicesSection,
}


def parse_config(raw: Mapping[str, Any], path: Path) -> Config:
    """Build a :class:`Config` from parsed TOML, naming ``path`` and the key on errors."""
    # [timing] has nested tables (_parse_timing); [gateway] and [onion_mx] are keyed by
    # onions and domains (onionmail.config.gateway).
    sections = build_sections(raw, _SECTIONS, path, others=("timing", "gateway", "onion_mx"))
    sections["timing"] = _parse_timing(raw.get("timing", {}), path)
    sections["gateway"] = parse_gateway(raw.get("gateway", {}), path)
    sections["onion_mx"] = parse_onion_mx(raw.get("onion_mx", {}), path)
    config = Config(path=path, **sections)
    _check_semantics(config)
    _check_timing_holds(config)
    return config


def build_section(cls: type[T], table: Mapping[str, Any], where: str) -> T:
    """A frozen dataclass section from a TOML table, typed per its defaults; errors name
    ``where`` and the key."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where} {key}: unknown key (known: {', '.join(known)})")
        default = getattr(cls(), key)
        values[key] = _coerce(value, default, f"{where} {key}")
    return cls(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    checks: list[tuple[type, Callable[[Any], bool], str]] = [
        (bool, lambda v: isinstance(v, bool), "true or false"),
        (int, lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
        (float, lambda v: isinstance(v, int | float) and not isinstance(v, bool), "a number"),
        (str, lambda v: isinstance(v, str), "a string"),
    ]
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}: expected a list of strings")
        return tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return {str(k): _coerce(v, (), f"{where}.{k!r}") for k, v in value.items()}
    for kind, ok, wanted in checks:
        if isinstance(default, kind):
            if not ok(value):
                raise ConfigError(f"{where}: expected {wanted}, got {value!r}")
            return float(value) if kind is float else value
    raise ConfigError(f"{where}: unsupported value")  # pragma: no cover - defaults are typed


def _check_policy(policy: PolicySection, p: Path) -> None:
    from onionmail.core.onion_address import is_onion_address

    for where, rules in [("rules", policy.rules)] + [
        (f"contacts.{key!r}", value) for key, value in policy.contacts.items()
    ]:
        for rule in rules:
            if rule not in POLICY_RULES:
                raise ConfigError(
                    f"{p}: [policy] {where}: unknown rule {rule!r} "
                    f"(known: {', '.join(POLICY_RULES)})"
                )
    for key in policy.contacts:
        host = key.rsplit("@", 1)[-1]
        if not is_onion_address(host) and "@" not in key:
            raise ConfigError(
                f"{p}: [policy] contacts.{key!r}: expected an address or a v3 .onion host"
            )
    for entry in policy.plaintext_allowed:
        local, at, domain = entry.rpartition("@")
        if (
            not domain
            or (at and not local)
            or domain.lower().endswith(".onion")
            or not re.fullmatch(r"[A-Za-z0-9.-]+", domain)
        ):
            raise ConfigError(
                f"{p}: [policy] plaintext_allowed: {entry!r}: expected a clearnet address or domain"
            )


def _check_semantics(config: Config) -> None:
    _check_policy(config.policy, config.path)
    p = config.path
    if not config.box.local_parts:
        raise ConfigError(f"{p}: [box] local_parts: at least one local part is needed")
    for part in config.box.local_parts:
        if not is_valid_local_part(part) or part != part.lower():
            raise ConfigError(
                f"{p}: [box] local_parts: {part!r} is not a valid lowercase local part"
            )
    if config.submission.host not in ("127.0.0.1", "::1", "localhost"):
        raise ConfigError(f"{p}: [submission] host: must be a loopback address (127.0.0.1 or ::1)")
    if not 0 <= config.submission.port <= 65535:
        raise ConfigError(f"{p}: [submission] port: expected 0-65535")
    for name in ("submission", "inbound"):
        section = getattr(config, name)
        if section.max_message_size < 1024:
            raise ConfigError(f"{p}: [{name}] max_message_size: at least 1024 bytes")
        if section.max_recipients < 1:
            raise ConfigError(f"{p}: [{name}] max_recipients: at least 1")
        if section.timeout <= 0:
            raise ConfigError(f"{p}: [{name}] timeout: must be positive")
        if section.data_timeout <= 0:
            raise ConfigError(f"{p}: [{name}] data_timeout: must be positive")
        for key in ("transaction_timeout", "max_session_time", "max_commands"):
            if getattr(section, key) <= 0:
                raise ConfigError(f"{p}: [{name}] {key}: must be positive")
        if section.max_connections < 1:
            raise ConfigError(f"{p}: [{name}] max_connections: at least 1")
        if not MIN_LINE_LENGTH <= section.max_line_length <= MAX_LINE_LENGTH:
            raise ConfigError(
                f"{p}: [{name}] max_line_length: expected {MIN_LINE_LENGTH}-{MAX_LINE_LENGTH} "
                "octets (RFC 5321 requires at least 1000)"
            )
        if section.max_bad_commands < 1:
            raise ConfigError(f"{p}: [{name}] max_bad_commands: at least 1")
    if config.box.max_connections_total < 1:
        raise ConfigError(f"{p}: [box] max_connections_total: at least 1")
    if config.tor.mode not in ("launch", "attach"):
        raise ConfigError(f"{p}: [tor] mode: expected 'launch' or 'attach'")
    if config.tor.mode == "attach" and not (config.tor.control_socket or config.tor.control_port):
        raise ConfigError(
            f"{p}: [tor] control_socket: attach mode needs control_socket or control_port"
        )
    for key in ("bootstrap_timeout", "publish_timeout", "socks_timeout"):
        if getattr(config.tor, key) <= 0:
            raise ConfigError(f"{p}: [tor] {key}: must be positive")
    _check_onion_defences(config.tor, p)
    _check_scrub(config.scrub, p)
    _check_strangers(config.inbound, p)
    if not 0 <= config.devices.local_imap_port <= 65535:
        raise ConfigError(f"{p}: [devices] local_imap_port: expected 0 (off) or a port")
    d = config.delivery
    if not 0 < d.retry_initial <= d.retry_max:
        raise ConfigError(f"{p}: [delivery] retry_initial: must be positive and <= retry_max")
    if d.max_lifetime <= 0 or d.smtp_timeout <= 0:
        raise ConfigError(f"{p}: [delivery] max_lifetime: must be positive")


def _check_strangers(inbound: InboundSection, p: Path) -> None:
    if inbound.strangers not in ("requests", "inbox", "refuse"):
        raise ConfigError(f"{p}: [inbound] strangers: expected 'requests', 'inbox' or 'refuse'")
    if not 0 <= inbound.pow_bits <= 20:
        raise ConfigError(f"{p}: [inbound] pow_bits: expected 0 (no stamp) to 20")
    if not 8 <= inbound.pow_memory_kib <= 256 * 1024:
        raise ConfigError(f"{p}: [inbound] pow_memory_kib: expected 8 to 262144 (KiB)")
    for key in ("stranger_messages_per_hour", "strangers_messages_per_hour"):
        if getattr(inbound, key) < 0:
            raise ConfigError(f"{p}: [inbound] {key}: expected 0 (no limit) or more")
    if not 0 <= inbound.stranger_refusal_delay <= 60:
        raise ConfigError(f"{p}: [inbound] stranger_refusal_delay: expected 0 to 60 seconds")


def _check_onion_defences(tor: TorSection, p: Path) -> None:
    if not 0 <= tor.pow_queue_rate <= UINT32_MAX:
        raise ConfigError(f"{p}: [tor] pow_queue_rate: expected 0-{UINT32_MAX} (0: no limit)")
    if not max(1, tor.pow_queue_rate) <= tor.pow_queue_burst <= UINT32_MAX:
        raise ConfigError(
            f"{p}: [tor] pow_queue_burst: expected at least pow_queue_rate "
            f"({tor.pow_queue_rate}) and at least 1, at most {UINT32_MAX}"
        )
    if not 0 <= tor.max_streams_per_circuit <= MAX_STREAMS:
        raise ConfigError(
            f"{p}: [tor] max_streams_per_circuit: expected 0-{MAX_STREAMS} (0: no cap)"
        )


# --- [timing] -------------------------------------------------------------------------


def _parse_timing(table: Any, path: Path) -> TimingSection:
    """[timing] and its ``[timing.contacts."..."]`` tables.

    Errors name a contact by its position, never by its address: a config error
    may end up in a system log, and the log must not tell whom the user writes to.
    """
    where = f"{path}: [timing]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    plain = {key: value for key, value in table.items() if key != "contacts"}
    base = build_section(TimingSection, plain, where)
    _check_timing_values(base.mode, base.mean_delay, base.batch_interval, where)
    if not 0 <= base.cover_rate <= MAX_COVER_RATE:
        raise ConfigError(f"{where} cover_rate: expected 0-{MAX_COVER_RATE:.0f} per hour")
    cover = []
    for n, text in enumerate(base.cover_contacts, 1):
        cover.append(_timing_contact(text, f"{where} cover_contacts: entry {n}"))
    if len(set(cover)) != len(cover):
        raise ConfigError(f"{where} cover_contacts: an entry appears twice")
    if base.cover_rate > 0 and not cover:
        raise ConfigError(f"{where} cover_rate: cover traffic needs cover_contacts")
    contacts = _parse_timing_contacts(table.get("contacts", {}), base, path)
    return TimingSection(
        base.mode, base.mean_delay, base.batch_interval, base.cover_rate, tuple(cover), contacts
    )


def _parse_timing_contacts(
    table: Any, base: TimingSection, path: Path
) -> tuple[ContactTiming, ...]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [timing] contacts: expected tables of per-contact keys")
    known = ("mode", "mean_delay", "batch_interval")
    contacts: list[ContactTiming] = []
    for n, (key, values) in enumerate(table.items(), 1):
        where = f"{path}: [timing.contacts] entry {n}"
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: expected a table")
        contact = _timing_contact(key, f"{where}")
        if contact in (c.contact for c in contacts):
            raise ConfigError(f"{where}: the same contact as an earlier entry")
        settings: dict[str, Any] = {name: getattr(base, name) for name in known}
        for name, value in values.items():
            if name not in known:
                raise ConfigError(f"{where} {name}: unknown key (known: {', '.join(known)})")
            settings[name] = _coerce(value, settings[name], f"{where} {name}")
        timing = ContactTiming(contact, **settings)
        _check_timing_values(timing.mode, timing.mean_delay, timing.batch_interval, where)
        contacts.append(timing)
    return tuple(contacts)


def _timing_contact(text: str, where: str) -> str:
    """``name@<onion>`` or ``<onion>``, validated (checksum included) and lowercased."""
    try:
        if "@" in text:
            return str(parse_onion_mail_address(text))
        if not text.lower().endswith(ONION_SUFFIX):
            raise AddressError("expected name@<onion>.onion or <onion>.onion")
        decode_onion_address(text)
    except AddressError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return text.lower()


def _check_timing_values(mode: str, mean_delay: float, batch_interval: float, where: str) -> None:
    if mode not in TIMING_MODES:
        raise ConfigError(f"{where} mode: expected one of {', '.join(TIMING_MODES)}")
    if not 0 < mean_delay <= MAX_MEAN_DELAY:
        raise ConfigError(f"{where} mean_delay: expected above 0, at most {MAX_MEAN_DELAY:.0f} s")
    if not 0 < batch_interval <= MAX_BATCH_INTERVAL:
        raise ConfigError(
            f"{where} batch_interval: expected above 0, at most {MAX_BATCH_INTERVAL:.0f} s"
        )


def _check_timing_holds(config: Config) -> None:
    """A held message must go out well before ``[delivery] max_lifetime`` bounces it."""
    timing, p = config.timing, config.path
    entries = [(f"{p}: [timing]", timing.mode, timing.mean_delay, timing.batch_interval)]
    entries += [
        (f"{p}: [timing.contacts] entry {n}", c.mode, c.mean_delay, c.batch_interval)
        for n, c in enumerate(timing.contacts, 1)
    ]
    for where, mode, mean_delay, batch_interval in entries:
        key, hold = {
            "delay": ("mean_delay", DELAY_CAP * mean_delay),
            "batch": ("batch_interval", batch_interval),
        }.get(mode, ("", 0.0))
        if hold * 2 > config.delivery.max_lifetime:
            raise ConfigError(
                f"{where} {key}: mail may be held {hold:.0f} s, more than half of "
                f"[delivery] max_lifetime ({config.delivery.max_lifetime:.0f} s)"
            )


_FIELD_NAME_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F)) - {":"}


def _check_scrub(scrub: ScrubSection, p: Path) -> None:
    if not 1 <= scrub.date_rounding <= 86400 or 86400 % scrub.date_rounding:
        raise ConfigError(
            f"{p}: [scrub] date_rounding: expected a divisor of 86400 seconds "
            "(1, 60, 300, 900, 3600, 86400, ...)"
        )
    for pattern in scrub.extra_remove_headers:
        name = pattern.removesuffix("*")
        if not name or not set(name) <= _FIELD_NAME_CHARS or "*" in name:
            raise ConfigError(
                f"{p}: [scrub] extra_remove_headers: {pattern!r} is not a field name "
                "or a prefix ending in '*'"
            )
        hit = sorted(
            f for f in header_fields.STRUCTURAL_FIELDS if header_fields.pattern_matches(pattern, f)
        )
        if hit:
            raise ConfigError(
                f"{p}: [scrub] extra_remove_headers: {pattern!r} would remove {', '.join(hit)}, "
                "which the message needs"
            )
    for name in scrub.keep_headers:
        if header_fields.is_trace_field(name):
            raise ConfigError(
                f"{p}: [scrub] keep_headers: {name!r} is a trace field, always removed "
                "(it names hosts, addresses or another server's verdict)"
            )
        if name.lower() == header_fields.CONTENT_LANGUAGE:
            raise ConfigError(
                f"{p}: [scrub] keep_headers: for Content-Language set "
                "remove_content_language = false"
            )
        if not header_fields.is_client_field(name):
            raise ConfigError(
                f"{p}: [scrub] keep_headers: {name!r} is not removed anyway (only client "
                "fields such as User-Agent or X-Mailer can be kept)"
            )
        if any(header_fields.pattern_matches(extra, name) for extra in scrub.extra_remove_headers):
            raise ConfigError(
                f"{p}: [scrub] keep_headers: {name!r} is also in extra_remove_headers"
            )
