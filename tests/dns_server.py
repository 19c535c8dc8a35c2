"""A real DNSSEC world on loopback for the gateway's tests: Knot DNS behind a validating Unbound.

The gateway trusts a TLSA record only when a validating resolver set the AD
bit, and defers when validation fails. Neither claim can be tested with a
mocked resolver: what matters is what a real validator does with real
signatures. So :func:`running_dns` starts two real servers on 127.0.0.1,
each on a free port, in a fresh directory:

* **Knot DNS** (``knotd``, foreground) serves the zones the test declares as
  Python data (:class:`Zone`, :class:`Record`) and signs the ``SIGNED`` and
  ``WRONG_ANCHOR`` ones itself (ECDSA P-256, one combined signing key);
* **Unbound** (``unbound -d``) is the validating resolver the gateway talks
  to: a ``stub-zone`` per test zone points at Knot, ``local-zone: "test."
  nodefault`` lifts Unbound's built-in NXDOMAIN for ``test.``, and the trust
  anchors are chosen per zone (:class:`Security`). There is no root anchor
  and no internet: only names under the declared zones can be resolved.

:class:`Security` says what the validator sees for a zone:

``SIGNED``            signed by Knot, Knot's key is the anchor: answers carry AD
``INSECURE``          unsigned and ``domain-insecure``: answers without AD
``WRONG_ANCHOR``      signed by Knot, anchored to a DS of some other key: SERVFAIL
``STRIPPED``          unsigned although anchored (an attacker removed the
                      signatures): SERVFAIL
``EXPIRED``           signed here with dnspython, signatures that expired a day
                      ago, served as they are by Knot, correct anchor: SERVFAIL

Both processes run as root in the foreground, their logs in the directory,
and are stopped by PID when the ``with`` block ends, whether or not the test
failed. Readiness is the signal itself: a DNS answer from each server.
Start-up takes a fraction of a second; share one world per test module::

    @pytest.fixture(scope="module")
    def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsWorld]:
        with running_dns(ZONES, tmp_path_factory.mktemp("dns")) as world:
            yield world

A missing ``knotd`` or ``unbound`` fails loudly (``make system-deps``
installs both); it never skips.
"""

from __future__ import annotations

import datetime
import enum
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.zone
from cryptography.hazmat.primitives.asymmetric import ec

KNOTD = "knotd"
KNOTC = "knotc"
UNBOUND = "unbound"
START_TIMEOUT = 10.0
"""Seconds each server gets to answer its first query."""
STOP_TIMEOUT = 5.0
HOST = "127.0.0.1"


class DnsTestError(RuntimeError):
    """The test DNS servers could not be started (missing binary, early exit, no answer)."""


class Security(enum.Enum):
    """How the validating resolver sees a zone (see the module docstring)."""

    SIGNED = "signed"
    INSECURE = "insecure"
    WRONG_ANCHOR = "wrong-anchor"
    STRIPPED = "stripped"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Record:
    """One resource record: owner relative to the zone (``@`` for the apex), type, rdata text."""

    owner: str
    rtype: str
    rdata: str
    ttl: int = 300


def mx(preference: int, host: str, owner: str = "@") -> Record:
    return Record(owner, "MX", f"{preference} {host}")


def a(owner: str, address: str = HOST) -> Record:
    return Record(owner, "A", address)


def aaaa(owner: str, address: str = "::1") -> Record:
    return Record(owner, "AAAA", address)


def txt(owner: str, text: str) -> Record:
    """A TXT record holding ``text`` as one quoted string (quotes and backslashes escaped)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return Record(owner, "TXT", f'"{escaped}"')


def tlsa(owner: str, usage: int, selector: int, mtype: int, data: bytes) -> Record:
    return Record(owner, "TLSA", f"{usage} {selector} {mtype} {data.hex()}")


def srv(owner: str, priority: int, weight: int, port: int, target: str) -> Record:
    return Record(owner, "SRV", f"{priority} {weight} {port} {target}")


@dataclass(frozen=True)
class Zone:
    """A zone the test world serves. SOA, NS and the name server's address are added."""

    name: str
    records: Sequence[Record]
    security: Security = Security.SIGNED

    @property
    def origin(self) -> str:
        return self.name.rstrip(".") + "."


@dataclass(frozen=True)
class DnsWorld:
    """A running world: where the validating resolver and the authoritative server listen."""

    resolver_host: str
    resolver_port: int
    authoritative_port: int
    directory: Path
    anchors: dict[str, str] = field(default_factory=dict)
    """The Unbound ``trust-anchor`` line per zone that has one."""

    def set_records(self, zone: str, owner: str, rtype: str, rdatas: Sequence[str]) -> None:
        """Replace the ``owner``/``rtype`` RRset of a running zone (via ``knotc``; Knot
        re-signs signed zones). Give such records TTL 0 in the zone so Unbound does
        not answer from its cache afterwards; the new ones get TTL 0 too."""
        origin = zone.rstrip(".") + "."
        fqdn = origin if owner == "@" else f"{owner}.{origin}"
        self._knotc("zone-begin", origin)
        try:
            self._knotc("zone-unset", origin, fqdn, rtype, check=False)
            for rdata in rdatas:
                self._knotc("zone-set", origin, fqdn, "0", rtype, rdata)
        except BaseException:
            self._knotc("zone-abort", origin, check=False)
            raise
        self._knotc("zone-commit", origin)

    def _knotc(self, *args: str, check: bool = True) -> None:
        argv = [_which(KNOTC) or KNOTC, "-s", str(self.directory / "knot.sock"), *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=STOP_TIMEOUT)
        if check and (result.returncode != 0 or "error" in result.stdout.lower()):
            raise DnsTestError(f"knotc {' '.join(args)} failed: {result.stdout}{result.stderr}")


