"""Deliver one message to one clearnet MX, with TLS that an active attacker cannot strip.

What this module decides, and why:

- **The TLS decision comes from outside.** Which MX needs TLS, which trust
  anchors apply (system CAs for MTA-STS, none for DANE-EE) and how the
  certificate is checked is the TLS policy's business (``tls_policy.py``:
  MX, MTA-STS and TLSA lookups). This module only needs the small
  :class:`TlsDecision` protocol below and enforces it; :class:`TlsRequirement`
  is a plain implementation of it for callers and tests.
- **Required means required.** When ``require_tls`` is true, the message is
  never sent in clear: a missing ``STARTTLS`` in the EHLO reply (the classic
  stripping attack), a refused ``STARTTLS``, a failed handshake, a
  certificate that does not verify or a failed DANE check all raise
  :class:`~gateway.errors.TlsUnavailableError`, a *temporary* error: the
  queue retries (an attacker rarely sits on every path for days) and bounces
  when the message's lifetime ends. A decision that claims to require TLS but
  authenticates nothing (no verification, no check) is refused as a
  configuration error, because it would only protect against passive
  observers while the ledger reports "TLS".
- **No downgrade inside a session.** Even when plaintext is allowed, a
  STARTTLS that is offered is used, and when it fails the attempt fails; the
  gateway never retries the same server in clear on its own (that is exactly
  the fallback an attacker provokes). A policy that wants encryption without
  authentication (Postfix's ``may``) hands over a context that does not verify.
  Only when the server offers no STARTTLS at all *and* the decision allows it
  does the message go in clear, and :class:`DeliveryResult` says so for the
  ledger.
- **Timeouts on every step** (:class:`SmtpTimeouts`), plus an overall one, so
  a tar-pitting server cannot hold a delivery worker for ever.
- **No host identity on the wire.** ``EHLO`` names the gateway's own domain
  (``local_hostname`` is mandatory); aiosmtplib's default would be the
  machine's FQDN.
- **Reply codes map to retry decisions.** 4xx, timeouts and lost connections
  are temporary; 5xx is permanent. The server's text is kept unredacted in
  the error's ``reply_text`` for a bounce, while ``str(error)`` is redacted
  so it can be logged.
- Steps are driven one by one (EHLO, STARTTLS, EHLO, MAIL, RCPT, DATA) rather
  than through ``aiosmtplib.send``, so the TLS check sits between the
  handshake and the first envelope byte, and each recipient's reply is kept.
- Python 3.11's ``ssl`` exposes only the leaf certificate publicly, so the
  check callback gets the leaf in DER: enough for DANE-EE (``3 x x``). A
  decision that can check the whole session itself (:class:`PeerCheckingTlsDecision`,
  as ``tls_policy.TlsPolicyDecision`` does for DANE-TA, reading the chain)
  is given the TLS object instead, whenever it has a certificate check.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import aiosmtplib

from gateway.errors import (
    GatewayConfigError,
    OutboundDeliveryError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    TlsUnavailableError,
)
from onionmail.core.redaction import redact

log = logging.getLogger(__name__)

CertificateCheck = Callable[[bytes], None]
"""Called with the server's leaf certificate (DER) after the handshake; raises
:class:`ValueError` when the certificate must not be trusted (a DANE mismatch)."""


class TlsDecision(Protocol):
    """What the TLS policy decided for one MX host; all this module needs.

    ``require_tls``
        True: never send in clear; no STARTTLS, a failed handshake or a
        rejected certificate is a temporary failure.
    ``server_hostname``
        The MX host name: sent as SNI and, when the context checks host
        names, matched against the certificate.
    ``ssl_context()``
        A fresh client context: it carries the trust anchors and whether the
        chain and host name are verified (PKIX, as MTA-STS wants), or not (for
        DANE-EE, whose check is ``certificate_check``).
    ``certificate_check``
        ``None``, or a callable given the leaf certificate (DER) after the
        handshake that raises :class:`ValueError` to reject it.
    """

    @property
    def require_tls(self) -> bool: ...

    @property
    def server_hostname(self) -> str: ...

    @property
    def certificate_check(self) -> CertificateCheck | None: ...

    def ssl_context(self) -> ssl.SSLContext: ...


@runtime_checkable
class PeerCheckingTlsDecision(TlsDecision, Protocol):
    """A :class:`TlsDecision` that checks an established TLS session itself.

    When ``certificate_check`` is not ``None``, ``check_peer`` is called
    instead of it, with the session's TLS object (so it can read the chain);
    it raises :class:`ValueError` to reject the certificate.
    """

    def check_peer(self, tls: ssl.SSLObject) -> object: ...


@dataclass(frozen=True)
class TlsRequirement:
    """A plain :class:`TlsDecision`: PKIX verification against ``cafile``.

    ``cafile`` ``None`` means the system trust store. ``verify`` False turns
    off chain and host-name verification; with ``require_tls`` that is only
    accepted together with a ``certificate_check`` (DANE-EE).
    """

    require_tls: bool
    server_hostname: str
    cafile: str | None = None
    verify: bool = True
    certificate_check: CertificateCheck | None = None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.cafile)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


@dataclass(frozen=True)
class SmtpTimeouts:
    """Seconds allowed per step; every network wait is bounded by one of these."""

    connect: float = 30.0
    """TCP connect plus the server's greeting."""
    command: float = 60.0
    """Each command's reply: EHLO, STARTTLS, MAIL, RCPT, QUIT."""
    tls_handshake: float = 30.0
    """The TLS handshake after ``220`` to STARTTLS."""
    data: float = 180.0
    """Sending the message and waiting for the final reply after the dot."""
    total: float = 600.0
    """The whole attempt, whatever the steps took."""


