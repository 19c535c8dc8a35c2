"""MTA-STS (RFC 8461): discover, fetch, parse and cache a domain's policy; decide per MX.

Decisions, and why:

- **The policy comes over HTTPS with PKIX, from ``mta-sts.<domain>`` only.**
  ``https://mta-sts.<domain>/.well-known/mta-sts.txt``, certificate verified
  against that name with a CA bundle (the system's unless
  :attr:`FetchConfig.ca_file` says otherwise). RFC 8461 §3.3 rules are
  enforced: status 200 only, redirects are *not* followed, ``text/plain``
  only, a size limit (64 KiB) and a time limit for the whole fetch.
- **The standard library's** ``http.client`` **does the HTTP**, in a worker
  thread (``asyncio.to_thread``) so the event loop never blocks. One GET of
  a small text file needs no new dependency, and ``http.client`` lets the
  connection go to another address than the name it verifies — which is
  what :attr:`FetchConfig.connect_to` is for: tests (and a deployment with a
  pinned egress) reach ``mta-sts.<domain>`` at a loopback address while the
  certificate and ``Host`` are still checked against the real name. The
  override never relaxes verification.
- **Cache by id** (RFC 8461 §5.1). A fetched policy is kept until its
  ``max_age`` runs out; a TXT record with the same ``id`` means "no change"
  and no fetch. A missing TXT record, a DNS failure or a failed fetch keep
  the cached, unexpired policy in force: an attacker who blocks the TXT
  lookup or the HTTPS fetch cannot switch MTA-STS off for a domain the
  gateway has seen before. Without a cached policy, a failed fetch means
  "no policy" (as the RFC says), which in this gateway still leaves TLS
  required with PKIX by default (see :mod:`gateway.outbound.tls_policy`); a DNS
  *failure* (SERVFAIL, timeout) with no cached policy defers instead.
- **MX patterns** (RFC 8461 §4.1): exact names, or ``*.`` plus a domain,
  where the wildcard stands for exactly one leftmost label; comparison is
  case-insensitive and ignores a trailing dot.
- Domain names are never logged at INFO or above.
"""

from __future__ import annotations

import asyncio
import enum
import http.client
import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from gateway.dns import GatewayResolver, is_public
from gateway.errors import DnsDeferError, DnsPermanentError, MtaStsFetchError, MtaStsPolicyError

log = logging.getLogger(__name__)

WELL_KNOWN_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024
"""RFC 8461 §3.3 suggests 64 KiB as the most a sender needs to read."""
MAX_MAX_AGE = 31_557_600
"""RFC 8461 §3.2: at most about a year."""
DEFAULT_FETCH_TIMEOUT = 20.0
"""Seconds for the whole fetch (connect, TLS handshake, request, body)."""


class StsMode(enum.Enum):
    ENFORCE = "enforce"
    TESTING = "testing"
    NONE = "none"


@dataclass(frozen=True)
class StsPolicy:
    """A parsed MTA-STS policy; ``policy_id`` is the TXT id it was fetched under."""

    mode: StsMode
    mx_patterns: tuple[str, ...]
    max_age: int
    policy_id: str = ""

    def allows_mx(self, mx_host: str) -> bool:
        """Whether ``mx_host`` matches one of the policy's ``mx`` patterns."""
        return any(mx_matches(pattern, mx_host) for pattern in self.mx_patterns)


@dataclass(frozen=True)
class StsRequirement:
    """What an MTA-STS policy asks of one MX host.

    ``mx_permitted`` False: do not deliver to this MX (an ``enforce`` policy
    does not list it). ``require_valid_tls`` True: TLS with a certificate
    valid (PKIX) for the MX host name, no plaintext.
    """

    mx_permitted: bool
    require_valid_tls: bool
    reason: str


def mx_matches(pattern: str, mx_host: str) -> bool:
    """RFC 8461 §4.1: ``mail.example.com`` exactly, or ``*.example.com`` for one label."""
    pattern = pattern.strip().rstrip(".").lower()
    host = mx_host.strip().rstrip(".").lower()
    if not pattern or not host:
        return False
    if pattern.startswith("*."):
        label, dot, rest = host.partition(".")
        return bool(label) and bool(dot) and rest == pattern[2:]
    return pattern == host