def require_dns_tools() -> None:
    missing = [tool for tool in (KNOTD, UNBOUND) if _which(tool) is None]
    if missing:
        raise DnsTestError(
            f"{' and '.join(missing)} not installed: apt-get install knot unbound "
            "(or make system-deps)"
        )


def _which(tool: str) -> str | None:
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")


def free_port() -> int:
    """A port that is free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((HOST, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise DnsTestError("no port free for both UDP and TCP on 127.0.0.1")


# --- zone files ---------------------------------------------------------------------


def _zone_text(zone: Zone) -> str:
    lines = [
        f"$ORIGIN {zone.origin}",
        "$TTL 300",
        "@ SOA ns1 hostmaster 1 3600 600 86400 300",
        "@ NS ns1",
        f"ns1 A {HOST}",
    ]
    lines += [f"{r.owner} {r.ttl} {r.rtype} {r.rdata}" for r in zone.records]
    return "\n".join(lines) + "\n"


def _write_presigned_expired(zone: Zone, path: Path) -> str:
    """Sign ``zone`` with a fresh key whose signatures expired yesterday; return its anchor."""
    parsed = dns.zone.from_text(_zone_text(zone), origin=zone.origin, relativize=False)
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(
        key.public_key(), dns.dnssectypes.Algorithm.ECDSAP256SHA256, flags=257
    )
    now = datetime.datetime.now(datetime.UTC)
    dns.dnssec.sign_zone(
        parsed,
        keys=[(key, dnskey)],
        inception=now - datetime.timedelta(days=3),
        expiration=now - datetime.timedelta(days=1),
    )
    parsed.to_file(str(path), relativize=False)
    return _dnskey_anchor(zone.origin, dnskey)


def _dnskey_anchor(origin: str, dnskey: dns.rdtypes.ANY.DNSKEY.DNSKEY) -> str:
    return f"{origin} DNSKEY {dnskey.to_text()}"


def _random_ds_anchor(origin: str) -> str:
    """A DS anchor for a key that does not exist: validation under it can only fail."""
    return f"{origin} DS {secrets.randbelow(65535) + 1} 13 2 {secrets.token_hex(32)}"


# --- configuration --------------------------------------------------------------------


def _knot_conf(directory: Path, port: int, zones: Iterable[Zone]) -> str:
    zone_lines = []
    for zone in zones:
        zone_lines.append(f"  - domain: {zone.origin}")
        if zone.security in (Security.SIGNED, Security.WRONG_ANCHOR):
            zone_lines += ["    dnssec-signing: on", "    dnssec-policy: ecdsa"]
    return "\n".join(
        [
            "server:",
            f"    listen: {HOST}@{port}",
            f'    rundir: "{directory}"',
            f'    pidfile: "{directory}/knotd.pid"',
            "    udp-workers: 1",
            "    tcp-workers: 1",
            "    background-workers: 1",
            "log:",
            "  - target: stderr",
            "    any: info",
            "control:",
            f'    listen: "{directory}/knot.sock"',
            "database:",
            f'    storage: "{directory}/knot-db"',
            "policy:",
            "  - id: ecdsa",
            "    algorithm: ecdsap256sha256",
            "    single-type-signing: on",
            "    nsec3: off",
            "template:",
            "  - id: default",
            f'    storage: "{directory}/zones"',
            '    file: "%s.zone"',
            "    zonefile-sync: -1",
            "    zonefile-load: whole",
            "    journal-content: none",
            "zone:",
            *zone_lines,
        ]
    )


def _unbound_conf(
    directory: Path, port: int, knot_port: int, zones: Iterable[Zone], anchors: dict[str, str]
) -> str:
    lines = [
        "server:",
        f"    interface: {HOST}",
        f"    port: {port}",
        "    do-daemonize: no",
        '    username: ""',
        '    chroot: ""',
        f'    directory: "{directory}"',
        f'    pidfile: "{directory}/unbound.pid"',
        "    use-syslog: no",
        '    logfile: ""',
        "    verbosity: 1",
        "    val-log-level: 2",
        "    num-threads: 1",
        "    do-ip6: no",
        "    do-not-query-localhost: no",
        "    access-control: 127.0.0.0/8 allow",
        '    local-zone: "test." nodefault',
        '    module-config: "validator iterator"',
    ]
    for zone in zones:
        if zone.origin.endswith(".arpa."):  # reverse zones Unbound answers itself by default
            lines.append(f'    local-zone: "{zone.origin}" nodefault')
        if zone.security is Security.INSECURE:
            lines.append(f'    domain-insecure: "{zone.origin}"')
        elif zone.origin in anchors:
            lines.append(f'    trust-anchor: "{anchors[zone.origin]}"')
    lines += ["remote-control:", "    control-enable: no"]
    for zone in zones:
        lines += ["stub-zone:", f'    name: "{zone.origin}"', f"    stub-addr: {HOST}@{knot_port}"]
    return "\n".join(lines) + "\n"


# --- processes ------------------------------------------------------------------------


@contextmanager
def _process(argv: list[str], log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in the foreground, output to ``log_path``; stop it by PID at the end."""
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)