@dataclass(frozen=True)
class TlsSession:
    """The TLS a delivery actually used."""

    version: str
    cipher: str
    authenticated: bool
    """The certificate was verified (PKIX) or passed the decision's check."""


@dataclass(frozen=True)
class RecipientRefusal:
    """One recipient the MX refused while others were accepted."""

    code: int
    text: str = field(repr=False)

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass(frozen=True)
class DeliveryResult:
    """What happened on a successful delivery (at least one recipient took it)."""

    server_hostname: str
    tls: TlsSession | None
    """``None``: the message went in clear (only ever when the decision allowed it)."""
    accepted: tuple[str, ...] = field(repr=False)
    refused: Mapping[str, RecipientRefusal] = field(repr=False)
    reply: str = field(repr=False)
    """The server's final reply text (often holds its queue id)."""

    @property
    def plaintext(self) -> bool:
        return self.tls is None

    @property
    def transport_security(self) -> Literal["plaintext", "tls", "tls-authenticated"]:
        """The ledger's view of the clearnet hop."""
        if self.tls is None:
            return "plaintext"
        return "tls-authenticated" if self.tls.authenticated else "tls"


def _authenticates(decision: TlsDecision, context: ssl.SSLContext) -> bool:
    verifies = context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    return verifies or decision.certificate_check is not None


def _reply_error(step: str, code: int, text: str) -> OutboundDeliveryError:
    kind = PermanentDeliveryError if code >= 500 else TemporaryDeliveryError
    return kind(
        f"the MX answered {code} to {step}: {redact(text)}", reply_code=code, reply_text=text
    )


_HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH


