"""The box's configuration: ``BOXDIR/onionmail.toml``, typed, frozen, validated once.

Every error names the file and the key, for example::

    /home/a/box/onionmail.toml: [submission] port: expected an integer 1-65535, got "x"

Unknown keys are errors too: a misspelt ``max_mesage_size`` silently ignored
would leave the user believing a limit is in force.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

from onionmail.errors import ConfigError
from onionmail.mail_address import is_valid_local_part

CONFIG_NAME = "onionmail.toml"

MIN_LINE_LENGTH = 1000
MAX_LINE_LENGTH = 65536
UINT32_MAX = 2**32 - 1
MAX_STREAMS = 65535  # tor's HS_CONFIG_MAX_STREAMS_PER_RDV_CIRCUIT

T = TypeVar("T")


@dataclass(frozen=True)
class BoxSection:
    """[box]: who the box is."""

    local_parts: tuple[str, ...] = ("postmaster",)
    """Local parts hosted by this box: mail to ``<part>@<onion>`` is accepted."""
    max_connections_total: int = 25
    """Most SMTP sessions open at once across both servers; one more is answered ``421
    4.7.0 Too many connections`` and closed. It bounds the box's sockets and the memory
    its sessions can hold (aiosmtpd buffers a message in memory until its final dot).
    The default is below [inbound] + [submission] ``max_connections`` (20 + 10) yet
    leaves 5 sessions to the user's own client while peers hold all 20 inbound ones."""


@dataclass(frozen=True)
class SubmissionSection:
    """[submission]: the SMTP server for the user's own mail client, loopback only."""

    host: str = "127.0.0.1"
    """Listen address. Only loopback addresses are accepted."""
    port: int = 1587
    """Listen port; 0 picks a free one at each start (written to the run status)."""
    max_message_size: int = 25 * 1024 * 1024
    """Largest message accepted, in bytes (announced with ESMTP SIZE)."""
    max_recipients: int = 100
    """Most RCPT TO per message; each one more is answered ``452 4.5.3``."""
    timeout: float = 300.0
    """Seconds a client may stay silent (waiting for a command, or between two chunks of
    DATA) before it gets ``421 4.4.2`` and is dropped."""
    data_timeout: float = 1800.0
    """Seconds a whole DATA transfer may take, however steadily it flows."""
    max_connections: int = 10
    """Most sessions open at once on this server; one more gets ``421 4.7.0``. A mail
    client uses one or a few; 10 leaves room for several devices."""
    max_line_length: int = 1000
    """Longest line accepted, in octets including CRLF (RFC 5321 4.5.3.1.6 says 1000;
    the dot added by transparency is not counted). A longer line in DATA fails the
    message with ``500``. At least 1000, at most 65536."""
    max_bad_commands: int = 20
    """Unknown or refused commands (``5xx`` replies other than 550/552/553/554, such as
    a failed AUTH) tolerated per session; the next one gets ``421 4.7.0`` and the
    connection is closed."""


@dataclass(frozen=True)
class InboundSection:
    """[inbound]: the SMTP server behind the onion's virtual port 25."""

    max_message_size: int = 25 * 1024 * 1024
    """Largest message accepted, in bytes (for sealed mail: the decoded envelope)."""
    max_recipients: int = 100
    """Most RCPT TO per message; each one more is answered ``452 4.5.3``."""
    timeout: float = 300.0
    """Seconds a peer may stay silent (waiting for a command, or between two chunks of
    DATA) before it gets ``421 4.4.2`` and is dropped."""
    data_timeout: float = 1800.0
    """Seconds a whole DATA transfer may take, however steadily it flows (at the default
    size limit, a sealed message must arrive at about 21 KiB/s or more)."""
    max_connections: int = 20
    """Most peer sessions open at once; one more gets ``421 4.7.0 Too many connections,
    try again later`` (senders retry later, nothing is lost). An onionmail peer opens at
    most 8 at a time; 20 serves a few busy peers at once while bounding memory."""
    max_line_length: int = 1000
    """Longest line accepted, in octets including CRLF (RFC 5321 4.5.3.1.6 says 1000;
    the dot added by transparency is not counted). A longer line in DATA fails the
    message with ``500``. At least 1000, at most 65536."""
    max_bad_commands: int = 20
    """Unknown or refused commands (``5xx`` replies other than 550/552/553/554) tolerated
    per session; the next one gets ``421 4.7.0`` and the connection is closed."""
    require_seal_for_onion_senders: bool = True
    """Refuse unsealed mail whose MAIL FROM is a v3 .onion address: such a sender can be
    verified, so an unsealed claim is treated as forged. Plain peers with ordinary
    domains (OnionMX style) are still accepted, marked unverified."""


