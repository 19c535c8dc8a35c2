"""The box's SMTP server core: one ``asyncio.BufferedProtocol`` per connection, a state machine.

Why not aiosmtpd, whose handler API this keeps
-----------------------------------------------

Both SMTP listeners of the box (inbound behind the onion, submission on
loopback) and the gateway's ran on aiosmtpd 1.4.6, wrapped to add limits
and a chunked DATA reader. They accepted durable mail at 0.72-0.89x the rate
of a real Postfix on the same 2-core machine (inbound) and 0.67-0.76x
(submission): ``python -m bench.accept --quick``, 5 KB and 100 KB, 1 and 20
sessions. Profiles put the difference in the event loop, not in storing:
aiosmtpd spends some 70 us setting up each connection (``inspect.getmembers``
and ``dir()`` over protocol and handler, a StreamReader and writer, a log
line at INFO) and then, per command, a ``readuntil`` coroutine, a task
wake-up, sanitized logging, ``_call_handler_hook`` and a ``push`` that
awaits ``drain`` -- about 1 ms of loop time per message, when Postfix
spends that on the whole transaction.

This core keeps aiosmtpd's handler contract (the same handler objects run
unchanged: ``handle_EHLO/HELO/MAIL/RCPT/DATA/RSET/NOOP/QUIT/VRFY`` hooks with
``(server, session, envelope, ...)``, ``handle_exception``, an
``authenticator`` returning aiosmtpd's ``AuthResult`` for a
``LoginPassword``; see :class:`Session` and :class:`Envelope`) and its reply
texts, and does the work differently:

* everything a listener needs is computed once per listener
  (:class:`Listener`: hooks, banner, EHLO lines), nothing per connection but
  two small objects, a timer and the banner write;
* bytes are parsed where they arrive (``data_received``): command lines are
  cut out of a buffer, several pipelined commands in one segment are all
  answered, and the replies of one segment go out in one ``write``; asyncio
  reads them into one buffer per listener (``get_buffer``), not into a
  fresh 256 KiB allocation per read;
* each command runs as its own task, started eagerly on Python 3.12+
  (:func:`_command_task`): a command whose hooks return without suspending
  (EHLO, MAIL, RCPT, AUTH PLAIN with its initial response, for the box's
  handlers) is answered inside that callback, with no loop round trip; one
  that really waits (``handle_DATA`` storing in a worker thread, an AUTH
  challenge, STARTTLS) goes on as a task, and the commands behind it wait in
  the buffer (reading pauses past :data:`BACKLOG`, and while the peer does
  not read its replies);
* the idle timer is one timer per session, re-armed lazily from a
  timestamp, not cancelled and recreated per command.

Smuggling safety
----------------

* A command line ends at CRLF only. A line holding a bare CR or LF is
  refused whole (``500 5.5.2``), so a bare LF never splits one line into two
  commands (RFC 5321 2.3.8); a line longer than the limit is discarded as it
  arrives (memory stays bounded) and answered ``500 Command line too long``.
* DATA is parsed by :class:`onionmail.smtp.data.DataReader`, whose verdicts
  and stored bytes ``tests/test_smtp_data.py`` proves equal to aiosmtpd's
  line reader on generated input, so only ``<CRLF>.<CRLF>`` ends a message;
  what follows it is the next command, read from the same buffer.
* Plaintext pipelined behind ``STARTTLS`` is discarded before the handshake
  (RFC 3207 4.2); the session starts over after it.

Hang-ups: when the peer goes away, a running hook is cancelled as aiosmtpd
did; :meth:`onionmail.smtp.server.SafeHandler.finish` shields the storing
from that, so a message the handler began to store is stored.

Same replies: ``tests/test_smtp_protocol.py`` sends generated command
sequences to a stock aiosmtpd and to this core and compares every reply.
Where they differ, on purpose: a path that makes the stdlib address parser
crash (``MAIL FROM:<``, ``VRFY a@``) is ``553``/``502`` here, where aiosmtpd
answered ``451``, or ``500 Error: (IndexError) ...``; paths are RFC 5321
paths (:func:`_address`), so comments and obsolete RFC 5322 forms that
aiosmtpd's address parser took are refused; a handler without
``handle_exception`` still gets a bare ``451``, never the exception's text;
a second STARTTLS is ``554 5.5.1``; the idle timer does not run while a hook
works (storing is not the peer's silence); the TLS handshake is bounded by
the idle ``timeout``; closing the server closes its sessions (:func:`serve`).

Not carried over from aiosmtpd (no listener of the box or gateway uses
them; a handler defining one is refused at start): the PROXY protocol,
``handle_AUTH``/``handle_STARTTLS`` hooks, handler ``auth_*`` mechanisms,
``process_message``, ``decode_data=True``, ``command_call_limit``. ``AUTH``
is offered only when an ``authenticator`` is given (aiosmtpd offered it,
always failing, whenever TLS was up); the default host name is
``localhost`` (aiosmtpd's was the machine's FQDN). aiosmtpd stays a
dependency for the handlers' ``AuthResult`` and ``LoginPassword`` types (so
handler code is unchanged) and as the reference in the tests.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import ssl
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

from aiosmtpd.smtp import AuthResult, LoginPassword

from onionmail.smtp.data import ChunkReader, DataBlock, DataOutcome, DataReader
from onionmail.smtp.quickack import ack_now

log = logging.getLogger(__name__)

IDENT = "ESMTP"
DEFAULT_HOSTNAME = "localhost"
DEFAULT_TIMEOUT = 300.0
"""Idle seconds allowed between commands, between two chunks of DATA, and for a TLS handshake."""
DEFAULT_DATA_TIMEOUT = 1800.0
"""Seconds a whole DATA transfer may take, however steadily it flows."""
DEFAULT_DATA_SIZE_LIMIT = 2**25
DEFAULT_MAX_LINE_LENGTH = 1000
"""RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF."""
DEFAULT_MAX_BAD_COMMANDS = 20
DEFAULT_TRANSACTION_TIMEOUT = 300.0
"""Seconds a session may go without completing a mail transaction (DATA transfers and the
server's own work not counted): commands that make no progress (NOOP, RSET, EHLO, VRFY)
cannot hold a connection slot for longer."""
DEFAULT_MAX_SESSION_TIME = 3600.0
"""Seconds a session may last in all, however much mail it carries."""
DEFAULT_MAX_COMMANDS = 1000
"""Commands a session may send in all (AUTH responses and data are not commands)."""
DEFAULT_EVICT_AFTER = 10.0
"""Seconds a session is safe from being closed to make room: when every slot is taken, a
new connection closes the session that has gone longest without completing a
transaction (never one in DATA or whose command the server is working on), so peers
holding slots with talk cannot keep mail out."""

COMMAND_SIZE_LIMIT = 512
"""RFC 5321 4.5.3.1.4; MAIL may be longer by its ESMTP parameters (SIZE, SMTPUTF8)."""
BOGUS_LIMIT = 5
"""Unknown verbs before ``502 ... goodbye`` (aiosmtpd's figure)."""
BACKLOG = 64 * 1024
"""Bytes buffered behind a command that is still running before reading pauses."""
RECEIVE_BYTES = 256 * 1024
"""The most one read takes from a socket (asyncio's own figure for ``recv``)."""

TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
BARE_LINE_END = "500 5.5.2 Bare CR or LF in a command line; lines end with CRLF"
TOO_MANY_ERRORS = b"421 4.7.0 Too many errors; closing the connection\r\n"
IDLE_TIMEOUT = b"421 4.4.2 Idle timeout; closing the connection\r\n"
DATA_TIMEOUT = b"421 4.4.2 DATA took too long; closing the connection\r\n"
NO_PROGRESS = b"421 4.4.2 No mail transaction completed in time; closing the connection\r\n"
SESSION_TOO_LONG = b"421 4.4.2 Session time limit reached; closing the connection\r\n"
TOO_MANY_COMMANDS = b"421 4.7.0 Too many commands; closing the connection\r\n"
SLOT_NEEDED = b"421 4.7.0 Idle session closed to make room; closing the connection\r\n"
BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT <size> [LAST]"
EMPTY_MESSAGE = "554 5.6.0 Error: an empty message is not accepted"
SERVER_ERROR = "451 4.3.0 Temporary server error; please try again later"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
BAD_BASE64 = "501 5.5.2 Can't decode base64"

# Replies that refuse a message or an address on its merits; a peer that gets
# them did nothing wrong as a client, so they do not count as bad commands.
_NOT_BAD = frozenset((b"550", b"552", b"553", b"554"))
_CRLF = b"\r\n"
_OVERLONG = b"\r\n"
""":meth:`SMTPProtocol._next_line` for a line over the limit (never a line: lines exclude CRLF)."""
_BEFORE_STARTTLS = frozenset(("NOOP", "EHLO", "STARTTLS", "QUIT"))
_SYNTAX = {
    "AUTH": "AUTH <mechanism>",
    "DATA": "DATA",
    "EHLO": "EHLO hostname",
    "HELO": "HELO hostname",
    "HELP": "HELP [command]",
    "MAIL": "MAIL FROM: <address>",
    "NOOP": "NOOP [ignored]",
    "QUIT": "QUIT",
    "RCPT": "RCPT TO: <address>",
    "RSET": "RSET",
    "STARTTLS": "STARTTLS",
    "VRFY": "VRFY <address>",
}
_PARAMETERS = " [SP <mail-parameters>]"
_UNSUPPORTED_HOOKS = ("handle_AUTH", "handle_STARTTLS", "handle_PROXY", "process_message")
_HOOKS = ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY")


class Slot(Protocol):
    """A connection limit (:class:`onionmail.smtp.server.ConnectionLimit`)."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class Session:
    """What one connection knows, passed to every hook (aiosmtpd's ``Session`` attributes).

    Handlers add their own attributes (``onionmail_user``, ``onionmail_challenge``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, peer: Any) -> None:
        self.peer = peer
        self.ssl: dict[str, Any] | None = None
        self.host_name: str | None = None
        self.extended_smtp = False
        self.loop = loop
        self.proxy_data: Any = None
        self.auth_data: Any = None
        self.authenticated: bool | None = None


class Envelope:
    """One mail transaction (aiosmtpd's ``Envelope`` attributes).

    Renewed by HELO, EHLO, RSET and the end of DATA.
    """

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.smtp_utf8 = False
        self.content: bytes | None = None
        self.original_content: bytes | None = None
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []


Authenticator = Callable[[Any, Session, Envelope, str, Any], Any]


class Listener:
    """Everything the sessions of one listener share, computed once when it starts."""

    def __init__(
        self,
        handler: Any,
        *,
        hostname: str | None = None,
        ident: str = IDENT,
        data_size_limit: int | None = DEFAULT_DATA_SIZE_LIMIT,
        enable_SMTPUTF8: bool = True,  # aiosmtpd's keyword
        decode_data: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        data_timeout: float = DEFAULT_DATA_TIMEOUT,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_bad_commands: int = DEFAULT_MAX_BAD_COMMANDS,
        transaction_timeout: float = DEFAULT_TRANSACTION_TIMEOUT,
        max_session_time: float = DEFAULT_MAX_SESSION_TIME,
        max_commands: int = DEFAULT_MAX_COMMANDS,
        evict_after: float = DEFAULT_EVICT_AFTER,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: Sequence[str] = (),
        authenticator: Authenticator | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        connection_limits: Sequence[Slot] = (),
        chunking: bool = False,
    ) -> None:
        if decode_data:
            raise ValueError("decode_data=True is not supported: handlers get the bytes")
        for name in _UNSUPPORTED_HOOKS:
            if hasattr(handler, name):
                raise TypeError(f"the SMTP core does not support the handler hook {name}")
        if any(name.startswith("auth_") for name in dir(type(handler))):
            raise TypeError("the SMTP core does not support handler auth_* mechanisms")
        self.handler = handler
        self.chunking = chunking
        """Announce CHUNKING and take BDAT (RFC 3030); opt-in, aiosmtpd had neither."""
        self.greeting: Callable[[Session], str] | None = getattr(handler, "greeting", None)
        """The handler's words after the banner's ident, per session (the seal challenge)."""
        self.hooks: dict[str, Callable[..., Any]] = {
            name: getattr(handler, "handle_" + name)
            for name in _HOOKS
            if hasattr(handler, "handle_" + name)
        }
        self.handle_exception: Callable[[Exception], Any] | None = getattr(
            handler, "handle_exception", None
        )
        self.hostname = hostname or DEFAULT_HOSTNAME
        self.banner = f"220 {self.hostname} {ident}\r\n".encode()
        self.data_size_limit = data_size_limit
        self.smtputf8 = enable_SMTPUTF8
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.transaction_timeout = transaction_timeout
        self.max_session_time = max_session_time
        self.max_commands = max_commands
        self.evict_after = evict_after
        # One octet more than the longest line lets through the dot that
        # transparency (RFC 5321 4.5.2) adds to a longest line beginning with one.
        self.line_limit = max_line_length + 1
        self.max_bad_commands = max_bad_commands
        self.auth_required = auth_required
        self.auth_require_tls = auth_require_tls
        self.authenticator = authenticator
        mechanisms = ("LOGIN", "PLAIN") if authenticator is not None else ()
        self.auth_mechanisms = tuple(m for m in mechanisms if m not in auth_exclude_mechanism)
        self.tls_context = tls_context
        self.require_starttls = tls_context is not None and require_starttls
        self.connection_limits = tuple(connection_limits)
        self.mail_limit = (
            COMMAND_SIZE_LIMIT + (26 if data_size_limit else 0) + (10 if enable_SMTPUTF8 else 0)
        )
        self.sessions: set[SMTPProtocol] = set()
        """The open sessions, closed with the listener (:func:`serve`)."""
        self.receive_buffer = memoryview(bytearray(RECEIVE_BYTES))
        """Where every session of this listener reads into (see :meth:`SMTPProtocol.get_buffer`)."""
        self.ehlo_plain = self._ehlo_lines(tls=False)
        self.ehlo_tls = self._ehlo_lines(tls=True)
        self.help_verbs = sorted(v for v in _SYNTAX if v != "STARTTLS" or tls_context is not None)

    def _ehlo_lines(self, *, tls: bool) -> tuple[str, ...]:
        lines = [f"250-{self.hostname}"]
        if self.data_size_limit:
            lines.append(f"250-SIZE {self.data_size_limit}")
        lines.append("250-8BITMIME")
        if self.smtputf8:
            lines.append("250-SMTPUTF8")
        if self.tls_context is not None and not tls:
            lines.append("250-STARTTLS")
        if self.auth_mechanisms and (tls or not self.auth_require_tls):
            lines.append("250-AUTH " + " ".join(self.auth_mechanisms))
        if self.chunking:
            lines.append("250-CHUNKING")
        return tuple(lines)


class SMTPProtocol(asyncio.BufferedProtocol):
    """One SMTP session (see the module docstring)."""

    __slots__ = (
        "_listener",
        "_loop",
        "_transport",
        "_sock",
        "_session",
        "_envelope",
        "_buf",
        "_discarding",
        "_data",
        "_task",
        "_line_waiter",
        "_out",
        "_closing",
        "_bad",
        "_bogus",
        "_last",
        "_began",
        "_progress",
        "_data_began",
        "_commands",
        "_idle",
        "_data_deadline",
        "_holding",
        "_tls",
        "_reading",
        "_write_paused",
        "_chunks",
        "_chunk_bytes",
        "_chunk_last",
        "_chunk_refusal",
    )

    def __init__(self, listener: Listener, loop: asyncio.AbstractEventLoop) -> None:
        self._listener = listener
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._sock: Any = None
        self._session: Session | None = None
        self._new_envelope()
        self._buf = bytearray()
        self._discarding = False
        self._data: DataReader | ChunkReader | None = None
        self._task: asyncio.Task[None] | None = None
        self._line_waiter: asyncio.Future[bytes] | None = None
        self._out: list[bytes] = []
        self._closing = False
        self._bad = 0
        self._bogus = BOGUS_LIMIT
        self._last = 0.0
        self._began = 0.0
        self._progress = 0.0
        """When the transaction clock (re)started: connect, or the last message accepted."""
        self._data_began = 0.0
        self._commands = 0
        self._idle: asyncio.TimerHandle | None = None
        self._data_deadline: asyncio.TimerHandle | None = None
        self._holding: list[Slot] = []
        self._tls = False
        self._reading = True
        self._write_paused = False
        self._chunks: list[bytes] | None = None
        """BDAT chunks of the current transaction (None: no BDAT yet)."""
        self._chunk_bytes = 0
        self._chunk_last = False
        self._chunk_refusal: str | None = None
        """The reply to a refused BDAT, sent once its chunk has been read (and dropped)."""

    # -- connection ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._sock = transport.get_extra_info("socket")
        if not self._admit():
            # Before the greeting, so the refusal costs no handler work.
            self._closing = True
            transport.write(TOO_MANY_CONNECTIONS)
            transport.close()
            return
        self._listener.sessions.add(self)
        self._session = Session(self._loop, transport.get_extra_info("peername"))
        self._last = self._began = self._progress = self._loop.time()
        listener = self._listener
        first = min(listener.timeout, listener.transaction_timeout, listener.max_session_time)
        self._idle = self._loop.call_at(self._last + first, self._idle_check)
        greeting = self._listener.greeting
        if greeting is None:
            transport.write(self._listener.banner)
        else:
            words = greeting(self._session)
            transport.write(self._listener.banner[:-2] + b" " + words.encode("ascii") + _CRLF)

    def _admit(self) -> bool:
        for limit in self._listener.connection_limits:
            if not limit.acquire() and not self._evict_for(limit):
                self._release_slots()
                return False
            self._holding.append(limit)
        return True

    def _evict_for(self, limit: Slot) -> bool:
        """Take a slot of ``limit`` from this listener's stalest idle session, if any.

        Idle: not in DATA, no command being worked on, older than ``evict_after``;
        stalest: the longest without completing a transaction.
        """
        now = self._loop.time()
        oldest = now - self._listener.evict_after
        victims = [
            s
            for s in self._listener.sessions
            if limit in s._holding
            and not s._closing
            and s._began <= oldest
            and s._data is None
            and (s._task is None or s._line_waiter is not None)
        ]
        if not victims:
            return False
        victim = min(victims, key=lambda s: s._progress)
        log.info("closing an idle session to make room for a new one")
        victim._close(SLOT_NEEDED)
        victim._release_slots()  # now, not when its connection is finally lost
        return limit.acquire()

    def _release_slots(self) -> None:
        while self._holding:
            self._holding.pop().release()

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.sessions.discard(self)
        self._closing = True
        self._transport = None
        for timer in (self._idle, self._data_deadline):
            if timer is not None:
                timer.cancel()
        self._idle = self._data_deadline = None
        if self._task is not None:
            self._task.cancel()  # a hook's storing is shielded by SafeHandler.finish
        self._release_slots()

    def close(self) -> None:
        """End the session without a word (the server is closing)."""
        self._close()

    def eof_received(self) -> bool:
        return False  # the peer is done sending: close (a running hook is cancelled)

    def pause_writing(self) -> None:
        self._write_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        self._update_reading()

    # -- bytes in --------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        """The listener's receive buffer, shared by its sessions.

        asyncio reads into it (``recv_into``) and calls :meth:`buffer_updated`
        at once, on the listener's one loop, so sessions never overlap in it;
        what a session keeps it copies there. A plain ``Protocol`` made asyncio
        allocate 256 KiB per read (an mmap, a shrink, an munmap and fresh
        pages for every command and every chunk of DATA).
        """
        return self._listener.receive_buffer

    def buffer_updated(self, nbytes: int) -> None:
        with self._listener.receive_buffer[:nbytes] as data:
            self.data_received(data)

    def data_received(self, data: bytes | memoryview) -> None:
        """Take the bytes that arrived (copied if kept: ``data`` may be a reused buffer)."""
        if self._closing:
            return
        if self._data is not None and not self._buf:
            # DATA's bytes go straight to its parser (the common case: no copy).
            self._last = self._loop.time()
            block = self._data.feed(data)
            if block is None:
                # More is to come before a reply carries the ACK: send it now, or a
                # peer writing without TCP_NODELAY (tor, for the inbound server)
                # holds its next segment back 40 ms (onionmail.smtp.quickack.ack_now).
                ack_now(self._sock)
                return
            self._end_data(block)
        else:
            self._buf += data
        self._process()
        if self._data is not None or self._buf:
            ack_now(self._sock)  # as above: a command or its data is incomplete

    def _process(self) -> None:
        """Answer every complete command in the buffer that can be answered now; flush."""
        while not self._closing:
            if self._data is not None:
                if not self._buf and self._data.waiting:
                    break
                self._last = self._loop.time()
                block = self._data.feed(self._buf)
                self._buf.clear()
                if block is None:
                    break
                self._end_data(block)
                continue
            if self._task is not None and self._line_waiter is None:
                break  # a command is running; the ones behind it wait
            line = self._next_line()
            if line is None:
                break
            if self._line_waiter is not None:  # a reply to an AUTH challenge
                waiter, self._line_waiter = self._line_waiter, None
                self._last = self._loop.time()
                if not waiter.done():
                    waiter.set_result(line)
                continue
            self._command(line)
        self._flush()
        self._update_reading()

    def _next_line(self) -> bytes | None:
        """The next command line without its CRLF, :data:`_OVERLONG`, or None: more bytes needed."""
        buf = self._buf
        end = buf.find(_CRLF)
        if self._discarding:
            if end < 0:
                del buf[:-1]  # the last byte may be the CR of the CRLF
                return None
            del buf[: end + 2]
            self._discarding = False
            return _OVERLONG
        if end < 0:
            if len(buf) > self._listener.line_limit + 1:
                self._discarding = True
                del buf[:-1]
            return None
        if end > self._listener.line_limit:
            del buf[: end + 2]
            return _OVERLONG
        line = bytes(buf[:end])
        del buf[: end + 2]
        return line

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closing:
            return
        want = not self._write_paused and not (self._task is not None and len(self._buf) > BACKLOG)
        if want != self._reading:
            self._reading = want
            if want:
                transport.resume_reading()
            else:
                transport.pause_reading()

    # -- bytes out -------------------------------------------------------------------

    def _push(self, status: str | bytes) -> None:
        """Queue one reply line; the 5xx over ``max_bad_commands`` becomes the closing 421."""
        if self._closing:
            return  # after a closing reply nothing more goes out, even for pipelined commands
        line = status.encode("utf-8", "surrogateescape") if isinstance(status, str) else status
        if line[:1] == b"5" and line[:3] not in _NOT_BAD:
            self._bad += 1
            if self._bad > self._listener.max_bad_commands:
                self._close(TOO_MANY_ERRORS)
                return
        self._out.append(line + _CRLF)

    def _flush(self) -> None:
        if self._out and not self._closing and self._transport is not None:
            self._transport.write(b"".join(self._out))
        self._out.clear()

    def _close(self, last_words: bytes = b"") -> None:
        if self._closing:
            return
        pending = b"".join(self._out) + last_words
        self._out.clear()
        self._closing = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            if pending:
                transport.write(pending)
            transport.close()

    # -- timers ----------------------------------------------------------------------

    def _idle_check(self) -> None:
        self._idle = None
        if self._closing:
            return
        now = self._loop.time()
        if self._task is not None and self._line_waiter is None:
            due = now + self._listener.timeout  # the server is working, not the peer silent
        else:
            due = self._last + self._listener.timeout
            if due - now <= 0.001:
                # RFC 5321 4.2 wants a reason; nothing host-specific goes in it.
                self._close(IDLE_TIMEOUT)
                return
        limit, reason = self._session_limit()
        if limit - now <= 0.001:
            log.info("closing a session: %s", reason[10:].decode().rstrip())
            self._close(reason)
            return
        self._idle = self._loop.call_at(min(due, limit), self._idle_check)

    def _session_limit(self) -> tuple[float, bytes]:
        """When this session must end, and the reply that ends it.

        Never in the middle of a DATA transfer (it has its own deadline) or of
        the server's own work: the limits are checked between commands.
        """
        listener = self._listener
        if self._data is not None or (self._task is not None and self._line_waiter is None):
            return float("inf"), b""
        limit, reason = self._began + listener.max_session_time, SESSION_TOO_LONG
        progress = self._progress + listener.transaction_timeout
        if progress < limit:
            limit, reason = progress, NO_PROGRESS
        return limit, reason

    def _data_timed_out(self) -> None:
        self._data_deadline = None
        log.info("closing a session whose DATA exceeded %g s", self._listener.data_timeout)
        self._close(DATA_TIMEOUT)

    # -- running commands ------------------------------------------------------------

    def _command(self, line: bytes) -> None:
        """Parse one command line and start its command (aiosmtpd's checks, in its order)."""
        self._commands += 1
        if self._commands > self._listener.max_commands:
            self._close(TOO_MANY_COMMANDS)
            return
        limit, reason = self._session_limit()
        if self._loop.time() >= limit:
            self._close(reason)
            return
        if line == _OVERLONG:
            self._push("500 Command line too long")
            return
        if b"\r" in line or b"\n" in line:
            self._push(BARE_LINE_END)
            return
        if not line:
            self._push("500 Error: bad syntax")
            return
        verb, _, arg_bytes = line.partition(b" ")
        try:
            command = verb.upper().decode("ascii")
        except UnicodeDecodeError:
            self._push("500 Error: bad syntax")
            return
        listener = self._listener
        arg: str | None = None
        if arg_bytes:
            arg_bytes = arg_bytes.strip()
            if listener.smtputf8:
                # surrogateescape: the handler can re-encode the very bytes received.
                arg = arg_bytes.decode("utf-8", "surrogateescape")
            else:
                try:
                    arg = arg_bytes.decode("ascii")
                except UnicodeDecodeError:
                    self._push("500 Error: strict ASCII mode")
                    return
        assert self._session is not None
        extended = self._session.extended_smtp
        limit = listener.mail_limit if extended and command == "MAIL" else COMMAND_SIZE_LIMIT
        if len(line) > limit:
            self._push("500 Command line too long")
            return
        if listener.require_starttls and not self._tls and command not in _BEFORE_STARTTLS:
            self._push("530 Must issue a STARTTLS command first")
            return
        method = _COMMANDS.get(command)
        if method is None:
            self._bogus -= 1
            if self._bogus < 1:
                self._push("502 5.5.1 Too many unrecognized commands, goodbye.")
                self._close()
                return
            self._push(f'500 Error: command "{command}" not recognized')
            return
        self._last = self._loop.time()
        self._start(method(self, arg))

    def _start(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` as the session's task; one that finished at once is answered here."""
        task = _command_task(self._loop, coro)
        if task.done():  # eager (Python 3.12+): no await suspended, no loop round trip
            self._settle(task)
            return
        self._task = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._task = None
        if self._settle(task) and not self._closing and self._task is None:
            self._last = self._loop.time()
            self._process()

    def _settle(self, task: asyncio.Task[None]) -> bool:
        """Answer what a finished command raised; False when the session is over."""
        if task.cancelled():
            return False
        error = task.exception()
        if isinstance(error, Exception):
            self._start(self._report(error))
        elif error is not None:  # not an Exception: nothing to answer, end the session
            log.error("an SMTP session ended on %s", type(error).__name__)
            self._close()
            return False
        return True

    async def _report(self, error: Exception) -> None:
        """The error boundary: the handler's ``handle_exception`` reply, never internals."""
        hook = self._listener.handle_exception
        status: Any = None
        if hook is not None:
            try:
                status = await hook(error)
            except Exception as inner:
                log.error("handle_exception failed: %s", type(inner).__name__)
        else:
            log.error("internal error in an SMTP session: %s", type(error).__name__)
            log.debug("internal error detail", exc_info=error)
        self._push(status if isinstance(status, str) and status else SERVER_ERROR)

    async def _hook(self, name: str, *args: Any) -> Any:
        hook = self._listener.hooks[name]
        return await hook(self, self._session, self._envelope, *args)

    def _read_line(self) -> asyncio.Future[bytes]:
        """The next line the peer sends (an AUTH response); :data:`_OVERLONG` if too long."""
        self._flush()  # the challenge
        waiter: asyncio.Future[bytes] = self._loop.create_future()
        line = self._next_line()
        if line is None:
            self._line_waiter = waiter
        else:
            waiter.set_result(line)
        return waiter

    # -- DATA --------------------------------------------------------------------------

    def _end_data(self, block: DataBlock) -> None:
        self._data = None
        self._progress += self._loop.time() - self._data_began  # the transfer is not idling
        if self._data_deadline is not None:
            self._data_deadline.cancel()  # storing the message is not the peer's time
            self._data_deadline = None
        self._buf += block.rest  # commands pipelined behind the end of DATA
        refusal = self._chunk_refusal
        if refusal is not None:  # a refused BDAT's chunk, now read and dropped
            self._chunk_refusal = None
            self._push(refusal)
            return
        if self._chunks is not None:
            self._end_chunk(block)
            return
        if block.outcome is not DataOutcome.OK:
            self._new_envelope()
            self._push(block.outcome.value)
            return
        self._envelope.content = block.content
        self._envelope.original_content = block.content
        self._start(self._deliver())

    def _new_envelope(self) -> None:
        self._envelope = Envelope()
        self._chunks = None
        self._chunk_bytes = 0

    def _end_chunk(self, block: DataBlock) -> None:
        """One BDAT chunk is in: 250 for it, or, with LAST, the message to the handler."""
        assert self._chunks is not None
        self._chunks.append(block.content)
        self._chunk_bytes += len(block.content)
        if not self._chunk_last:
            self._push(f"250 2.0.0 {len(block.content)} octets received")
            return
        content = b"".join(self._chunks)
        self._chunks = None
        if not content:
            self._new_envelope()
            self._push(EMPTY_MESSAGE)
            return
        self._envelope.content = content
        self._envelope.original_content = content
        self._start(self._deliver())

    async def _deliver(self) -> None:
        try:
            status = await self._hook("DATA") if "DATA" in self._listener.hooks else "250 OK"
        finally:
            self._new_envelope()
        if isinstance(status, str) and status.startswith("2"):
            self._progress = self._loop.time()  # a message accepted: the clock starts again
        self._push(status)
        self._flush()  # now, not a loop turn later when the task's callback runs

    # -- the commands (aiosmtpd's replies) --------------------------------------------

    def _need_helo(self, verb: str = "HELO") -> bool:
        assert self._session is not None
        if not self._session.host_name:
            self._push(f"503 Error: send {verb} first")
            return True
        return False

    def _need_auth(self) -> bool:
        assert self._session is not None
        if self._listener.auth_required and not self._session.authenticated:
            self._push("530 5.7.0 Authentication required")
            return True
        return False

    async def smtp_HELO(self, arg: str | None) -> None:
        if not arg:
            self._push("501 Syntax: HELO hostname")
            return
        session = self._session
        assert session is not None
        self._new_envelope()
        session.extended_smtp = False
        if "HELO" in self._listener.hooks:
            status = await self._hook("HELO", arg)
        else:
            session.host_name = arg
            status = f"250 {self._listener.hostname}"
        self._push(status)

    async def smtp_EHLO(self, arg: str | None) -> None:
        if not arg:
            self._push("501 Syntax: EHLO hostname")
            return
        session = self._session
        assert session is not None
        listener = self._listener
        self._new_envelope()
        session.extended_smtp = True
        lines = [*(listener.ehlo_tls if self._tls else listener.ehlo_plain), "250 HELP"]
        if "EHLO" in listener.hooks:
            lines = await self._hook("EHLO", arg, lines)
        else:
            session.host_name = arg
        for reply in lines:
            self._push(reply)

    async def smtp_NOOP(self, arg: str | None) -> None:
        status = await self._hook("NOOP", arg) if "NOOP" in self._listener.hooks else "250 OK"
        self._push(status)

    async def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            self._push("501 Syntax: RSET")
            return
        self._new_envelope()
        status = await self._hook("RSET") if "RSET" in self._listener.hooks else "250 OK"
        self._push(status)

    async def smtp_QUIT(self, arg: str | None) -> None:
        if arg:
            self._push("501 Syntax: QUIT")
            return
        status = await self._hook("QUIT") if "QUIT" in self._listener.hooks else "221 Bye"
        self._push(status)
        self._close()

    async def smtp_HELP(self, arg: str | None) -> None:
        if self._need_auth():
            return
        listener = self._listener
        code = 250
        if arg:
            verb = arg.upper()
            if verb in listener.help_verbs:
                text = _SYNTAX[verb]
                assert self._session is not None
                if self._session.extended_smtp and verb in ("MAIL", "RCPT"):
                    text += _PARAMETERS
                self._push("250 Syntax: " + text)
                return
            code = 501
        self._push(f"{code} Supported commands: {' '.join(listener.help_verbs)}")

    async def smtp_VRFY(self, arg: str | None) -> None:
        if self._need_auth():
            return
        if not arg:
            self._push("501 Syntax: VRFY <address>")
            return
        address, _ = _address(arg)
        if address is None:
            self._push("502 Could not VRFY " + arg)
            return
        if "VRFY" in self._listener.hooks:
            status = await self._hook("VRFY", address)
        else:
            status = "252 Cannot VRFY user, but will accept message and attempt delivery"
        self._push(status)

    async def smtp_EXPN(self, arg: str | None) -> None:
        self._push("502 EXPN not implemented")

    def _path(self, keyword: str, arg: str | None, syntax: str) -> tuple[str, str] | None:
        """The address after ``FROM:``/``TO:`` and the parameters' text; None once answered."""
        session = self._session
        assert session is not None
        arg = _after_keyword(keyword, arg)
        if arg is None:
            self._push(syntax)
            return None
        address, rest = _address(arg)
        if address is None or rest is None:
            self._push("553 5.1.3 Error: malformed address")
            return None
        if not address or (rest and not session.extended_smtp):
            self._push(syntax)
            return None
        return address, rest

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._need_helo() or self._need_auth():
            return
        session, envelope, listener = self._session, self._envelope, self._listener
        assert session is not None
        syntax = "501 Syntax: MAIL FROM: <address>"
        if session.extended_smtp:
            syntax += _PARAMETERS
        path = self._path("FROM:", arg, syntax)
        if path is None:
            return
        address, rest = path
        if envelope.mail_from:
            self._push("503 Error: nested MAIL command")
            return
        options = rest.upper().split()
        params = _parameters(options)
        if params is None:
            self._push(syntax)
            return
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            self._push("501 Error: BODY can only be one of 7BIT, 8BITMIME")
            return
        smtputf8 = params.pop("SMTPUTF8", False)
        if not isinstance(smtputf8, bool):
            self._push("501 Error: SMTPUTF8 takes no arguments")
            return
        if smtputf8 and not listener.smtputf8:
            self._push("501 Error: SMTPUTF8 disabled")
            return
        envelope.smtp_utf8 = smtputf8
        size = params.pop("SIZE", None)
        if size:
            if isinstance(size, bool) or not (size.isascii() and size.isdigit()):
                self._push(syntax)
                return
            if listener.data_size_limit and int(size) > listener.data_size_limit:
                self._push("552 Error: message size exceeds fixed maximum message size")
                return
        if params:
            self._push("555 MAIL FROM parameters not recognized or not implemented")
            return
        if "MAIL" in listener.hooks:
            status = await self._hook("MAIL", address, options)
        else:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            status = "250 OK"
        self._push(status)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if self._need_helo() or self._need_auth():
            return
        session, envelope = self._session, self._envelope
        assert session is not None
        if not envelope.mail_from:
            self._push("503 Error: need MAIL command")
            return
        syntax = "501 Syntax: RCPT TO: <address>"
        if session.extended_smtp:
            syntax += _PARAMETERS
        path = self._path("TO:", arg, syntax)
        if path is None:
            return
        address, rest = path
        options = rest.upper().split()
        params = _parameters(options)
        if params is None:
            self._push(syntax)
            return
        if params:
            self._push("555 RCPT TO parameters not recognized or not implemented")
            return
        if "RCPT" in self._listener.hooks:
            status = await self._hook("RCPT", address, options)
        else:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            status = "250 OK"
        self._push(status)

    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030: ``BDAT <size> [LAST]``, exactly ``size`` octets follow, no dot-stuffing.

        Once the size is known the chunk is read whatever happens: a refused
        one is read and dropped, then answered, so its bytes are never taken
        for commands and never held. The size limit is checked against the
        declared size, before a byte of the chunk is kept.
        """
        if not self._listener.chunking:
            self._push('500 Error: command "BDAT" not recognized')
            return
        words = (arg or "").split()
        if not words or not words[0].isdigit() or len(words[0]) > 10:
            self._push(BDAT_SYNTAX)  # no size: nothing to read
            return
        size = int(words[0])
        refusal = self._chunk_refused(words, size)
        if refusal is None:
            if self._chunks is None:
                self._chunks = []
            self._chunk_last = len(words) == 2
            self._data = ChunkReader(size)
        else:
            self._chunk_refusal = refusal
            self._data = ChunkReader(size, keep=False)
        listener = self._listener
        self._data_began = self._loop.time()
        self._data_deadline = self._loop.call_later(listener.data_timeout, self._data_timed_out)
        # As for DATA, _process feeds what is buffered behind this line to the reader.

    def _chunk_refused(self, words: list[str], size: int) -> str | None:
        """Why this BDAT is refused (the reply, sent after its chunk), or None."""
        session = self._session
        assert session is not None
        if len(words) > 2 or (len(words) == 2 and words[1].upper() != "LAST"):
            return BDAT_SYNTAX
        if not session.host_name:
            return "503 Error: send HELO first"
        if self._listener.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if not self._envelope.rcpt_tos:
            return "503 5.5.1 Error: need RCPT command"
        limit = self._listener.data_size_limit
        if limit and self._chunk_bytes + size > limit:
            self._new_envelope()  # the transaction ends with its 552
            return DataOutcome.TOO_MUCH.value
        return None

    async def smtp_DATA(self, arg: str | None) -> None:
        if self._need_helo() or self._need_auth():
            return
        if self._chunks is not None:
            self._push("503 5.5.1 Error: DATA after BDAT")
            return
        if not self._envelope.rcpt_tos:
            self._push("503 Error: need RCPT command")
            return
        if arg:
            self._push("501 Syntax: DATA")
            return
        self._push("354 End data with <CR><LF>.<CR><LF>")
        listener = self._listener
        self._data = DataReader(line_limit=listener.line_limit, size_limit=listener.data_size_limit)
        self._data_began = self._loop.time()
        self._data_deadline = self._loop.call_later(listener.data_timeout, self._data_timed_out)
        # The bytes already buffered behind this line are the data's beginning:
        # _process feeds them to the parser when this command returns.

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if arg:
            self._push("501 Syntax: STARTTLS")
            return
        context = self._listener.tls_context
        if context is None:
            self._push("454 TLS not available")
            return
        if self._tls:
            self._push("554 5.5.1 Error: TLS already active")
            return
        self._push("220 Ready to start TLS")
        self._flush()
        self._buf.clear()  # plaintext pipelined behind STARTTLS must not count (RFC 3207 4.2)
        self._discarding = False
        transport = self._transport
        assert transport is not None
        try:
            tls = await self._loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._listener.timeout,  # silence, as between commands
            )
        except OSError as error:  # SSLError, a reset, the handshake timeout
            log.info("STARTTLS handshake failed: %s", type(error).__name__)
            self._close()
            return
        if tls is None or self._closing:
            return
        assert isinstance(tls, asyncio.Transport)
        # A new session (RFC 3207 4.2): the client says EHLO again.
        # (What arrived meanwhile came through TLS: start_tls took the stream at once.)
        self._transport = tls
        self._tls = True
        old = self._session
        assert old is not None
        self._session = Session(self._loop, old.peer)
        self._session.ssl = {
            key: tls.get_extra_info(key)
            for key in ("sslcontext", "peercert", "cipher", "compression", "ssl_object")
        }
        self._new_envelope()

    async def smtp_AUTH(self, arg: str | None) -> None:
        if self._need_helo("EHLO"):
            return
        session, listener = self._session, self._listener
        assert session is not None
        if not session.extended_smtp:
            self._push("500 Error: command 'AUTH' not recognized")
            return
        if listener.auth_require_tls and not self._tls:
            self._push("538 5.7.11 Encryption required for requested authentication mechanism")
            return
        if session.authenticated:
            self._push("503 Already authenticated")
            return
        if not arg:
            self._push("501 Not enough value")
            return
        args = arg.split()
        if len(args) > 2:
            self._push("501 Too many values")
            return
        mechanism = args[0]
        if mechanism not in listener.auth_mechanisms:
            self._push("504 5.5.4 Unrecognized authentication type")
            return
        if mechanism == "PLAIN":
            credentials = await self._auth_plain(args[1:])
        else:
            credentials = await self._auth_login(args[1:])
        if credentials is None:
            return  # the reason has been answered
        assert listener.authenticator is not None
        result = listener.authenticator(self, session, self._envelope, mechanism, credentials)
        if asyncio.iscoroutine(result):
            result = await result
        if not isinstance(result, AuthResult):
            raise TypeError("an authenticator must return an AuthResult")
        if result.success:
            session.authenticated = True
            session.auth_data = result.auth_data
            self._push(result.message or AUTH_OK)
        elif not result.handled:
            self._push(result.message or AUTH_INVALID)

    async def _auth_plain(self, initial: list[str]) -> LoginPassword | None:
        if initial:
            blob = self._decode_initial(initial[0])
        else:
            blob = await self._challenge(b"")
        if blob is None:
            return None
        try:
            _, login, password = blob.split(b"\x00")  # authzid, authcid, password (RFC 4616)
        except ValueError:
            self._push("501 5.5.2 Can't split auth value")
            return None
        return LoginPassword(login, password)

    async def _auth_login(self, initial: list[str]) -> LoginPassword | None:
        if initial:
            login = self._decode_initial(initial[0])
        else:
            login = await self._challenge(b"User Name\x00")
        if login is None:
            return None
        password = await self._challenge(b"Password\x00")
        if password is None:
            return None
        return LoginPassword(login, password)

    def _decode_initial(self, text: str) -> bytes | None:
        try:
            return base64.b64decode(text.encode(), validate=True)
        except ValueError:  # binascii.Error, or surrogates from non-UTF-8 bytes
            self._push(BAD_BASE64)
            return None

    async def _challenge(self, challenge: bytes) -> bytes | None:
        """Send a ``334`` challenge; the decoded response, or None when refused (answered)."""
        self._push(b"334 " + base64.b64encode(challenge))
        line = await self._read_line()
        blob = b"" if line == _OVERLONG else line.strip()
        if blob == b"*":
            self._push("501 5.7.0 Auth aborted")
            return None
        try:
            if line == _OVERLONG:
                raise ValueError("overlong")
            return base64.b64decode(blob, validate=True)
        except ValueError:
            self._push(BAD_BASE64)
            return None


_COMMANDS: dict[str, Callable[[SMTPProtocol, str | None], Coroutine[Any, Any, None]]] = {
    name[5:]: getattr(SMTPProtocol, name) for name in dir(SMTPProtocol) if name.startswith("smtp_")
}


def _command_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None]
) -> asyncio.Task[None]:
    """A task for one command, started eagerly where asyncio can (Python 3.12+).

    An eager task runs its first step right here, inside the protocol
    callback: a command whose hooks never suspend (EHLO, MAIL, RCPT, AUTH
    PLAIN with its initial response, for the box's handlers) is done when
    this returns. On 3.11 the task starts on the loop's next turn.
    """
    if sys.version_info >= (3, 12):
        return asyncio.eager_task_factory(loop, coro)
    return loop.create_task(coro)


def _after_keyword(keyword: str, arg: str | None) -> str | None:
    """``arg`` without its leading ``FROM:``/``TO:`` (any case), or None when it lacks it."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    return arg[len(keyword) :].strip()


# RFC 5321 4.1.2 paths. Only the structure is checked here; the characters are the
# handlers' to judge (control bytes, non-ASCII without SMTPUTF8), with their own replies.
_ATOM = r'[^ \t"(),.:;<>@\[\\\]]+'
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED_STRING = r'"(?:[^"\\]|\\.)*"'
_DOMAIN = rf"(?:{_DOT_STRING}|\[[^\[\\\]]*\])"  # a name, or an address literal
_LOCAL_PART = rf"(?:{_DOT_STRING}|{_QUOTED_STRING})"
_ROUTE = rf"@{_DOMAIN}(?:,@{_DOMAIN})*:"  # a source route: accepted and ignored (RFC 5321 C)
_ANGLE_PATH = re.compile(rf"[ \t]*<[ \t]*(?:{_ROUTE})?({_LOCAL_PART}(?:@{_DOMAIN})?)?[ \t]*>")
_BARE_PATH = re.compile(rf"[ \t]*({_LOCAL_PART}(?:@{_DOMAIN})?)(?=[ \t]|$)")


def _address(arg: str) -> tuple[str | None, str | None]:
    """(address, the parameters after it) of a MAIL/RCPT argument; (None, None) if malformed.

    RFC 5321's ``Path``: ``<local@domain>`` (the null path ``<>`` is returned
    as ``"<>"``, a local part alone as itself, for ``<Postmaster>``), a source
    route before it ignored, blanks inside the brackets tolerated, and
    aiosmtpd's bare ``local@domain``. Unlike aiosmtpd, which parsed paths as
    RFC 5322 addresses, comments and obsolete forms (``a..b``) are refused.
    """
    if not arg:
        return "", ""
    match = _ANGLE_PATH.match(arg) or _BARE_PATH.match(arg)
    if match is None:
        return None, None
    address = match.group(1)
    return (address if address is not None else "<>"), arg[match.end() :].lstrip()


def _parameters(options: list[str]) -> dict[str, str | bool] | None:
    """ESMTP parameters as a dict (``KEY`` alone: True); None if one is malformed (RFC 1869)."""
    result: dict[str, str | bool] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not key.isalnum() or (eq and not value):
            return None
        result[key] = value if eq else True
    return result


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
