"""The sections of ``onionmail.toml`` as typed, frozen dataclasses, a docstring per key.

:mod:`onionmail.config.box` loads, validates and renders them; import them from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
class SessionLimits:
    """How long and how much one SMTP session may go on (every listener's section)."""

    transaction_timeout: float = 300.0
    """Seconds a session may go without completing a mail transaction (its DATA transfers
    not counted); then ``421 4.4.2``. Commands that carry no mail (NOOP, RSET, EHLO, VRFY)
    cannot hold a connection slot for longer."""
    max_session_time: float = 3600.0
    """Seconds a session may last in all, however much mail it carries; then ``421 4.4.2``
    (checked between commands, never in the middle of a DATA transfer)."""
    max_commands: int = 1000
    """Commands a session may send in all; the next one gets ``421 4.7.0``."""

    def listener_options(self) -> dict[str, Any]:
        """What these settings give a listener (``start_smtp_server`` keywords): the
        limits above and the section's own timeouts, slots and line limits."""
        options: dict[str, Any] = {
            "transaction_timeout": self.transaction_timeout,
            "max_session_time": self.max_session_time,
            "max_commands": self.max_commands,
        }
        for name in _LISTENER_KEYS:
            if hasattr(self, name):
                options[name] = getattr(self, name)
        return options


_LISTENER_KEYS = (
    "timeout",
    "data_timeout",
    "max_connections",
    "max_line_length",
    "max_bad_commands",
)
"""Keys a listener's section may have besides the limits (each listener has some)."""


@dataclass(frozen=True)
class SubmissionSection(SessionLimits):
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
    keep_sent: bool = True
    """File a copy of every message the box accepts for sending in the sender's ``.Sent``
    Maildir folder (read, as sent: scrubbed), where the TUI, neomutt and IMAP clients find
    it. Like received mail it lies in clear on the box's disk; the ledger counts it.
    ``false``: the box keeps no copy once the message is delivered."""


@dataclass(frozen=True)
class InboundSection(SessionLimits):
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
    accept_seal_v1: bool = True
    """Accept mail sealed with version 1 (boxes older than the handshake seal), marked
    ``sealed-v1`` in the ledger and the TUI. Version 1 has no forward secrecy, and whoever
    holds this box's onion key can forge such mail from any onion. ``false`` refuses it
    with ``550``: the sending box must be updated. Version 2 is always accepted."""
    strangers: str = "requests"
    """Mail from senders the box does not know (not in the address book, never written
    to, never accepted): ``requests`` puts it in the ``Requests`` folder, ``inbox`` in
    INBOX, ``refuse`` refuses it (``550 5.7.1``). Contacts' mail always goes to INBOX."""
    pow_bits: int = 9
    """Proof of work a stranger's onion mail must carry: a stamp with this many zero
    bits of argon2id (about 2**bits evaluations; 9 is around a second of one core). 0: no
    stamp. A missing or wrong stamp gets ``450 4.7.0`` with the cost, and an onionmail
    box makes one and retries. At most 20."""
    pow_memory_kib: int = 8192
    """Memory of each argon2id evaluation of a stamp, in KiB (at least 8)."""
    stranger_messages_per_hour: int = 10
    """Most messages one stranger (an onion, or a clearnet address) may send per hour;
    the next gets ``450 4.7.1``. 0: no limit. Counted on disk: a restart keeps it."""
    strangers_messages_per_hour: int = 200
    """Most messages all strangers together may send per hour (``450 4.7.1`` past it),
    so a flood of fresh onions cannot fill the disk. 0: no limit."""
    stranger_refusal_delay: float = 1.0
    """Seconds a stranger's refused RCPT waits for its answer (a stamp wanted, a limit,
    a block): a flood of stamp-less RCPTs then costs the flooder time, one answer per
    second per session, instead of costing the box the CPU its contacts' mail needs.
    The session's other commands are not slowed."""


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
    """Seconds for each SMTP command/response with a peer. A peer silent that long is
    tried again on a new circuit (the old one may be lost without a word)."""
    retry_initial: float = 30.0
    """Seconds before the first retry; doubles per attempt, with +-50 % jitter."""
    retry_max: float = 3600.0
    """Upper bound of the retry interval, in seconds."""
    max_lifetime: float = 5 * 24 * 3600.0
    """Seconds a message may stay queued before it is bounced to its sender."""


POLICY_RULES = (
    "never-clearnet",
    "require-sealed",
    "never-plaintext-subject",
    "require-padding",
    "never-from-strangers",
)
"""The rule names :mod:`onionmail.box.policy` implements."""


@dataclass(frozen=True)
class PolicySection:
    """[policy]: which leaks a send may cause; see :mod:`onionmail.box.policy` for the rules."""

    rules: tuple[str, ...] = ()
    """Rules for every recipient: ``never-clearnet``, ``require-sealed``,
    ``never-plaintext-subject``, ``require-padding``. None by default: onion mail
    is sealed anyway, and plain onion peers (OnionMX style) stay reachable. And one for
    mail coming in: ``never-from-strangers`` refuses mail from senders the box does not
    know, as ``[inbound] strangers = "refuse"`` does."""
    contacts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """More rules per recipient, keyed by address or by onion (all its addresses):
    ``[policy.contacts]`` then ``"bob@<onion>.onion" = ["require-sealed"]``."""
    plaintext_allowed: tuple[str, ...] = ()
    """Clearnet recipients (addresses or domains) whose mail the gateway may deliver
    to their MX without TLS (a stripped STARTTLS, a bad certificate). Empty by
    default: TLS is required; the ledger records the weaker path when it is used."""

    def rules_for(self, address: str) -> tuple[str, ...]:
        """The rules for ``address``: the default ones, its onion's, its own."""
        domain = address.rsplit("@", 1)[-1]
        extra = self.contacts.get(domain, ()) + self.contacts.get(address, ())
        return tuple(dict.fromkeys(self.rules + extra))

    def allows_plaintext(self, address: str) -> bool:
        """Whether ``address`` (or its domain) is in ``plaintext_allowed``."""
        wanted = {entry.lower() for entry in self.plaintext_allowed}
        address = address.lower()
        return address in wanted or address.rsplit("@", 1)[-1] in wanted


TIMING_MODES = ("immediate", "delay", "batch")
"""The values of ``[timing] mode``; :mod:`onionmail.box.timing` applies them."""
DELAY_CAP = 8.0
"""A delay-mode hold is at most this many times ``mean_delay`` (cuts e^-8, 0.03 %, of draws)."""


@dataclass(frozen=True)
class ContactTiming:
    """``[timing.contacts."<onion or address>"]``: the timing policy for one contact.

    Keys the table leaves out take the ``[timing]`` value.
    """

    contact: str
    """``<56 characters>.onion`` (every address at that onion) or ``name@<onion>`` (that
    address only, which wins over its onion), lowercased."""
    mode: str
    """As ``[timing] mode``, for mail to this contact."""
    mean_delay: float
    """As ``[timing] mean_delay``."""
    batch_interval: float
    """As ``[timing] batch_interval``."""


@dataclass(frozen=True)
class TimingSection:
    """[timing]: when queued mail first leaves the box, and cover traffic.

    The defaults send at once and send no dummies: holding mail costs latency on
    every message, cover traffic costs bandwidth (yours, your contacts', tor's),
    and both help only against an observer of traffic timing. The user opts in.
    """

    mode: str = "immediate"
    """``immediate``: a message is tried as soon as it is queued. ``delay``: each one is
    held for a random time, exponentially distributed with mean ``mean_delay`` (at most
    8 times the mean). ``batch``: messages wait for the next multiple of
    ``batch_interval`` seconds since the Unix epoch, so every box with the same interval
    sends at the same instants. Retries keep the ``[delivery]`` backoff."""
    mean_delay: float = 600.0
    """delay mode: the mean hold in seconds, above 0 and at most 21600 (6 hours)."""
    batch_interval: float = 900.0
    """batch mode: seconds between sending instants, above 0 and at most 86400."""
    cover_rate: float = 0.0
    """Dummy envelopes per hour to each cover contact, at random (Poisson) times; 0 = no
    cover traffic. Fractions are allowed (0.5: one every two hours on average), at most
    3600. Dummies follow the contact's timing policy, like real mail to it."""
    cover_contacts: tuple[str, ...] = ()
    """Onionmail boxes to send dummies to: ``name@<onion>`` (best: the address you write
    to, so a dummy's SMTP envelope is the one your mail to it uses) or a bare ``<onion>``
    (then ``postmaster@<onion>``, which that box must host). A dummy is sealed and padded
    like a short message and dropped by the receiving box once it opens the seal; it
    never bounces and ``onionmail queue`` does not list it."""
    contacts: tuple[ContactTiming, ...] = ()
    """Per-contact overrides of mode, mean_delay and batch_interval, from
    ``[timing.contacts."<onion or address>"]`` tables, in file order. For a message,
    an address's table wins over its onion's, which wins over ``[timing]``."""


@dataclass(frozen=True)
class ScrubSection:
    """[scrub]: what submission removes or rewrites in mail from the user's client.

    Trace fields (``Received``, ``X-Originating-IP``, ...) are always removed and
    ``Message-ID`` is always regenerated; see :mod:`onionmail.message.scrub` for every rule.
    """

    date_rounding: int = 60
    """Seconds ``Date`` is rounded down to, in UTC: 60 drops the seconds, 3600 keeps the
    hour, 1 keeps the seconds. 1-86400, and a divisor of 86400 so that the steps start
    at midnight UTC."""
    remove_content_language: bool = True
    """Remove ``Content-Language`` (Thunderbird sets it from the spell checker's
    dictionary: a trait of the machine, not of the message)."""
    extra_remove_headers: tuple[str, ...] = ()
    """More fields to remove: names (``X-Priority``) or prefixes (``X-Corp-*``), any
    case. They may not match From, Date, Message-ID, MIME-Version, Content-Type or
    Content-Transfer-Encoding."""
    keep_headers: tuple[str, ...] = ()
    """Client fields removed by default that you want to send anyway (``User-Agent``,
    to tell recipients your client): names, or a client prefix such as ``X-Mozilla-*``.
    Trace fields cannot be kept; for Content-Language use remove_content_language."""


@dataclass(frozen=True)
class DevicesSection:
    """[devices]: the owner's phones and laptops (``onionmail device add``).

    Devices reach the box through a second onion service, with v3 client
    authorization, that carries IMAP (port 143, the box's private Dovecot) and
    submission (port 587). It is published only while at least one device exists.
    """

    local_imap_port: int = 0
    """A loopback port where the same IMAP also listens, for a mail client on the box's
    own machine (Dovecot on 127.0.0.1, plain, the devices' passwords). 0: off."""
    dovecot: str = ""
    """The dovecot binary; empty: ``dovecot`` on PATH, else Debian's /usr/sbin/dovecot."""