@dataclass(frozen=True)
class TorSection:
    """[tor]: how the box reaches tor."""

    mode: str = "launch"
    """``launch``: start a tor of the box's own (data in BOXDIR/tor, 0700).
    ``attach``: use a running tor through control_socket or control_port."""
    control_socket: str = ""
    """attach mode: path of tor's ControlSocket."""
    control_port: int = 0
    """attach mode: tor's ControlPort on 127.0.0.1 (used when control_socket is empty)."""
    socks_port: int = 0
    """attach mode: tor's SocksPort on 127.0.0.1; 0 asks tor for its first listener."""
    testnet: str = ""
    """Directory of a private Tor network (``onionmail testnet up``) to join instead of
    the public Tor network. Empty: the public network."""
    bootstrap_timeout: float = 120.0
    """Seconds to wait for tor to bootstrap to 100 %."""
    publish_timeout: float = 90.0
    """Seconds to wait for the onion service descriptor to be uploaded."""
    socks_timeout: float = 60.0
    """Seconds a connection to a peer onion may take (tor builds the rendezvous)."""
    pow_defenses: bool = True
    """Ask tor for the proof-of-work defence of the box's onion (``ADD_ONION
    PoWDefensesEnabled=1``): under an introduction flood, clients that solved a harder
    puzzle are served first; when there is no flood the puzzle effort stays 0. Needs
    tor 0.4.9.2 or later; an older tor refuses the keyword, and the box then publishes
    without it and logs a warning. (Tor's other onion defence, rate limiting at the
    introduction points, cannot be set for an ephemeral onion: ADD_ONION has no
    keyword for it and the HiddenServiceEnableIntroDoS* options need a
    HiddenServiceDir; the introduction points apply the network's consensus values.)"""
    pow_queue_rate: int = 25
    """Rendezvous requests per second tor serves from its proof-of-work priority queue
    (``PoWQueueRate``; tor's default is 250, sized for web sites). A mail box needs a
    few per minute; at a lower rate a smaller flood already fills the queue, which is
    what makes tor raise the suggested puzzle effort. 0: no limit."""
    pow_queue_burst: int = 250
    """Most rendezvous requests served from the queue at once (``PoWQueueBurst``;
    tor's default 2500). At least pow_queue_rate."""
    max_streams_per_circuit: int = 10
    """Most streams one client circuit may have open to the onion at once (``ADD_ONION
    MaxStreams`` with ``MaxStreamsCloseCircuit``: one more and tor closes that circuit,
    with every session on it). An onionmail peer runs up to 8 sessions at a time over
    one circuit per destination, so keep this above 8; the cap makes a single cheap
    circuit take at most half of [inbound] max_connections. 0: no cap."""


@dataclass(frozen=True)
class DeliverySection:
    """[delivery]: the outbound queue."""

    smtp_timeout: float = 120.0
    """Seconds for each SMTP command/response with a peer."""
    retry_initial: float = 30.0
    """Seconds before the first retry; doubles per attempt, with +-50 % jitter."""
    retry_max: float = 3600.0
    """Upper bound of the retry interval, in seconds."""
    max_lifetime: float = 5 * 24 * 3600.0
    """Seconds a message may stay queued before it is bounced to its sender."""


