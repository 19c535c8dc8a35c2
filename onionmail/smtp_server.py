"""What both of the box's SMTP servers share: anonymous greetings and a safe error boundary.

aiosmtpd's defaults identify the host and the software (``220 <fqdn>
Python SMTP 1.4.6``) and report internal exceptions to the peer (``500
Error: (KeyError) ...``). Every server here overrides both: the greeting and
the EHLO reply carry only the name given (the box's onion, or ``localhost``
for submission) and ``ESMTP``; an unexpected error answers a generic ``451``
and is logged locally without mail addresses.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

log = logging.getLogger(__name__)

IDENT = "ESMTP"


class SafeHandler:
    """Base of the box's aiosmtpd handlers."""

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal error in an SMTP session: %s", type(error).__name__)
        log.debug("internal error detail", exc_info=error)
        return "451 4.3.0 Temporary server error; please try again later"


class BoxSMTP(SMTP):
    """aiosmtpd's SMTP with a cap on unknown/invalid commands per session."""

    max_bad_commands = 20

    def __init__(self, handler: Any, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._bad_commands = 0

    async def push(self, status: AnyStr) -> None:
        code = status[:3] if isinstance(status, str) else status[:3].decode("ascii", "replace")
        if code[:1] == "5" and code not in ("550", "552", "553", "554"):
            self._bad_commands += 1
        await super().push(status)
        if self._bad_commands > self.max_bad_commands and self.transport is not None:
            await super().push("421 4.7.0 Too many errors; closing the connection")
            self.transport.close()

    def _timeout_cb(self) -> None:
        # aiosmtpd closes an idle session without a word; RFC 5321 4.2 wants a
        # 421 so the peer knows why. Nothing host-specific goes in the text.
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"421 4.4.2 Idle timeout; closing the connection\r\n")
        super()._timeout_cb()  # type: ignore[no-untyped-call]


async def start_smtp_server(
    handler: SafeHandler, host: str, port: int, **smtp_kwargs: Any
) -> asyncio.Server:
    """Serve ``handler`` on ``host:port`` (0: a free port) in the running loop."""
    kwargs = {"ident": IDENT, "decode_data": False, "enable_SMTPUTF8": True}
    kwargs.update(smtp_kwargs)
    loop = asyncio.get_running_loop()

    def protocol() -> BoxSMTP:
        # Submission listens on loopback only, where TLS protects nothing that
        # the kernel does not; aiosmtpd warns about AUTH without TLS on every
        # connection, which says nothing here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return BoxSMTP(handler, loop=loop, **kwargs)

    return await loop.create_server(protocol, host, port)


def server_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