def _wait_for_answer(
    proc: subprocess.Popen[bytes],
    log_path: Path,
    port: int,
    qname: str,
    rdtype: str,
    accept: str,
) -> dns.message.Message:
    """Query ``port`` over TCP until an answer satisfies ``accept``; fail on exit or deadline.

    ``accept`` is ``"answer"`` (NOERROR with a non-empty answer section) or
    ``"any"`` (any well-formed response, SERVFAIL included).
    """
    deadline = time.monotonic() + START_TIMEOUT
    query = dns.message.make_query(qname, rdtype, want_dnssec=True)
    delay = 0.01
    while True:
        if proc.poll() is not None:
            raise DnsTestError(f"{proc.args!r} exited early:\n{_tail(log_path)}")
        try:
            response = dns.query.tcp(query, HOST, port=port, timeout=1.0)
        except (OSError, dns.exception.DNSException):
            response = None
        if response is not None and (accept == "any" or response.answer):
            return response
        if time.monotonic() > deadline:
            raise DnsTestError(f"no usable answer for {qname} {rdtype} on port {port}")
        time.sleep(delay)  # the retry cadence of the readiness probe above
        delay = min(delay * 2, 0.2)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _knot_key_anchor(response: dns.message.Message, origin: str) -> str:
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.DNSKEY:
            for rdata in rrset:
                if isinstance(rdata, dns.rdtypes.ANY.DNSKEY.DNSKEY) and rdata.flags & 1:
                    return _dnskey_anchor(origin, rdata)
    raise DnsTestError(f"Knot published no key-signing DNSKEY for {origin}")


DOCUMENTATION_REVERSE_ZONES = frozenset(
    {"2.0.192.in-addr.arpa.", "100.51.198.in-addr.arpa.", "113.0.203.in-addr.arpa."}
)
"""Reverse zones of the IPv4 documentation ranges (RFC 5737): no real name lives there."""


@contextmanager
def running_dns(zones: Sequence[Zone], directory: Path) -> Iterator[DnsWorld]:
    """Knot serving ``zones`` and a validating Unbound in front of it, for a ``with`` block."""
    require_dns_tools()
    names = [zone.origin for zone in zones]
    if len(set(names)) != len(names) or not all(
        n.endswith(".test.") or n in DOCUMENTATION_REVERSE_ZONES for n in names
    ):
        raise DnsTestError(
            "zone names must be distinct and end in .test (or be a documentation range's "
            "reverse zone)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    (directory / "knot-db").mkdir(exist_ok=True)
    zone_dir = directory / "zones"
    zone_dir.mkdir(exist_ok=True)

    anchors: dict[str, str] = {}
    for zone in zones:
        path = zone_dir / f"{zone.origin}zone"
        if zone.security is Security.EXPIRED:
            anchors[zone.origin] = _write_presigned_expired(zone, path)
        else:
            path.write_text(_zone_text(zone))
        if zone.security in (Security.WRONG_ANCHOR, Security.STRIPPED):
            anchors[zone.origin] = _random_ds_anchor(zone.origin)

    knot_port = free_port()
    knot_conf = directory / "knot.conf"
    knot_conf.write_text(_knot_conf(directory, knot_port, zones))
    with ExitStack() as stack:
        knot_log = directory / "knotd.log"
        knot_argv = [_which(KNOTD) or KNOTD, "-c", str(knot_conf)]
        knot = stack.enter_context(_process(knot_argv, knot_log))
        for zone in zones:
            signed_here = zone.security in (Security.SIGNED, Security.WRONG_ANCHOR)
            response = _wait_for_answer(
                knot, knot_log, knot_port, zone.origin, "DNSKEY" if signed_here else "SOA", "answer"
            )
            if zone.security is Security.SIGNED:
                anchors[zone.origin] = _knot_key_anchor(response, zone.origin)

        unbound_port = free_port()
        unbound_conf = directory / "unbound.conf"
        unbound_conf.write_text(_unbound_conf(directory, unbound_port, knot_port, zones, anchors))
        unbound_log = directory / "unbound.log"
        unbound = stack.enter_context(
            _process([_which(UNBOUND) or UNBOUND, "-d", "-c", str(unbound_conf)], unbound_log)
        )
        _wait_for_answer(unbound, unbound_log, unbound_port, zones[0].origin, "SOA", "any")
        yield DnsWorld(HOST, unbound_port, knot_port, directory, anchors)
