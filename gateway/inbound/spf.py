"""SPF (RFC 7208) for mail arriving at the gateway from the clearnet: a small, complete evaluator.

Written here, on dnspython through :class:`~gateway.dns.GatewayResolver`,
rather than taken from pyspf, because every query must go to the gateway's
one configured resolver with its time limit (pyspf picks its own resolver
and would be a second DNS stack on the inbound path), and because the
evaluator is small: the syntax of §4.6 and §12, eight mechanisms, two
modifiers and macros.

What it implements:

- ``check_host()`` of §4 for the MAIL FROM identity, or ``postmaster@<HELO>``
  when the reverse path is null (§2.4). A domain that is no usable DNS name
  gives ``none`` (§4.3); so does a domain without an SPF record. More than
  one ``v=spf1`` record is ``permerror`` (§4.5).
- The whole record is parsed before anything is evaluated, and any syntax
  error anywhere is ``permerror`` (§4.6): unknown mechanisms, a repeated
  ``redirect``/``exp``, bad CIDR lengths, a domain-spec without a proper
  top label, a malformed macro.
- Mechanisms ``all``, ``include``, ``a``, ``mx``, ``ip4``, ``ip6``,
  ``exists`` (§5), with dual CIDR lengths on ``a`` and ``mx``, IPv4-mapped
  IPv6 clients treated as IPv4, no implicit MX for ``mx`` (§5.4), at most
  ten MX hosts per ``mx`` (more is ``permerror``). Qualifiers ``+ - ~ ?``.
- ``include`` results map as in §5.2 (``none`` inside an include is
  ``permerror``); ``redirect`` applies only when nothing matched, and a
  target without a record is ``permerror`` (§6.1). ``exp`` is syntax-checked
  and otherwise ignored: the gateway never builds rejection texts from
  DNS data.
- Limits of §4.6.4: more than ten DNS-querying terms (``include``, ``a``,
  ``mx``, ``ptr``, ``exists``, ``redirect``) or more than two void lookups
  (NXDOMAIN or no answer) is ``permerror``. A void lookup is counted for
  the query a term makes on its own target, not for the address lookups
  of each MX host (an IPv6 client would otherwise exhaust the budget on
  any IPv4-only MX set). The whole evaluation has a time limit
  (:data:`SPF_TIME_LIMIT`, the 20 s §4.6.4 asks for); running out, or any
  DNS failure (SERVFAIL, a resolver timeout), is ``temperror``.
- Macros (§7) in domain-specs: letters ``s l o d i p h v``, digit and
  ``r`` transformers, delimiters, ``%% %_ %-``, upper case URL-escaped,
  over-long results truncated from the left. ``c r t`` (explanation-only
  letters) in a domain-spec are ``permerror``. ``%{p}`` always expands to
  ``unknown`` (allowed by §7.3).

Deliberate limit: ``ptr`` (which §5.5 says not to use) is parsed and
counted as a DNS term but never matches, as if its PTR lookup had failed;
the gateway does no reverse DNS of its peers.

:func:`check_spf` never raises on hostile input: every malformed record or
name ends in a ``permerror``/``none`` result. Names and addresses are never
logged; the result's ``reason`` names no domain either.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

import dns.rdata
import dns.rdatatype
import dns.rdtypes.ANY.MX

from gateway.errors import DnsError, GatewayError, SpfRecordError

log = logging.getLogger(__name__)

MAX_DNS_TERMS = 10
"""DNS-querying terms per evaluation, includes and redirects together (§4.6.4)."""
MAX_VOID_LOOKUPS = 2
"""Lookups answered with NXDOMAIN or no records before ``permerror`` (§4.6.4)."""
MAX_MX_HOSTS = 10
"""MX hosts one ``mx`` mechanism may name (§4.6.4)."""
SPF_TIME_LIMIT = 20.0
"""Seconds one whole evaluation may take, every lookup included (§4.6.4)."""

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class DnsLookups(Protocol):
    """What the checks need from a resolver (:class:`~gateway.dns.GatewayResolver` has it).

    Both return ``()`` for NXDOMAIN or NODATA and raise
    :class:`~gateway.errors.DnsError` when no answer can be had now.
    """

    async def txt(self, name: str) -> tuple[bytes, ...]: ...

    async def records(self, name: str, rdtype: str) -> tuple[dns.rdata.Rdata, ...]: ...


class SpfVerdict(StrEnum):
    """The results of RFC 7208 §2.6, spelled as in ``Authentication-Results``."""

    PASS = "pass"
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class SpfResult:
    verdict: SpfVerdict
    domain: str
    """The domain checked (lower case, as given: it may be no valid name); ``""`` if none."""
    identity: str
    """``"mailfrom"``, or ``"helo"`` when the reverse path was null."""
    reason: str = ""
    """Why, in a few words that name no domain or address."""
    dns_terms: int = 0
    """DNS-querying terms evaluated (at most :data:`MAX_DNS_TERMS` unless ``permerror``)."""


# --- syntax (§4.6.1, §5, §6, §7, §12) ---------------------------------------------------

_QUALIFIERS = {
    "+": SpfVerdict.PASS,
    "-": SpfVerdict.FAIL,
    "~": SpfVerdict.SOFTFAIL,
    "?": SpfVerdict.NEUTRAL,
}
_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9_.\-]*)=(.*)", re.S)
_DIRECTIVE = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9]*)(.*)", re.S)
_DOMAIN_AND_CIDR = re.compile(r"(?::(?P<spec>.+?))?(?:/(?P<v4>[0-9]+))?(?://(?P<v6>[0-9]+))?", re.S)
_MACRO = re.compile(
    r"%(?:\{(?P<letter>[A-Za-z])(?P<digits>[0-9]*)(?P<reverse>[rR]?)(?P<delims>[.\-+,/_=]*)\}"
    r"|(?P<escape>[%_-]))"
)
_DOMAIN_LETTERS = frozenset("slodiphv")
_ALL_LETTERS = _DOMAIN_LETTERS | frozenset("crt")
_TOPLABEL = re.compile(r"[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9\-]*[A-Za-z0-9]")
_CIDR_NUMBER = re.compile(r"0|[1-9][0-9]{0,2}")


@dataclass(frozen=True)
class SpfDirective:
    qualifier: str
    """One of ``+ - ~ ?``."""
    mechanism: str
    """``all include a mx ptr ip4 ip6 exists``, lower case."""
    domain_spec: str | None = None
    network: IpNetwork | None = None
    cidr4: int = 32
    cidr6: int = 128


@dataclass(frozen=True)
class SpfRecord:
    directives: tuple[SpfDirective, ...]
    redirect: str | None = None
    explanation: str | None = None


def is_spf1(text: bytes) -> bool:
    """True for a TXT string that is an SPF version 1 record (§4.5)."""
    lowered = text.lower()
    return lowered == b"v=spf1" or lowered.startswith(b"v=spf1 ")


def parse_spf_record(text: str) -> SpfRecord:
    """Parse a whole ``v=spf1`` record; raise :class:`~gateway.errors.SpfRecordError` on any
    syntax error (§4.6: such a record evaluates to ``permerror``)."""
    if not is_spf1(text.encode("utf-8", "surrogateescape")):
        raise SpfRecordError("not a v=spf1 record")
    directives: list[SpfDirective] = []
    modifiers: dict[str, str] = {}
    for term in text[len("v=spf1") :].split(" "):
        if not term:
            continue
        if not all("\x21" <= ch <= "\x7e" for ch in term):
            raise SpfRecordError("a term holds a character other than visible ASCII")
        modifier = _MODIFIER.fullmatch(term)
        if modifier is not None:
            name, value = modifier.group(1).lower(), modifier.group(2)
            if name in ("redirect", "exp"):
                if name in modifiers:
                    raise SpfRecordError(f"more than one {name}= modifier")
                _check_domain_spec(value)
                modifiers[name] = value
            else:
                _check_macro_string(value, _ALL_LETTERS)
            continue
        directives.append(_parse_directive(term))
    return SpfRecord(tuple(directives), modifiers.get("redirect"), modifiers.get("exp"))


def _parse_directive(term: str) -> SpfDirective:
    match = _DIRECTIVE.fullmatch(term)
    if match is None:
        raise SpfRecordError("a term is neither a mechanism nor a modifier")
    qualifier = match.group(1) or "+"
    mechanism, rest = match.group(2).lower(), match.group(3)
    if mechanism == "all":
        if rest:
            raise SpfRecordError("all takes no argument")
        return SpfDirective(qualifier, mechanism)
    if mechanism in ("include", "exists"):
        if not rest.startswith(":") or len(rest) == 1:
            raise SpfRecordError(f"{mechanism} needs :domain")
        _check_domain_spec(rest[1:])
        return SpfDirective(qualifier, mechanism, rest[1:])
    if mechanism == "ptr":
        if rest and (not rest.startswith(":") or len(rest) == 1):
            raise SpfRecordError("ptr takes only an optional :domain")
        spec = rest[1:] or None
        if spec is not None:
            _check_domain_spec(spec)
        return SpfDirective(qualifier, mechanism, spec)
    if mechanism in ("a", "mx"):
        parts = _DOMAIN_AND_CIDR.fullmatch(rest)
        if parts is None:
            raise SpfRecordError(f"{mechanism} has a malformed argument")
        spec = parts.group("spec")
        if spec is not None:
            _check_domain_spec(spec)
        cidr4 = _cidr(parts.group("v4"), 32)
        cidr6 = _cidr(parts.group("v6"), 128)
        return SpfDirective(qualifier, mechanism, spec, cidr4=cidr4, cidr6=cidr6)
    if mechanism in ("ip4", "ip6"):
        if not rest.startswith(":"):
            raise SpfRecordError(f"{mechanism} needs :address")
        return SpfDirective(qualifier, mechanism, network=_network(mechanism, rest[1:]))
    raise SpfRecordError("unknown mechanism")


def _cidr(text: str | None, maximum: int) -> int:
    if text is None:
        return maximum
    if _CIDR_NUMBER.fullmatch(text) is None or int(text) > maximum:
        raise SpfRecordError("a CIDR length is out of range")
    return int(text)


def _network(mechanism: str, text: str) -> IpNetwork:
    address, slash, length = text.partition("/")
    maximum = 32 if mechanism == "ip4" else 128
    prefix = _cidr(length if slash else None, maximum)
    try:
        if mechanism == "ip4":
            if not re.fullmatch(r"[0-9.]+", address):
                raise ValueError("not a dotted quad")
            return ipaddress.IPv4Network((ipaddress.IPv4Address(address), prefix), strict=False)
        if "%" in address:
            raise ValueError("scoped addresses are not allowed")
        return ipaddress.IPv6Network((ipaddress.IPv6Address(address), prefix), strict=False)
    except ValueError as exc:
        raise SpfRecordError(f"{mechanism} holds no valid address") from exc


def _check_macro_string(text: str, letters: frozenset[str]) -> None:
    position = 0
    while (percent := text.find("%", position)) != -1:
        macro = _MACRO.match(text, percent)
        if macro is None:
            raise SpfRecordError("a malformed macro")
        letter = macro.group("letter")
        if letter is not None:
            if letter.lower() not in letters:
                raise SpfRecordError("a macro letter not allowed here")
            if macro.group("digits") and int(macro.group("digits")) == 0:
                raise SpfRecordError("a macro keeps zero labels")
        position = macro.end()


def _check_domain_spec(spec: str) -> None:
    """Syntax of §7.1 ``domain-spec``: a macro-string ending in a macro or ``.toplabel``."""
    _check_macro_string(spec, _DOMAIN_LETTERS)
    if any(macro.end() == len(spec) for macro in _MACRO.finditer(spec)):
        return
    labels = spec.removesuffix(".").split(".")
    if len(labels) < 2 or _TOPLABEL.fullmatch(labels[-1]) is None:
        raise SpfRecordError("a domain does not end in a valid top label")


def valid_dns_name(name: str) -> bool:
    """A name the resolver can be asked about: ASCII without spaces or escapes, 1-63 byte
    labels, at most 253 bytes, at least two labels (no trailing dot)."""
    if not name or len(name) > 253 or not name.isascii() or "\\" in name:
        return False
    if any(ch <= " " or ch == "\x7f" for ch in name):
        return False
    labels = name.split(".")
    return len(labels) >= 2 and all(1 <= len(label) <= 63 for label in labels)


# --- evaluation (§4, §5, §6) ---------------------------------------------------------------


class _Stop(GatewayError):
    """Ends the evaluation with a final verdict; caught in :func:`check_spf`, never escapes."""

    def __init__(self, verdict: SpfVerdict, reason: str) -> None:
        super().__init__(reason)
        self.verdict = verdict
        self.reason = reason


@dataclass
class _Evaluation:
    ip: IpAddress
    local_part: str
    sender_domain: str
    helo: str
    resolver: DnsLookups
    dns_terms: int = 0
    void_lookups: int = 0

    def count_dns_term(self) -> None:
        self.dns_terms += 1
        if self.dns_terms > MAX_DNS_TERMS:
            raise _Stop(SpfVerdict.PERMERROR, f"more than {MAX_DNS_TERMS} DNS lookups")

    async def lookup(self, name: str, rdtype: str, *, void_counts: bool) -> tuple[str, ...]:
        """The rdata of ``name`` as text (MX: the exchange only)."""
        try:
            rdatas = await self.resolver.records(name, rdtype)
        except DnsError as exc:
            raise _Stop(SpfVerdict.TEMPERROR, f"a {rdtype} lookup failed") from exc
        wanted = dns.rdatatype.from_text(rdtype)
        texts = tuple(
            rdata.exchange.to_text(omit_final_dot=True).lower()
            if isinstance(rdata, dns.rdtypes.ANY.MX.MX)
            else rdata.to_text()
            for rdata in rdatas
            if rdata.rdtype == wanted
        )
        if not texts and void_counts:
            self.void_lookups += 1
            if self.void_lookups > MAX_VOID_LOOKUPS:
                raise _Stop(SpfVerdict.PERMERROR, f"more than {MAX_VOID_LOOKUPS} void lookups")
        return texts

    async def record(self, domain: str) -> SpfRecord | None:
        try:
            texts = await self.resolver.txt(domain)
        except DnsError as exc:
            raise _Stop(SpfVerdict.TEMPERROR, "the SPF record lookup failed") from exc
        records = [text for text in texts if is_spf1(text)]
        if not records:
            return None
        if len(records) > 1:
            raise _Stop(SpfVerdict.PERMERROR, "more than one v=spf1 record")
        try:
            return parse_spf_record(records[0].decode("ascii"))
        except UnicodeDecodeError as exc:
            raise _Stop(SpfVerdict.PERMERROR, "the SPF record is not ASCII") from exc
        except SpfRecordError as exc:
            raise _Stop(SpfVerdict.PERMERROR, str(exc)) from exc

    async def check_host(self, domain: str) -> SpfVerdict:
        record = await self.record(domain)
        if record is None:
            return SpfVerdict.NONE
        for directive in record.directives:
            if await self.matches(directive, domain):
                return _QUALIFIERS[directive.qualifier]
        if record.redirect is None:
            return SpfVerdict.NEUTRAL
        self.count_dns_term()
        target = self.target(record.redirect, domain)
        verdict = await self.check_host(target)
        if verdict is SpfVerdict.NONE:
            raise _Stop(SpfVerdict.PERMERROR, "the redirect target has no SPF record")
        return verdict

    async def matches(self, directive: SpfDirective, domain: str) -> bool:
        mechanism = directive.mechanism
        if mechanism == "all":
            return True
        if directive.network is not None:
            return self.ip.version == directive.network.version and self.ip in directive.network
        self.count_dns_term()
        if mechanism == "ptr":
            return False  # see the module docstring: no reverse DNS here
        spec = directive.domain_spec
        target = domain if spec is None else self.target(spec, domain)
        if mechanism == "include":
            return await self.include(target)
        if mechanism == "exists":
            return bool(await self.lookup(target, "A", void_counts=True))
        if mechanism == "a":
            addresses = await self.lookup(target, self.address_type, void_counts=True)
            return self.in_any(addresses, directive)
        hosts = await self.lookup(target, "MX", void_counts=True)
        hosts = tuple(host for host in hosts if host != ".")  # a null MX names no host
        if len(hosts) > MAX_MX_HOSTS:
            raise _Stop(SpfVerdict.PERMERROR, f"an mx mechanism names over {MAX_MX_HOSTS} hosts")
        for host in hosts:
            if valid_dns_name(host):
                addresses = await self.lookup(host, self.address_type, void_counts=False)
                if self.in_any(addresses, directive):
                    return True
        return False

    async def include(self, target: str) -> bool:
        verdict = await self.check_host(target)
        if verdict is SpfVerdict.PASS:
            return True
        if verdict in (SpfVerdict.FAIL, SpfVerdict.SOFTFAIL, SpfVerdict.NEUTRAL):
            return False
        if verdict is SpfVerdict.NONE:
            raise _Stop(SpfVerdict.PERMERROR, "an included domain has no SPF record")
        raise _Stop(verdict, "an included record failed")

    @property
    def address_type(self) -> str:
        return "A" if self.ip.version == 4 else "AAAA"

    def in_any(self, addresses: tuple[str, ...], directive: SpfDirective) -> bool:
        prefix = directive.cidr4 if self.ip.version == 4 else directive.cidr6
        for text in addresses:
            try:
                network = ipaddress.ip_network((ipaddress.ip_address(text), prefix), strict=False)
            except ValueError:
                continue
            if network.version == self.ip.version and self.ip in network:
                return True
        return False

    def target(self, spec: str, domain: str) -> str:
        """The domain-spec expanded (§7.4) and checked as a DNS name."""
        name = _MACRO.sub(lambda m: self.expand(m, domain), spec).rstrip(".")
        while len(name) > 253 and "." in name:
            name = name.split(".", 1)[1]  # §7.3: truncate from the left
        if not valid_dns_name(name):
            raise _Stop(SpfVerdict.PERMERROR, "a term names an invalid domain")
        return name.lower()

    def expand(self, macro: re.Match[str], domain: str) -> str:
        escape = macro.group("escape")
        if escape is not None:
            return {"%": "%", "_": " ", "-": "%20"}[escape]
        letter = macro.group("letter")
        value = self.macro_value(letter.lower(), domain)
        delimiters = macro.group("delims") or "."
        parts = re.split("[" + re.escape(delimiters) + "]", value)
        if macro.group("reverse"):
            parts.reverse()
        if macro.group("digits"):
            parts = parts[-int(macro.group("digits")) :]
        expanded = ".".join(parts)
        if letter.isupper():
            expanded = urllib.parse.quote(expanded, safe="-._~")
        return expanded

    def macro_value(self, letter: str, domain: str) -> str:
        values: dict[str, Callable[[], str]] = {
            "s": lambda: f"{self.local_part}@{self.sender_domain}",
            "l": lambda: self.local_part,
            "o": lambda: self.sender_domain,
            "d": lambda: domain,
            "i": lambda: _macro_ip(self.ip),
            "p": lambda: "unknown",
            "v": lambda: "in-addr" if self.ip.version == 4 else "ip6",
            "h": lambda: self.helo,
        }
        return values[letter]()


def _macro_ip(ip: IpAddress) -> str:
    if ip.version == 4:
        return str(ip)
    return ".".join(ip.exploded.replace(":", ""))


def client_address(text: str) -> IpAddress | None:
    """The client's address, IPv4-mapped IPv6 as IPv4 (§5); ``None`` if unparsable."""
    try:
        ip = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def spf_identity(mail_from: str, helo: str) -> tuple[str, str, str]:
    """(identity, local part, domain) that SPF checks for this envelope (§2.4, §4.3)."""
    sender = mail_from.strip().removeprefix("<").removesuffix(">")
    if not sender:
        return "helo", "postmaster", helo.strip().rstrip(".").lower()
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = "", sender
    return "mailfrom", local or "postmaster", domain.rstrip(".").lower()


