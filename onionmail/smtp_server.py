"""What both of the box's SMTP servers share: anonymous greetings, a safe error boundary, limits.

aiosmtpd's defaults identify the host and the software (``220 <fqdn>
Python SMTP 1.4.6``) and report internal exceptions to the peer (``500
Error: (KeyError) ...``). Every server here overrides both: the greeting and
the EHLO reply carry only the name given (the box's onion, or ``localhost``
for submission) and ``ESMTP``; an unexpected error answers a generic ``451``
and is logged locally without mail addresses.

Limits against abuse, per session unless said otherwise (the box sets each
from ``onionmail.toml``; the keyword defaults here are the config defaults):

* simultaneous connections, per listener and across the box's listeners
  (:class:`ConnectionLimit`): one over the limit is answered ``421 4.7.0 Too
  many connections, try again later`` and closed before the greeting, so it
  costs no handler work, and the open sessions go on;
* line length (``max_line_length``, RFC 5321 4.5.3.1.6: 1000 octets with
  CRLF), for command lines and for DATA; a longer DATA line fails the
  message with ``500`` (aiosmtpd's reply);
* unknown or refused commands (``max_bad_commands``): the one over the cap is
  answered ``421 4.7.0 Too many errors`` instead of its ``5xx``, and the
  connection is closed; aiosmtpd itself also closes after 5 unknown verbs;
* silence (``timeout``): between commands, and between two chunks of DATA,
  answered ``421 4.4.2 Idle timeout``; a whole DATA transfer also has a
  deadline (``data_timeout``) so a peer dripping one byte at a time cannot
  hold a connection forever: ``421 4.4.2 DATA took too long``;
* message size (aiosmtpd's ``data_size_limit``, announced as ESMTP SIZE) and
  recipients (the handlers' ``max_recipients``) are passed through.

aiosmtpd 1.4 resets its idle timer only when a command arrives, so a DATA
transfer had to finish within ``timeout`` of the DATA command, however
steadily it flowed (a large sealed message over a slow circuit was cut off).
Here DATA chunks count as activity and ``data_timeout`` bounds the whole.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import warnings
from collections.abc import Coroutine, Sequence
from typing import Any, AnyStr

from aiosmtpd.smtp import MISSING, SMTP, syntax

from onionmail.smtp_data import DataOutcome, read_data

log = logging.getLogger(__name__)

IDENT = "ESMTP"

DEFAULT_MAX_LINE_LENGTH = 1000
"""RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF."""
DEFAULT_MAX_BAD_COMMANDS = 20
DEFAULT_DATA_TIMEOUT = 1800.0

TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
BARE_LINE_END = "500 5.5.2 Bare CR or LF in a command line; lines end with CRLF"
TOO_MANY_ERRORS = "421 4.7.0 Too many errors; closing the connection"
IDLE_TIMEOUT = b"421 4.4.2 Idle timeout; closing the connection\r\n"
DATA_TIMEOUT = b"421 4.4.2 DATA took too long; closing the connection\r\n"

# Replies that refuse a message or an address on its merits; a peer that gets
# them did nothing wrong as a client, so they do not count as bad commands.
_NOT_BAD = ("550", "552", "553", "554")


class SafeHandler:
    """Base of the box's aiosmtpd handlers.

    aiosmtpd cancels a session's handler when the peer hangs up, also in
    the middle of ``handle_DATA``. A worker thread that was writing the
    message finishes anyway, so a cancelled handler could leave a message
    stored but not recorded (the receiver's replay cache: a retry stored it a
    second time) or queued without its bookkeeping. :meth:`finish` runs the
    storing part as its own task, shielded from that cancellation; the box
    waits for such tasks (:meth:`drain`) before it stops.
    """

    _storing: set[asyncio.Task[str]]

    async def finish(self, work: Coroutine[Any, Any, str]) -> str:
        """Run ``work`` to its end even if the session is cancelled meanwhile."""
        if not hasattr(self, "_storing"):
            self._storing = set()
        task = asyncio.ensure_future(work)
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        task.add_done_callback(_log_orphan_failure)
        return await asyncio.shield(task)

    async def drain(self) -> None:
        """Wait for the storing that :meth:`finish` started (a hung-up peer's)."""
        pending = list(getattr(self, "_storing", ()))
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def handle_exception(self, error: Exception) -> str:
        log.error("internal error in an SMTP session: %s", type(error).__name__)
        log.debug("internal error detail", exc_info=error)
        return "451 4.3.0 Temporary server error; please try again later"


def _log_orphan_failure(task: asyncio.Task[str]) -> None:
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


class BoxSMTP(SMTP):
    """aiosmtpd's SMTP with the limits listed in the module docstring."""

    def __init__(
        self,
        handler: Any,
        *,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_bad_commands: int = DEFAULT_MAX_BAD_COMMANDS,
        data_timeout: float = DEFAULT_DATA_TIMEOUT,
        connection_limits: Sequence[ConnectionLimit] = (),
        **kwargs: Any,
    ) -> None:
        # SMTP.__init__ sizes its StreamReader from line_length_limit, so it is
        # set first. aiosmtpd measures the line as sent, so one octet more lets
        # through the dot that transparency (RFC 5321 4.5.2) adds to a
        # 1000-octet line beginning with a dot.
        self.line_length_limit = max_line_length + 1
        # aiosmtpd keeps the per-command size limits in a dict on the class,
        # which every EHLO of every session grows; one per session instead.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self.max_bad_commands = max_bad_commands
        self.data_timeout = data_timeout
        self._connection_limits = tuple(connection_limits)
        self._holding: list[ConnectionLimit] = []
        self._refused = False
        self._closing = False
        self._in_data = False
        self._data_deadline: asyncio.TimerHandle | None = None
        self._pipelined = b""
        super().__init__(handler, **kwargs)
        self._bad_commands = 0

    # -- simultaneous connections ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._holding and not self._refused and not self._admit():
            self._refused = True
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        super().connection_made(transport)

    def _admit(self) -> bool:
        for limit in self._connection_limits:
            if not limit.acquire():
                self._release_slots()
                return False
            self._holding.append(limit)
        return True

    def _release_slots(self) -> None:
        while self._holding:
            self._holding.pop().release()

    def connection_lost(self, error: Exception | None) -> None:
        self._end_data_transfer()
        try:
            if self._refused:
                # No session, timer or handler task was set up; only the stream
                # protocol underneath has state to wind down.
                asyncio.StreamReaderProtocol.connection_lost(self, error)
            else:
                super().connection_lost(error)
        finally:
            self._release_slots()

    def eof_received(self) -> bool | None:
        if self._refused:
            return False
        result: bool | None = super().eof_received()
        return result

    # -- command lines end with CRLF ----------------------------------------------------

    def _cb_client_connected(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super()._cb_client_connected(reader, writer)
        read_until = reader.readuntil

        async def command_line(separator: bytes | None = None) -> bytes:
            # aiosmtpd reads commands with readuntil() (up to LF). A command
            # line is read up to CRLF instead, and one holding a bare CR or LF
            # is refused whole: a bare LF must never split one line into two
            # commands (smuggling, RFC 5321 2.3.8). Commands pipelined behind
            # the end of DATA were read with it (smtp_data): they come first.
            if separator is not None:
                return await read_until(separator)
            while True:
                line = await self._pipelined_line() or await read_until(b"\r\n")
                body = line[:-2] if line.endswith(b"\r\n") else line
                if b"\n" not in body and b"\r" not in body:
                    return line
                await self.push(BARE_LINE_END)

        reader.readuntil = command_line  # type: ignore[method-assign,assignment]

    async def _pipelined_line(self) -> bytes:
        """The next command line from bytes read past the end of DATA, or b"" if none."""
        if not self._pipelined:
            return b""
        end = self._pipelined.find(b"\r\n")
        if end < 0:
            # An unfinished line: the rest of it is still in the stream.
            head, self._pipelined = self._pipelined, b""
            return head + await self._reader.readuntil(b"\r\n")
        line, self._pipelined = self._pipelined[: end + 2], self._pipelined[end + 2 :]
        return line

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str) -> None:
        # Each EHLO adds the SIZE and SMTPUTF8 allowances to the MAIL line limit
        # again; start from the base so that repeating EHLO does not stretch it.
        self.command_size_limits.clear()
        await super().smtp_EHLO(hostname)

    # -- bad commands ------------------------------------------------------------------

    async def push(self, status: AnyStr) -> None:
        if self._closing:
            return  # after our 421 nothing more goes out, even for pipelined commands
        code = status[:3] if isinstance(status, str) else status[:3].decode("ascii", "replace")
        if code[:1] == "5" and code not in _NOT_BAD:
            self._bad_commands += 1
            if self._bad_commands > self.max_bad_commands:
                await super().push(TOO_MANY_ERRORS)
                self._close()
                return
        await super().push(status)

    def _close(self, last_words: bytes = b"") -> None:
        self._closing = True
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            if last_words:
                transport.write(last_words)
            transport.close()

    # -- timeouts ----------------------------------------------------------------------

    def _timeout_cb(self) -> None:
        # aiosmtpd closes an idle session without a word; RFC 5321 4.2 wants a
        # 421 so the peer knows why. Nothing host-specific goes in the text.
        self._closing = True
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(IDLE_TIMEOUT)
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_data and not self._closing:
            self._reset_timeout()  # a DATA chunk is activity, like a command

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        self._in_data = True
        self._data_deadline = self.loop.call_later(self.data_timeout, self._data_timeout_cb)
        try:
            await self._data(arg)
        finally:
            self._end_data_transfer()

    async def _data(self, arg: str) -> None:
        # aiosmtpd's smtp_DATA with the transfer read by smtp_data.read_data
        # (chunks, not lines); the checks, replies and handler call are its own.
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        pending, self._pipelined = self._pipelined, b""
        block = await read_data(
            self._reader,
            pending,
            line_limit=self.line_length_limit,
            size_limit=self.data_size_limit,
        )
        if block is None:
            return  # the peer hung up before the end of the data
        self._pipelined = block.rest
        if block.outcome is not DataOutcome.OK:
            await self.push(block.outcome.value)
            self._set_post_data_state()  # type: ignore[no-untyped-call]
            return
        self.envelope.content = block.content
        self.envelope.original_content = block.content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _call_handler_hook(self, command: str, *args: Any) -> Any:
        if command == "DATA":
            # The transfer is over; storing the message is not the peer's time.
            self._end_data_transfer()
        return await super()._call_handler_hook(command, *args)

    def _data_timeout_cb(self) -> None:
        self._data_deadline = None
        log.info("closing a session whose DATA exceeded %g s", self.data_timeout)
        self._close(DATA_TIMEOUT)

    def _end_data_transfer(self) -> None:
        self._in_data = False
        if self._data_deadline is not None:
            self._data_deadline.cancel()
            self._data_deadline = None


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
    keywords go to :class:`BoxSMTP` and aiosmtpd's SMTP (``data_size_limit``,
    ``timeout``, ``max_line_length``, ``max_bad_commands``, ``data_timeout`` ...).
    """
    kwargs: dict[str, Any] = {"ident": IDENT, "decode_data": False, "enable_SMTPUTF8": True}
    kwargs.update(smtp_kwargs)
    limits: list[ConnectionLimit] = []
    if max_connections is not None:
        limits.append(ConnectionLimit(name, max_connections))
    if connections_total is not None:
        limits.append(connections_total)
    loop = asyncio.get_running_loop()

    def protocol() -> BoxSMTP:
        # Submission listens on loopback only, where TLS protects nothing that
        # the kernel does not; aiosmtpd warns about AUTH without TLS on every
        # connection, which says nothing here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")
            return BoxSMTP(handler, loop=loop, connection_limits=limits, **kwargs)

    return await loop.create_server(protocol, host, port)


def server_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])
