"""DKIM verification of clearnet mail (RFC 6376; RSA keys per RFC 8301), with dkimpy.

Every ``DKIM-Signature`` up to :data:`MAX_DKIM_SIGNATURES` gets its own
result with ``header.d``/``header.s``/``header.a`` (later ones are not
verified: a hostile message could otherwise make the gateway do thousands
of lookups). A malformed or expired signature, a missing, revoked or
malformed key, or an RSA key under 1024 bits is ``permerror``; a signature
that does not verify is ``fail``; a key lookup that fails now is
``temperror``. Keys are fetched through the gateway's resolver and handed
to dkimpy, which does no I/O of its own; its log lines (which name
domains) go to DEBUG.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import dkim
import dkim.util

from gateway.errors import DnsError
from gateway.inbound.spf import DnsLookups, valid_dns_name

log = logging.getLogger(__name__)

MAX_DKIM_SIGNATURES = 8
"""DKIM signatures verified per message; later ones are ignored."""
DKIM_MIN_RSA_BITS = 1024
"""RSA keys shorter than this never verify (RFC 8301 §3.2)."""


class DkimVerdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class DkimResult:
    """The outcome for one ``DKIM-Signature`` header."""

    verdict: DkimVerdict
    domain: str | None = None
    """The signing domain ``d=``, lower case, when the signature names a usable one."""
    selector: str | None = None
    algorithm: str | None = None
    reason: str = ""


# --- DKIM (RFC 6376) -------------------------------------------------------------------------


class _DebugOnly(logging.LoggerAdapter[logging.Logger]):
    """dkimpy logs key names (domains) at ERROR; everything it says goes to DEBUG here."""

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        super().log(logging.DEBUG, msg, *args, **kwargs)


_DKIM_LOG = _DebugOnly(logging.getLogger(__name__ + ".dkimpy"), {})


@dataclass(frozen=True)
class _Signature:
    index: int
    domain: str | None
    selector: str | None
    algorithm: str | None
    problem: str = ""
    """Why this signature is ``permerror`` before any lookup; ``""`` when it is well formed."""

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}".lower()

    def result(self, verdict: DkimVerdict, reason: str = "") -> DkimResult:
        return DkimResult(verdict, self.domain, self.selector, self.algorithm, reason)


async def check_dkim(message: bytes, resolver: DnsLookups) -> tuple[DkimResult, ...]:
    """One result per DKIM signature (at most :data:`MAX_DKIM_SIGNATURES`); ``()`` for none."""
    parsed = await asyncio.to_thread(_parse_for_dkim, message)
    if parsed is None:
        return (DkimResult(DkimVerdict.PERMERROR, reason="unparsable header section"),)
    verifier, signatures = parsed
    names = sorted({sig.key_name for sig in signatures if not sig.problem})
    fetched = await asyncio.gather(*(_dkim_key(resolver, name) for name in names))
    keys = dict(zip(names, fetched, strict=True))
    return tuple(await asyncio.to_thread(_verify_all, verifier, signatures, keys))


def _parse_for_dkim(message: bytes) -> tuple[Any, list[_Signature]] | None:
    try:
        verifier = dkim.DKIM(message, logger=_DKIM_LOG, minkey=DKIM_MIN_RSA_BITS)
    except Exception:  # dkimpy's parser on hostile bytes: any failure is the message's
        log.debug("DKIM: unparsable message", exc_info=True)
        return None
    values = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    return verifier, [_signature(i, v) for i, v in enumerate(values[:MAX_DKIM_SIGNATURES])]


def _signature(index: int, value: bytes) -> _Signature:
    try:
        tags = dkim.util.parse_tag_value(value)
    except Exception:
        return _Signature(index, None, None, None, "malformed tag list")
    domain = _ascii_tag(tags, b"d")
    selector = _ascii_tag(tags, b"s")
    algorithm = _ascii_tag(tags, b"a")
    domain = domain.lower() if domain is not None else None
    try:
        dkim.validate_signature_fields(tags)
    except Exception as exc:
        return _Signature(index, domain, selector, algorithm, _short(exc, "malformed signature"))
    if domain is None or selector is None or not valid_dns_name(f"{selector}._domainkey.{domain}"):
        return _Signature(index, domain, selector, algorithm, "unusable d= or s=")
    return _Signature(index, domain, selector, algorithm)


def _ascii_tag(tags: Mapping[bytes, bytes], name: bytes) -> str | None:
    value = tags.get(name)
    if value is None:
        return None
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        return None


async def _dkim_key(resolver: DnsLookups, name: str) -> tuple[DkimVerdict, bytes | str]:
    """``(PASS, record)`` when a usable key record was found, else ``(verdict, reason)``."""
    try:
        records = await resolver.txt(name)
    except DnsError:
        return DkimVerdict.TEMPERROR, "key lookup failed"
    if not records:
        return DkimVerdict.PERMERROR, "no key for signature"
    for record in records:
        try:
            dkim.evaluate_pk(name.encode(), record)
        except Exception:  # malformed, revoked (empty p=) or unknown-type keys
            continue
        return DkimVerdict.PASS, record
    return DkimVerdict.PERMERROR, "unusable key record"


def _verify_all(
    verifier: Any,
    signatures: Sequence[_Signature],
    keys: Mapping[str, tuple[DkimVerdict, bytes | str]],
) -> list[DkimResult]:
    def dnsfunc(name: bytes, timeout: float = 5.0) -> bytes | None:
        found = keys.get(name.decode("ascii", "replace").rstrip(".").lower())
        return found[1] if found and isinstance(found[1], bytes) else None

    results = []
    for sig in signatures:
        if sig.problem:
            results.append(sig.result(DkimVerdict.PERMERROR, sig.problem))
            continue
        verdict, key_or_reason = keys[sig.key_name]
        if verdict is not DkimVerdict.PASS:
            results.append(sig.result(verdict, str(key_or_reason)))
            continue
        results.append(_verify_one(verifier, sig, dnsfunc))
    return results


def _verify_one(verifier: Any, sig: _Signature, dnsfunc: Callable[..., bytes | None]) -> DkimResult:
    try:
        valid = bool(verifier.verify(sig.index, dnsfunc=dnsfunc))
    except dkim.ValidationError as exc:  # the fields were checked before: a hash mismatch
        return sig.result(DkimVerdict.FAIL, _short(exc, "signature did not verify"))
    except dkim.KeyFormatError as exc:
        return sig.result(DkimVerdict.PERMERROR, _short(exc, "unusable key"))
    except Exception:  # dkimpy on hostile input: count it against the signature
        log.debug("DKIM: verifier error", exc_info=True)
        return sig.result(DkimVerdict.PERMERROR, "signature could not be checked")
    if valid:
        return sig.result(DkimVerdict.PASS)
    return sig.result(DkimVerdict.FAIL, "signature did not verify")


_KNOWN_REASONS = {
    "body hash mismatch": "body hash mismatch",
    "public key too small": "public key too small",
    "x= value is past": "signature expired",
    "t= value is in the future": "signature from the future",
    "unknown signature algorithm": "unknown algorithm",
    "missing ": "missing required tag",
}


def _short(exc: Exception, default: str) -> str:
    """A fixed reason for a dkimpy error (its own messages quote tags and domains)."""
    text = str(exc)
    return next((r for prefix, r in _KNOWN_REASONS.items() if text.startswith(prefix)), default)