@dataclass(frozen=True)
class Config:
    """The whole configuration of one box."""

    path: Path
    box: BoxSection = field(default_factory=BoxSection)
    submission: SubmissionSection = field(default_factory=SubmissionSection)
    inbound: InboundSection = field(default_factory=InboundSection)
    tor: TorSection = field(default_factory=TorSection)
    delivery: DeliverySection = field(default_factory=DeliverySection)

    @property
    def box_dir(self) -> Path:
        return self.path.parent


def load_config(box_dir: Path) -> Config:
    """Read and validate ``box_dir/onionmail.toml``."""
    path = box_dir / CONFIG_NAME
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such file; create the box with 'onionmail init --dir {box_dir}'"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(raw, path)


_SECTIONS: dict[str, type[Any]] = {
    "box": BoxSection,
    "submission": SubmissionSection,
    "inbound": InboundSection,
    "tor": TorSection,
    "delivery": DeliverySection,
}


def parse_config(raw: Mapping[str, Any], path: Path) -> Config:
    """Build a :class:`Config` from parsed TOML, naming ``path`` and the key on errors."""
    for name in raw:
        if name not in _SECTIONS:
            raise ConfigError(f"{path}: [{name}]: unknown section (known: {', '.join(_SECTIONS)})")
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}]: expected a table")
        sections[name] = _build_section(cls, table, f"{path}: [{name}]")
    config = Config(path=path, **sections)
    _check_semantics(config)
    return config


def _build_section(cls: type[T], table: Mapping[str, Any], where: str) -> T:
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
    for kind, ok, wanted in checks:
        if isinstance(default, kind):
            if not ok(value):
                raise ConfigError(f"{where}: expected {wanted}, got {value!r}")
            return float(value) if kind is float else value
    raise ConfigError(f"{where}: unsupported value")  # pragma: no cover - defaults are typed


def _check_semantics(config: Config) -> None:
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
    d = config.delivery
    if not 0 < d.retry_initial <= d.retry_max:
        raise ConfigError(f"{p}: [delivery] retry_initial: must be positive and <= retry_max")
    if d.max_lifetime <= 0 or d.smtp_timeout <= 0:
        raise ConfigError(f"{p}: [delivery] max_lifetime: must be positive")


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


def render_config(
    local_parts: tuple[str, ...],
    submission_port: int,
    testnet: str = "",
    retry_initial: float | None = None,
) -> str:
    """The text ``onionmail init`` writes: the chosen values, the rest commented defaults."""
    parts = ", ".join(f'"{p}"' for p in local_parts)
    testnet_line = f'testnet = "{_toml_escape(testnet)}"' if testnet else '# testnet = ""'
    retry_line = (
        f"retry_initial = {float(retry_initial)!r}"
        if retry_initial is not None
        else "# retry_initial = 30.0"
    )
    return f"""# onionmail box configuration. Every key is optional; defaults are shown commented.
# Documentation of each key: README.md, section "Configuration".

[box]
local_parts = [{parts}]
# max_connections_total = 25

[submission]
host = "127.0.0.1"
port = {submission_port}
# max_message_size = 26214400
# max_recipients = 100
# timeout = 300.0
# data_timeout = 1800.0
# max_connections = 10
# max_line_length = 1000
# max_bad_commands = 20

[inbound]
# max_message_size = 26214400
# max_recipients = 100
# timeout = 300.0
# data_timeout = 1800.0
# max_connections = 20
# max_line_length = 1000
# max_bad_commands = 20
# require_seal_for_onion_senders = true

[tor]
# mode = "launch"          # or "attach" with control_socket / control_port
{testnet_line}
# bootstrap_timeout = 120.0
# publish_timeout = 90.0
# socks_timeout = 60.0
# pow_defenses = true       # tor's proof-of-work defence for the onion (tor >= 0.4.9.2)
# pow_queue_rate = 25
# pow_queue_burst = 250
# max_streams_per_circuit = 10

[delivery]
# smtp_timeout = 120.0
{retry_line}
# retry_max = 3600.0
# max_lifetime = 432000.0
"""


def _toml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
