"""What the box's SMTP servers share: anonymous greetings, a safe error boundary, limits.

The servers run on the box's own protocol core (:mod:`onionmail.smtp.protocol`,
which says why it replaced aiosmtpd) with aiosmtpd-style handlers derived
from :class:`SafeHandler`. Stock servers identify the host and the software
(aiosmtpd: ``220 <fqdn> Python SMTP 1.4.6``) and report internal exceptions
to the peer (``500 Error: (KeyError) ...``). Here the greeting and the EHLO
reply carry only the name given (the box's onion, or ``localhost`` for
submission) and ``ESMTP``; an unexpected error answers a generic ``451`` and
is logged locally without mail addresses.

Limits against abuse, per session unless said otherwise (the box sets each
from ``onionmail.toml``; the keyword defaults here are the config defaults):

* simultaneous connections, per listener and across the box's listeners
  (:class:`ConnectionLimit`): one over the limit is answered ``421 4.7.0 Too
  many connections, try again later`` and closed before the greeting, so it
  costs no handler work, and the open sessions go on;
* line length (``max_line_length``, RFC 5321 4.5.3.1.6: 1000 octets with
  CRLF), for command lines and for DATA; a longer DATA line fails the
  message with ``500``;
* unknown or refused commands (``max_bad_commands``): the one over the cap is
  answered ``421 4.7.0 Too many errors`` instead of its ``5xx``, and the
  connection is closed; 5 unknown verbs also close it (``502``);
* silence (``timeout``): between commands, and between two chunks of DATA,
  answered ``421 4.4.2 Idle timeout``; a whole DATA transfer also has a
  deadline (``data_timeout``) so a peer dripping one byte at a time cannot
  hold a connection forever: ``421 4.4.2 DATA took too long``; storing the
  message after its end counts against neither;
* message size (``data_size_limit``, announced as ESMTP SIZE, ``552``) and
  recipients (the handlers' ``max_recipients``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from onionmail.core.errors import AddressError
from onionmail.core.mail_address import MailAddress, parse_mail_address
from onionmail.smtp.protocol import SMTPProtocol
from onionmail.smtp.replies import (
    DEFAULT_DATA_TIMEOUT,
    DEFAULT_MAX_BAD_COMMANDS,
    DEFAULT_MAX_LINE_LENGTH,
    IDENT,
    SERVER_ERROR,
)
from onionmail.smtp.session import Listener

__all__ = [
    "DEFAULT_DATA_TIMEOUT",
    "DEFAULT_MAX_BAD_COMMANDS",
    "DEFAULT_MAX_LINE_LENGTH",
    "IDENT",
    "NULL_SENDER",
    "ConnectionLimit",
    "SafeHandler",
    "server_port",
    "start_smtp_server",
]

log = logging.getLogger(__name__)
AFTER_LIMIT = 64
"""Messages of one listener whose bookkeeping (after the reply) may be pending at once."""

NULL_SENDER = "<>"
"""``envelope.mail_from`` for ``MAIL FROM:<>`` (bounces), as aiosmtpd spells it: it must
stay truthy, since the protocol answers every RCPT after a falsy sender ``503 need MAIL``."""


class SafeHandler:
    """Base of the box's SMTP handlers: aiosmtpd's hook API, served by the box's own core.

    The server cancels a session's running hook when the peer hangs up, also
    in the middle of ``handle_DATA`` (as aiosmtpd did). A worker thread that was writing the
    message finishes anyway, so a cancelled handler could leave a message
    stored but not recorded (the receiver's replay cache: a retry stored it a
    second time) or queued without its bookkeeping. :meth:`finish` runs the
    storing part as its own task, shielded from that cancellation; the box
    waits for such tasks (:meth:`drain`) before it stops.

    A hook's first step runs inside the protocol's callback, before any task
    exists (see :mod:`onionmail.smtp.protocol`): ``asyncio.timeout()`` must
    not come before its first real suspension; ``asyncio.wait_for`` is fine.
    """

    _storing: set[asyncio.Task[str]]
    _after: set[asyncio.Task[None]]

    async def finish(self, work: Coroutine[Any, Any, str]) -> str:
        """Run ``work`` to its end even if the session is cancelled meanwhile."""
        if not hasattr(self, "_storing"):
            self._storing = set()
        task = asyncio.ensure_future(work)
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        task.add_done_callback(_log_orphan_failure)
        return await asyncio.shield(task)

    async def after(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work``, the bookkeeping of a message already stored, after the reply: the
        next transaction's round trips overlap it. Past :data:`AFTER_LIMIT` pending, it runs
        before the reply instead, so a backlog stays bounded."""
        if not hasattr(self, "_after"):
            self._after = set()
        if len(self._after) >= AFTER_LIMIT:
            await work
            return
        task = asyncio.ensure_future(work)
        self._after.add(task)
        task.add_done_callback(self._after.discard)
        task.add_done_callback(_log_orphan_failure)

    async def drain(self) -> None:
        """Wait for the storing that :meth:`finish` started (a hung-up peer's) and the
        bookkeeping :meth:`after` left running."""
        while pending := [*getattr(self, "_storing", ()), *getattr(self, "_after", ())]:
            await asyncio.gather(*pending, return_exceptions=True)

    @staticmethod
    def envelope_sender(address: str) -> str:
        """MAIL FROM's address as the envelope keeps it: :data:`NULL_SENDER`, or parsed.

        Raises :class:`~onionmail.core.errors.AddressError` for a bad address.
        """
        if address in ("", NULL_SENDER):
            return NULL_SENDER
        return str(parse_mail_address(address))

    def accept_sender(self, envelope: Any, address: str, options: list[str]) -> str:
        """Take MAIL FROM as :meth:`envelope_sender` reads it: ``250``, or ``553`` if bad.

        Each handler's own checks on who may send come before; this is the part
        every handler shares.
        """
        try:
            envelope.mail_from = self.envelope_sender(address)
        except AddressError as exc:
            return f"553 5.1.7 Bad sender address: {exc}"
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    @staticmethod
    def next_recipient(envelope: Any, address: str, limit: int) -> MailAddress | str:
        """A RCPT's address parsed, or the reply refusing it for the count or its syntax.

        What every handler checks first; what may receive is each handler's own.
        """
        if len(envelope.rcpt_tos) >= limit:
            return f"452 4.5.3 Too many recipients (at most {limit} per message)"
        try:
            return parse_mail_address(address)
        except AddressError as exc:
            return f"553 5.1.3 Bad recipient address: {exc}"

    @staticmethod
    def add_recipient(envelope: Any, rcpt: MailAddress, options: Sequence[str] = ()) -> str:
        """Take ``rcpt`` into the envelope once; the 250 for it.

        A recipient repeated in one transaction (in any case) is accepted and
        not added again: the message is delivered to it once, not once per RCPT.
        """
        address = str(rcpt)
        if address.lower() not in (r.lower() for r in envelope.rcpt_tos):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal error in an SMTP session: %s", type(error).__name__)
        log.debug("internal error detail", exc_info=error)
        return SERVER_ERROR


