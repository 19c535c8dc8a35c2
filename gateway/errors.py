"""The gateway's exception tree.

Every error the gateway raises on purpose derives from :class:`GatewayError`;
each leaf also inherits the built-in exception it most resembles, so code
that only knows the standard library still catches it sensibly::

    GatewayError
     |- GatewayConfigError (ValueError)          a setting or key file is wrong
     |- DkimError (ValueError)                   a message cannot be DKIM-signed
     |- SenderRewriteError (ValueError)          a message's From cannot be rewritten
     |- OutboundDeliveryError (ConnectionError)  one clearnet delivery attempt failed
     |   |- TemporaryDeliveryError               keep queued, retry later (4xx, timeouts)
     |   |   +- TlsUnavailableError              TLS was required and could not be had
     |   +- PermanentDeliveryError               the MX refused for good (5xx): bounce
     |- DnsError                                 a DNS answer could not be had or used
     |   |- DnsDeferError (ConnectionError)      SERVFAIL, bogus DNSSEC, no answer: retry later
     |   |   +- DnsTimeoutError (TimeoutError)   the resolver did not answer in time
     |   +- DnsPermanentError (LookupError)      NXDOMAIN, no mail host: bounce
     |       +- NullMxError                      the domain publishes a null MX (RFC 7505)
     |- CertificateMismatchError (ValueError)    the MX's certificate fails its DANE TLSA check
     |- SpfRecordError (ValueError)              an SPF record is malformed (RFC 7208 permerror)
     +- MtaStsError                              an MTA-STS policy could not be had or used
         |- MtaStsFetchError (ConnectionError)   the HTTPS fetch failed (TLS, HTTP, timeout)
         +- MtaStsPolicyError (ValueError)       the TXT record or policy text is malformed

A DNS failure on anything the TLS policy depends on is a :class:`DnsDeferError`,
never a reason to send with less protection: that is the downgrade an active
attacker would provoke by dropping or forging answers.

Messages are meant for the user and for logs: ``str(error)`` never contains
a mail address (the server's reply is redacted there). The unredacted reply
a bounce may quote is kept in the ``reply_text`` attribute.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class GatewayConfigError(GatewayError, ValueError):
    """A gateway setting, key file or TLS decision is missing or inconsistent."""


class DkimError(GatewayError, ValueError):
    """A message could not be DKIM-signed (malformed headers, unusable key)."""


class SenderRewriteError(GatewayError, ValueError):
    """A message's From header is missing, repeated or unparsable."""


class OutboundDeliveryError(GatewayError, ConnectionError):
    """One delivery attempt to a clearnet MX failed.

    ``reply_code`` and ``reply_text`` hold the server's answer when there was
    one (``None`` / ``""`` for network failures); ``reply_text`` is not
    redacted and must not be logged at INFO or above. When every recipient
    was refused, ``refused_recipients`` maps each to its ``(code, text)``.
    """

    permanent = False

    def __init__(
        self, message: str, *, reply_code: int | None = None, reply_text: str = ""
    ) -> None:
        super().__init__(message)
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.refused_recipients: dict[str, tuple[int, str]] = {}


class TemporaryDeliveryError(OutboundDeliveryError):
    """The attempt failed for now (4xx, timeout, refused connection): retry later."""


class TlsUnavailableError(TemporaryDeliveryError):
    """TLS was required but the MX did not offer it, the handshake failed or the
    certificate did not verify. Nothing was sent in clear.

    ``reason`` is a short stable token for the ledger and for tests:
    ``starttls-not-offered``, ``starttls-refused``, ``handshake-failed``,
    ``certificate-rejected`` or ``certificate-check-failed``.
    """

    def __init__(self, message: str, *, reason: str, reply_code: int | None = None) -> None:
        super().__init__(message, reply_code=reply_code)
        self.reason = reason


class PermanentDeliveryError(OutboundDeliveryError):
    """The MX refused the message for good (5xx): retrying cannot help, bounce."""

    permanent = True


class DnsError(GatewayError):
    """A DNS lookup failed or gave an answer that cannot be used."""


class DnsDeferError(DnsError, ConnectionError):
    """No trustworthy answer now (SERVFAIL, failed DNSSEC validation, no server
    reachable): keep the message queued and retry; never downgrade."""


class DnsTimeoutError(DnsDeferError, TimeoutError):
    """The resolver gave no answer within the lookup's time limit: retry later."""


class DnsPermanentError(DnsError, LookupError):
    """The DNS says for good that there is nowhere to deliver (NXDOMAIN, no
    MX and no address): bounce."""


class NullMxError(DnsPermanentError):
    """The domain publishes a null MX (RFC 7505): it accepts no mail at all."""


class MtaStsError(GatewayError):
    """An MTA-STS policy could not be discovered, fetched or parsed."""


class MtaStsFetchError(MtaStsError, ConnectionError):
    """The policy could not be fetched over HTTPS (certificate, HTTP status,
    redirect, size, timeout)."""


class MtaStsPolicyError(MtaStsError, ValueError):
    """The ``_mta-sts`` TXT record or the policy text violates RFC 8461."""


class CertificateMismatchError(GatewayError, ValueError):
    """The MX's certificate matches none of its DNSSEC-validated TLSA records
    (DANE, RFC 7672): do not deliver to it; another MX or a later retry may work."""


class SpfRecordError(GatewayError, ValueError):
    """An SPF record violates the RFC 7208 syntax (its evaluation gives ``permerror``).

    Only :func:`gateway.inbound.spf.parse_spf_record` raises it; the inbound checks turn
    it into a result and never let it escape."""