def _describe(exc: BaseException) -> str:
    """A short cause that names no host or address (error texts get logged).

    aiosmtplib's connection errors quote the host, and OpenSSL's host-name
    mismatch quotes the MX name: both would tell the log whom a box writes to.
    The full exception stays chained (``__cause__``) and goes to DEBUG only.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code == _HOSTNAME_MISMATCH:
            return "it is not valid for the MX host name"
        return redact(exc.verify_message or "verification failed")
    if isinstance(exc, ssl.SSLError):
        return exc.reason or "TLS error"
    cause = exc.__cause__ if isinstance(exc, aiosmtplib.SMTPException) else None
    for candidate in (cause, exc):
        if isinstance(candidate, OSError) and candidate.errno:
            return os.strerror(candidate.errno)  # asyncio's own strerror quotes the address
    return type(cause or exc).__name__


async def _start_tls(
    smtp: aiosmtplib.SMTP, decision: TlsDecision, timeouts: SmtpTimeouts
) -> TlsSession:
    """Upgrade to TLS and check the certificate; any failure is :class:`TlsUnavailableError`."""
    context = decision.ssl_context()
    try:
        await smtp.starttls(
            server_hostname=decision.server_hostname,
            tls_context=context,
            timeout=timeouts.tls_handshake,
        )
    except aiosmtplib.SMTPResponseException as exc:
        raise TlsUnavailableError(
            f"the MX refused STARTTLS ({exc.code} {redact(exc.message)})",
            reason="starttls-refused",
            reply_code=exc.code,
        ) from exc
    except ssl.SSLCertVerificationError as exc:
        log.debug("certificate verification failed: %s", exc)
        raise TlsUnavailableError(
            f"the MX's certificate did not verify: {_describe(exc)}",
            reason="certificate-rejected",
        ) from exc
    except (ssl.SSLError, aiosmtplib.SMTPException, OSError) as exc:
        log.debug("TLS handshake failed: %s", exc)
        raise TlsUnavailableError(
            f"the TLS handshake with the MX failed: {_describe(exc)}",
            reason="handshake-failed",
        ) from exc
    ssl_object = smtp.get_transport_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject):
        raise TlsUnavailableError(
            "the connection is not encrypted after STARTTLS", reason="handshake-failed"
        )
    if decision.certificate_check is not None:
        certificate = ssl_object.getpeercert(binary_form=True)
        try:
            if certificate is None:
                raise ValueError("the MX sent no certificate")
            if isinstance(decision, PeerCheckingTlsDecision):
                decision.check_peer(ssl_object)
            else:
                decision.certificate_check(certificate)
        except ValueError as exc:
            raise TlsUnavailableError(
                f"the MX's certificate failed the policy check: {redact(str(exc))}",
                reason="certificate-check-failed",
            ) from exc
    cipher = ssl_object.cipher()
    return TlsSession(
        version=ssl_object.version() or "unknown",
        cipher=cipher[0] if cipher else "unknown",
        authenticated=_authenticates(decision, context),
    )


async def _greet(smtp: aiosmtplib.SMTP, timeouts: SmtpTimeouts) -> None:
    """EHLO; an ESMTP-less server gets HELO (and so can offer no STARTTLS)."""
    try:
        await smtp.ehlo(timeout=timeouts.command)
    except aiosmtplib.SMTPHeloError as exc:
        if exc.code == 421:
            raise
        await smtp.helo(timeout=timeouts.command)


def _mail_options(smtp: aiosmtplib.SMTP, addresses: Sequence[str], message: bytes) -> list[str]:
    options: list[str] = []
    if smtp.supports_extension("size"):
        options.append(f"SIZE={len(message)}")
    if any(byte > 0x7F for byte in message):
        if not smtp.supports_extension("8bitmime"):
            raise PermanentDeliveryError("the MX cannot take 8-bit content (no 8BITMIME)")
        options.append("BODY=8BITMIME")
    if not all(address.isascii() for address in addresses):
        if not smtp.supports_extension("smtputf8"):
            raise PermanentDeliveryError("the MX cannot take non-ASCII addresses (no SMTPUTF8)")
        options.append("SMTPUTF8")
    return options


async def _transaction(
    smtp: aiosmtplib.SMTP,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    timeouts: SmtpTimeouts,
) -> tuple[tuple[str, ...], dict[str, RecipientRefusal], str]:
    options = _mail_options(smtp, [sender, *recipients], message)
    encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
    try:
        await smtp.mail(sender, options=options, encoding=encoding, timeout=timeouts.command)
    except aiosmtplib.SMTPResponseException as exc:
        raise _reply_error("MAIL FROM", exc.code, exc.message) from exc
    accepted: list[str] = []
    refused: dict[str, RecipientRefusal] = {}
    for recipient in recipients:
        try:
            await smtp.rcpt(recipient, encoding=encoding, timeout=timeouts.command)
            accepted.append(recipient)
        except aiosmtplib.SMTPResponseException as exc:
            refused[recipient] = RecipientRefusal(exc.code, exc.message)
    if not accepted:
        # One temporary refusal makes the whole attempt worth retrying.
        temporary = [refusal for refusal in refused.values() if not refusal.permanent]
        shown = (temporary or list(refused.values()))[0]
        error = _reply_error("RCPT TO", shown.code, shown.text)
        error.refused_recipients = {rcpt: (r.code, r.text) for rcpt, r in refused.items()}
        raise error
    try:
        reply = await smtp.data(message, timeout=timeouts.data)
    except aiosmtplib.SMTPResponseException as exc:
        raise _reply_error("DATA", exc.code, exc.message) from exc
    return tuple(accepted), refused, reply.message


QUIT_TIMEOUT = 5.0
"""At most this long for the closing QUIT, whatever ``SmtpTimeouts.command`` says."""


async def _quit(smtp: aiosmtplib.SMTP, timeouts: SmtpTimeouts) -> None:
    """End the session politely (RFC 5321 4.1.1.10); its outcome changes nothing.

    Also after a refusal: the server then closes its side at once, so a TLS
    session is shut down cleanly rather than left to the event loop.
    """
    if not smtp.is_connected:
        return
    try:
        await smtp.quit(timeout=min(timeouts.command, QUIT_TIMEOUT))
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.debug("QUIT failed: %s", exc)


async def deliver(
    *,
    host: str,
    port: int = 25,
    decision: TlsDecision,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    local_hostname: str,
    timeouts: SmtpTimeouts | None = None,
) -> DeliveryResult:
    """Deliver ``message`` to the MX at ``host``:``port`` under ``decision``.

    ``host`` is what to connect to (an address the policy resolved, or a
    name); the certificate is checked against ``decision.server_hostname``.
    ``local_hostname`` is the gateway's own domain, used in EHLO.

    Returns a :class:`DeliveryResult` when at least one recipient accepted
    the message (the others are in ``refused``). Raises
    :class:`~gateway.errors.TlsUnavailableError` when TLS was required and
    could not be had, :class:`~gateway.errors.TemporaryDeliveryError` for
    4xx replies, timeouts and network failures, and
    :class:`~gateway.errors.PermanentDeliveryError` for 5xx replies.
    """
    if not recipients:
        raise GatewayConfigError("a delivery needs at least one recipient")
    timeouts = timeouts or SmtpTimeouts()
    if decision.require_tls and not _authenticates(decision, decision.ssl_context()):
        raise GatewayConfigError(
            "the TLS decision requires TLS but neither verifies the certificate "
            "nor checks it; refusing to call unauthenticated TLS secure"
        )
    smtp = aiosmtplib.SMTP(
        hostname=host,
        port=port,
        local_hostname=local_hostname,
        timeout=timeouts.command,
        start_tls=False,
    )
    step = "connecting"
    polite = False  # whether to QUIT: not after a timeout or a cancellation
    try:
        async with asyncio.timeout(timeouts.total):
            await smtp.connect(timeout=timeouts.connect)
            step = "EHLO"
            await _greet(smtp, timeouts)
            tls: TlsSession | None = None
            if smtp.supports_extension("starttls"):
                step = "STARTTLS"
                tls = await _start_tls(smtp, decision, timeouts)
                step = "EHLO after STARTTLS"
                await smtp.ehlo(timeout=timeouts.command)
            elif decision.require_tls:
                raise TlsUnavailableError(
                    "TLS is required but the MX did not offer STARTTLS "
                    "(not supported, or stripped on the way); nothing was sent",
                    reason="starttls-not-offered",
                )
            step = "the mail transaction"
            accepted, refused, reply = await _transaction(
                smtp, sender, recipients, message, timeouts
            )
            polite = True
    except OutboundDeliveryError as exc:
        polite = not isinstance(exc.__cause__, TimeoutError)
        log.warning("delivery attempt failed: %s", exc)
        raise
    except aiosmtplib.SMTPResponseException as exc:
        polite = True
        error = _reply_error(step, exc.code, exc.message)
        log.warning("delivery attempt failed: %s", error)
        raise error from exc
    except (TimeoutError, aiosmtplib.SMTPTimeoutError) as exc:
        log.warning("delivery attempt timed out while %s", step)
        raise TemporaryDeliveryError(f"the MX did not answer in time ({step})") from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        log.debug("delivery attempt failed while %s: %s", step, exc)
        error = TemporaryDeliveryError(
            f"the connection to the MX failed ({step}): {_describe(exc)}"
        )
        log.warning("delivery attempt failed: %s", error)
        raise error from exc
    finally:
        transport = smtp.transport
        if polite:
            await _quit(smtp, timeouts)
        smtp.close()
        if isinstance(transport, asyncio.Transport):
            # The SMTP session is over (QUIT or failure); do not leave a TLS
            # shutdown pending on the event loop after we return.
            transport.abort()
            await asyncio.sleep(0)
    result = DeliveryResult(decision.server_hostname, tls, accepted, refused, reply)
    log.info(
        "delivered over %s to %d recipient(s), %d refused",
        result.transport_security,
        len(accepted),
        len(refused),
    )
    return result
