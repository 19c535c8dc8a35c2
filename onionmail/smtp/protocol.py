"""The SMTP engine's core: one ``asyncio.BufferedProtocol`` per connection.

It keeps aiosmtpd's handler contract (the same ``handle_*`` hooks, sessions
and envelopes, :mod:`onionmail.smtp.session`) and replies, and does the
work where the bytes arrive: command lines are cut out of one buffer per
listener, pipelined commands answered in one write, and a command whose
hooks do not suspend is answered without a loop round trip. A command line
ends at CRLF only; DATA and BDAT are parsed by :mod:`onionmail.smtp.data`.
Why the box has its own engine, and where it differs from aiosmtpd on
purpose: docs/design.md, "The SMTP engine".
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from onionmail.smtp.commands import Commands
from onionmail.smtp.data import ChunkReader, DataBlock, DataOutcome, DataReader
from onionmail.smtp.quickack import ack_now
from onionmail.smtp.replies import (
    BACKLOG,
    BARE_LINE_END,
    BEFORE_STARTTLS,
    BOGUS_LIMIT,
    COMMAND_SIZE_LIMIT,
    CRLF,
    DATA_TIMEOUT,
    EMPTY_MESSAGE,
    IDLE_TIMEOUT,
    NO_PROGRESS,
    NOT_BAD,
    OVERLONG,
    SERVER_ERROR,
    SESSION_TOO_LONG,
    SLOT_NEEDED,
    TOO_MANY_COMMANDS,
    TOO_MANY_CONNECTIONS,
    TOO_MANY_ERRORS,
)
from onionmail.smtp.session import Envelope, Listener, Session, Slot

log = logging.getLogger(__name__)


class SMTPProtocol(Commands):
    """One SMTP session: a state machine fed by the bytes as they arrive."""

    __slots__ = (
        "_listener",
        "_loop",
        "_sock",
        "_envelope",
        "_buf",
        "_task",
        "_line_waiter",
        "_out",
        "_closing",
        "_bad",
        "_bogus",
        "_last",
        "_began",
        "_progress",
        "_commands",
        "_idle",
        "_holding",
        "_reading",
        "_write_paused",
        "_chunk_bytes",
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
            transport.write(self._listener.banner[:-2] + b" " + words.encode("ascii") + CRLF)

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
        """The next command line without its CRLF, :data:`OVERLONG`, or None: more bytes needed."""
        buf = self._buf
        end = buf.find(CRLF)
        if self._discarding:
            if end < 0:
                del buf[:-1]  # the last byte may be the CR of the CRLF
                return None
            del buf[: end + 2]
            self._discarding = False
            return OVERLONG
        if end < 0:
            if len(buf) > self._listener.line_limit + 1:
                self._discarding = True
                del buf[:-1]
            return None
        if end > self._listener.line_limit:
            del buf[: end + 2]
            return OVERLONG
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
        if line[:1] == b"5" and line[:3] not in NOT_BAD:
            self._bad += 1
            if self._bad > self._listener.max_bad_commands:
                self._close(TOO_MANY_ERRORS)
                return
        self._out.append(line + CRLF)

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
        if line == OVERLONG:
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
        if listener.require_starttls and not self._tls and command not in BEFORE_STARTTLS:
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
        previous = self._task
        if previous is not None and previous.done():
            # A BDAT or DATA command's task is done but its callback has not run yet,
            # and the data it announced has all arrived (its end starts the message's
            # task): this one is the session's task now. Left to run, that callback
            # would forget the new task, and a command pipelined behind the data
            # would be run while the message is still being stored.
            previous.remove_done_callback(self._task_done)
            self._task = None
            if not self._settle(previous):
                coro.close()
                return
        task = _command_task(self._loop, coro)
        if task.done():  # eager (Python 3.12+): no await suspended, no loop round trip
            self._settle(task)
            return
        self._task = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task is not self._task:
            return  # superseded and settled in _start
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
        """The next line the peer sends (an AUTH response); :data:`OVERLONG` if too long."""
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