def requirement_for(policy: StsPolicy | None, mx_host: str) -> StsRequirement:
    """Whether the MX may be used, and whether TLS with a valid certificate is required."""
    if policy is None or policy.mode is StsMode.NONE:
        return StsRequirement(True, False, "no MTA-STS policy")
    matches = policy.allows_mx(mx_host)
    if policy.mode is StsMode.TESTING:
        note = "lists" if matches else "does not list"
        return StsRequirement(
            True, False, f"MTA-STS testing (not enforced); the policy {note} this MX"
        )
    if not matches:
        return StsRequirement(
            False, True, "MTA-STS enforce: this MX is not listed in the policy; not used"
        )
    return StsRequirement(
        True, True, "MTA-STS enforce: TLS with a certificate valid for the MX host"
    )


def parse_policy(text: str) -> StsPolicy:
    """Parse the body of ``mta-sts.txt`` (RFC 8461 §3.2). Unknown keys are ignored.

    Raises :class:`~gateway.errors.MtaStsPolicyError` when ``version`` is not
    ``STSv1``, ``mode`` or ``max_age`` is missing or invalid, a key is
    repeated (other than ``mx``), or an enforcing/testing policy lists no mx.
    """
    values: dict[str, str] = {}
    patterns: list[str] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise MtaStsPolicyError("a policy line is not 'key: value'")
        key, value = key.strip(), value.strip()
        if key == "mx":
            if not _is_mx_pattern(value):
                raise MtaStsPolicyError("a policy mx pattern is not a host name or *.domain")
            patterns.append(value.rstrip(".").lower())
        elif key in ("version", "mode", "max_age"):
            if key in values:
                raise MtaStsPolicyError(f"the policy repeats {key}")
            values[key] = value
    if values.get("version") != "STSv1":
        raise MtaStsPolicyError("the policy's version is not STSv1")
    try:
        mode = StsMode(values.get("mode", ""))
    except ValueError:
        raise MtaStsPolicyError("the policy's mode is not enforce, testing or none") from None
    max_age_text = values.get("max_age", "")
    if not (max_age_text.isascii() and max_age_text.isdigit() and len(max_age_text) <= 10):
        raise MtaStsPolicyError("the policy's max_age is not a number of seconds")
    max_age = int(max_age_text)
    if max_age > MAX_MAX_AGE:
        raise MtaStsPolicyError(f"the policy's max_age exceeds {MAX_MAX_AGE} s")
    if mode is not StsMode.NONE and not patterns:
        raise MtaStsPolicyError("an enforce or testing policy must list at least one mx")
    return StsPolicy(mode, tuple(patterns), max_age)


def _is_mx_pattern(value: str) -> bool:
    name = value[2:] if value.startswith("*.") else value
    labels = name.rstrip(".").split(".")
    return len(labels) >= 2 and all(
        0 < len(label) <= 63 and label.isascii() and label.replace("-", "").isalnum()
        for label in labels
    )