def usable_domain(domain: str) -> bool:
    """True when ``domain`` can be checked at all (§4.3): a multi-label name with a top label."""
    return valid_dns_name(domain) and _TOPLABEL.fullmatch(domain.rsplit(".", 1)[-1]) is not None


async def check_spf(
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    resolver: DnsLookups,
    time_limit: float = SPF_TIME_LIMIT,
) -> SpfResult:
    """Evaluate SPF for a clearnet SMTP client; never raises on hostile input.

    ``mail_from`` is the MAIL FROM address without or with its angle
    brackets (empty for a null reverse path), ``helo`` the EHLO/HELO name.
    """
    identity, local_part, domain = spf_identity(mail_from, helo)
    ip = client_address(client_ip)
    if ip is None:
        return SpfResult(SpfVerdict.PERMERROR, domain, identity, "unparsable client address")
    if not usable_domain(domain):
        return SpfResult(SpfVerdict.NONE, domain, identity, "no usable domain to check")
    evaluation = _Evaluation(ip, local_part, domain, helo.strip().rstrip("."), resolver)
    try:
        async with asyncio.timeout(time_limit):
            verdict = await evaluation.check_host(domain)
        reason = "no SPF record" if verdict is SpfVerdict.NONE else ""
    except _Stop as stop:
        verdict, reason = stop.verdict, stop.reason
    except TimeoutError:
        verdict, reason = SpfVerdict.TEMPERROR, f"evaluation exceeded {time_limit:g} s"
    log.debug("SPF %s after %d DNS terms", verdict, evaluation.dns_terms)
    return SpfResult(verdict, domain, identity, reason, evaluation.dns_terms)