def _log_orphan_failure(task: asyncio.Task[Any]) -> None:
    # Retrieve the outcome, so a failure whose session is gone is not lost silently.
    if not task.cancelled() and task.exception() is not None:
        log.error(
            "storing a message failed after its session ended: %s", type(task.exception()).__name__
        )


class ConnectionLimit:
    """Open sessions counted against a ceiling.

    Each listener has one; the box's total is one more, shared by both
    listeners (a session takes a slot in every limit it is given, or none).
    Used from the event loop thread only.
    """

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError("a connection limit must be at least 1")
        self.name = name
        self.limit = limit
        self.open = 0
        self.refused = 0
        self._full = False

    def acquire(self) -> bool:
        if self.open >= self.limit:
            self.refused += 1
            if not self._full:
                # Once per episode, and without peers: the log is an observer too.
                log.warning(
                    "%s: %d connections open, the limit; refusing new ones", self.name, self.open
                )
                self._full = True
            return False
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1
        if self._full and self.open < self.limit:
            self._full = False
            log.info("%s: below the connection limit again", self.name)


async def start_smtp_server(
    handler: SafeHandler,
    host: str,
    port: int,
    *,
    max_connections: int | None = None,
    connections_total: ConnectionLimit | None = None,
    name: str = "smtp",
    **smtp_kwargs: Any,
) -> asyncio.Server:
    """Serve ``handler`` on ``host:port`` (0: a free port) in the running loop.

    ``max_connections`` caps this listener (None: no cap of its own);
    ``connections_total`` is a limit shared with other listeners. Further
    keywords are :class:`onionmail.smtp.session.Listener`'s, named as
    aiosmtpd's SMTP names them (``hostname``, ``data_size_limit``,
    ``timeout``, ``data_timeout``, ``max_line_length``, ``max_bad_commands``,
    ``auth_required``, ``auth_require_tls``, ``authenticator``,
    ``tls_context``, ``require_starttls`` ...).
    """
    limits: list[ConnectionLimit] = []
    if max_connections is not None:
        limits.append(ConnectionLimit(name, max_connections))
    if connections_total is not None:
        limits.append(connections_total)
    listener = Listener(handler, connection_limits=limits, **smtp_kwargs)
    return await serve(listener, host, port)


def server_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


async def serve(listener: Listener, host: str, port: int, *, backlog: int = 128) -> asyncio.Server:
    """Listen on ``host:port`` (0: a free port) in the running loop, one protocol per connection.

    Closing the server also closes its open sessions (running hooks are
    cancelled, storing is shielded), as Python 3.13's ``close_clients()``
    would: a session has no task of its own for the loop's shutdown to
    cancel, as aiosmtpd's sessions had.
    """
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTPProtocol(listener, loop), host, port, backlog=backlog
    )
    stop_listening = server.close

    def close() -> None:
        stop_listening()
        for session in list(listener.sessions):
            session.close()

    server.close = close  # type: ignore[method-assign]
    return server