# --- fetching -------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchConfig:
    """How policies are fetched."""

    ca_file: str | None = None
    """PEM bundle of trusted CAs; ``None`` means the system trust store."""
    timeout: float = DEFAULT_FETCH_TIMEOUT
    """Seconds for one fetch, everything included."""
    connect_to: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """``mta-sts.<domain>`` → (address, port) to connect to instead of resolving
    the name; the certificate is still verified against the name."""


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``host`` (SNI, certificate name, ``Host:``) over a socket to ``address``."""

    def __init__(
        self, host: str, address: tuple[str, int] | None, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, 443, timeout=timeout, context=context)
        self._address = address
        self._tls_context = context

    def connect(self) -> None:
        if self._address is None:
            super().connect()
            return
        raw = socket.create_connection(self._address, timeout=self.timeout)
        try:
            self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _fetch_text(domain: str, config: FetchConfig) -> str:
    host = f"mta-sts.{domain.rstrip('.').lower()}"
    context = ssl.create_default_context(cafile=config.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    deadline = time.monotonic() + config.timeout
    connection = _PinnedHTTPSConnection(host, config.connect_to.get(host), context, config.timeout)
    response: http.client.HTTPResponse | None = None
    try:
        connection.request("GET", WELL_KNOWN_PATH, headers={"Accept": "text/plain"})
        response = connection.getresponse()
        if response.status != 200:
            raise MtaStsFetchError(
                f"the policy server answered HTTP {response.status} (only 200 is accepted; "
                "redirects are not followed)"
            )
        media_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if media_type != "text/plain":
            raise MtaStsFetchError("the policy is not served as text/plain")
        body = b""
        while len(body) <= MAX_POLICY_BYTES:
            if time.monotonic() > deadline:
                raise TimeoutError("policy fetch deadline")
            chunk = response.read1(MAX_POLICY_BYTES + 1 - len(body))
            if not chunk:
                break
            body += chunk
        if len(body) > MAX_POLICY_BYTES:
            raise MtaStsFetchError(f"the policy is larger than {MAX_POLICY_BYTES} bytes")
    except MtaStsFetchError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise MtaStsFetchError(
            f"the policy server's certificate did not verify: {exc.verify_message}"
        ) from exc
    except TimeoutError as exc:
        raise MtaStsFetchError(f"the policy fetch took longer than {config.timeout:g} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise MtaStsFetchError(f"the policy fetch failed: {type(exc).__name__}") from exc
    finally:
        if response is not None:
            response.close()
        connection.close()
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MtaStsPolicyError("the policy is not UTF-8 text") from exc


async def fetch_policy(domain: str, config: FetchConfig | None = None) -> StsPolicy:
    """Fetch and parse the policy of ``domain`` (raises MtaStsFetchError / MtaStsPolicyError)."""
    config = config or FetchConfig()
    text = await asyncio.wait_for(
        asyncio.to_thread(_fetch_text, domain, config), timeout=config.timeout + 1.0
    )
    return parse_policy(text)


# --- discovery with the cache ---------------------------------------------------------


@dataclass(frozen=True)
class _Cached:
    policy: StsPolicy
    expires: float


class MtaSts:
    """Policies per domain, discovered through DNS, fetched over HTTPS, cached by id.

    ``clock`` (seconds, monotonic by default) is there so tests can age the cache.
    """

    def __init__(
        self,
        resolver: GatewayResolver,
        config: FetchConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        allow_private_hosts: bool = False,
    ) -> None:
        self.resolver = resolver
        self.config = config or FetchConfig()
        self.allow_private_hosts = allow_private_hosts
        """Fetch from a policy host whose address is not public (a private test network)."""
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self.fetches = 0
        """How many HTTPS fetches were made (the cache's effect is observable)."""

    def cached(self, domain: str) -> StsPolicy | None:
        """The cached policy of ``domain`` if it has not expired."""
        key = domain.rstrip(".").lower()
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._cache[key]
            return None
        return entry.policy

    async def policy_for(self, domain: str) -> StsPolicy | None:
        """The policy in force for ``domain``, or ``None`` when it has none.

        Raises :class:`~gateway.errors.DnsDeferError` only when the TXT
        lookup failed and no unexpired policy is cached.
        """
        key = domain.rstrip(".").lower()
        cached = self.cached(key)
        try:
            record = await self.resolver.mta_sts_record(key)
        except DnsDeferError:
            if cached is not None:
                log.debug("MTA-STS TXT lookup failed; using the cached policy")
                return cached
            raise
        if record is None:
            return cached
        if cached is not None and cached.policy_id == record.policy_id:
            return cached
        try:
            config = await self._pinned(key)
            self.fetches += 1
            policy = replace(await fetch_policy(key, config), policy_id=record.policy_id)
        except (MtaStsFetchError, MtaStsPolicyError, TimeoutError) as exc:
            log.warning("MTA-STS policy fetch failed (%s)", type(exc).__name__)
            log.debug("MTA-STS fetch failure detail: %s", exc)
            return cached
        self._cache[key] = _Cached(policy, self._clock() + policy.max_age)
        return policy

    async def _pinned(self, domain: str) -> FetchConfig:
        """The fetch configuration with the policy host's address found through the
        gateway's validating resolver (never the system's), and only a public one."""
        host = f"mta-sts.{domain}"
        if host in self.config.connect_to:
            return self.config
        try:
            found = await self.resolver.addresses(host)
        except (DnsDeferError, DnsPermanentError) as exc:
            raise MtaStsFetchError(f"the policy host's address: {exc}") from exc
        usable = [a for a in found.addresses if self.allow_private_hosts or is_public(a)]
        if not usable:
            raise MtaStsFetchError("the policy host has no public address")
        pinned = {**self.config.connect_to, host: (usable[0], 443)}
        return replace(self.config, connect_to=pinned)

    async def requirement(self, domain: str, mx_host: str) -> StsRequirement:
        """:func:`requirement_for` the policy in force for ``domain``."""
        return requirement_for(await self.policy_for(domain), mx_host)
