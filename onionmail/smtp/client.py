"""An SMTP client session with a peer over a tor stream, pipelined and kept for the next message.

Over an onion circuit a round trip costs tens of milliseconds (six relays
each way), far more than any work at either end, so the delivery time is the
number of round trips. A fresh session with one command per round trip
(aiosmtplib's way: greeting, EHLO, MAIL, RCPT, DATA, the data, QUIT) took
about seven; the raw reference (open a stream, send the bytes, read them
back) takes two. Here:

* a session stays open after its message (the delivery agent keeps it for
  :data:`onionmail.smtp.peer_pool.KEEP_IDLE` seconds), so the next message to the
  same peer skips the stream set-up, the greeting and EHLO;
* with a peer that announces ``PIPELINING`` (RFC 2920), MAIL, every RCPT and
  DATA go in one write and their replies are read together: one round trip
  for the envelope, one for the data;
* with a peer that also announces ``CHUNKING`` (RFC 3030), or an onionmail
  box, the whole transaction is one write, and the next transaction may be
  written before this one's replies are back (:attr:`PeerSession.pipelines`):
  a session carries several messages per round trip, so the rate of a
  stream of messages to one peer is not one message per round trip and
  session.

aiosmtplib (the project's SMTP client elsewhere) reads one reply per command
it sent and drops replies that arrive together, so it cannot pipeline; this
module is the small client that can. It speaks only what the delivery agent
needs: greeting, EHLO, MAIL/RCPT/DATA (pipelined or not), RSET, QUIT.

Every read has a timeout (``timeout``, the ``[delivery] smtp_timeout``
setting). Replies longer than :data:`MAX_REPLY_LINES` lines or
:data:`MAX_LINE` octets per line are a protocol error, so a hostile peer
cannot make the box buffer without bound.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from onionmail.core.errors import DeliveryError, PermanentDeliveryError
from onionmail.seal.envelope import EXPRESS, SEAL_KEYWORD
from onionmail.seal.handshake import SEAL2_KEYWORD
from onionmail.smtp.quickack import ack_now

MAX_LINE = 2048
MAX_REPLY_LINES = 100
CHUNK_BYTES = 2048
"""BDAT chunk size at the start of a message (:func:`bdat_chunks`): about four tor cells."""
SPLIT_BYTES = 16 * 1024
"""How much of a message goes in :data:`CHUNK_BYTES` chunks; the rest is one chunk."""

_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ProtocolFailure(DeliveryError):
    """The session broke (connection lost, timeout, garbage): nothing was accepted by it."""


class PeerSilent(ProtocolFailure):
    """The peer did not answer within the session's timeout (see :attr:`PeerSession.silent`)."""


def sort_recipients(
    recipients: tuple[str, ...], replies: list[Reply]
) -> tuple[list[str], list[str], Reply | None]:
    """Accepted (2xx) and refused (5xx) recipients, and the first other reply (retry), if any."""
    accepted: list[str] = []
    refused: list[str] = []
    for rcpt, reply in zip(recipients, replies, strict=True):
        if reply.positive:
            accepted.append(rcpt)
        elif 500 <= reply.code < 600:
            refused.append(rcpt)
        else:
            return accepted, refused, reply
    return accepted, refused, None


def every_recipient_refused(replies: list[Reply]) -> PermanentDeliveryError:
    """The failure when the peer refused every recipient, in the peer's own words (its
    first refusal: the report's status and reason come from it)."""
    return PermanentDeliveryError(f"the peer refused every recipient: {replies[0]}")


def failure_for(reply: Reply, what: str) -> DeliveryError:
    """The delivery error for a negative reply: 5xx permanent, anything else temporary.

    ``421`` (the peer is closing the session, e.g. a kept session it timed out)
    is a :class:`ProtocolFailure`: the session is gone, not the message refused.
    """
    text = f"peer answered {reply} to {what}"
    if reply.code == 421:
        return ProtocolFailure(text)
    if 500 <= reply.code < 600:
        return PermanentDeliveryError(text)
    return DeliveryError(text)


def chunk_body(message: bytes) -> bytes:
    """``message`` as a BDAT chunk carries it: CRLF line ends, no dot-stuffing, no terminator.

    The same bytes the receiver stores from :func:`data_block` after undoing the
    stuffing, so DATA and BDAT deliver one message identically.
    """
    body = _LINE_ENDS.sub(b"\r\n", message)
    return body if body.endswith(b"\r\n") else body + b"\r\n"


def bdat_chunks(body: bytes) -> list[bytes]:
    """``body`` (from :func:`chunk_body`) as BDAT commands with their data, the last one ``LAST``.

    The first :data:`SPLIT_BYTES` go in chunks of :data:`CHUNK_BYTES`, so the
    peer answers every few cells as they arrive (``250 ... octets received``).
    Over tor this is not overhead but speed: tor relays write without
    ``TCP_NODELAY``, so the tail of a burst of cells waits at a relay for the
    ACK of the segment before it, which the next relay, with nothing to send
    back, delays by 40 ms. A reply travelling back carries that ACK; with one
    ``BDAT n LAST`` there is none until the whole message is in (measured with
    ``bench/onion.py``: a 5 KB message's last cells arrived ~45 ms after the
    others on every new circuit). Past ``SPLIT_BYTES`` the rest goes in one
    chunk: a long transfer has tor's own SENDMEs flowing back.
    """
    chunks = []
    start = 0
    while len(body) - start > CHUNK_BYTES and start < SPLIT_BYTES:
        piece = body[start : start + CHUNK_BYTES]
        chunks.append(b"BDAT %d\r\n" % len(piece) + piece)
        start += CHUNK_BYTES
    chunks.append(b"BDAT %d LAST\r\n" % (len(body) - start) + body[start:])
    return chunks


def data_block(message: bytes) -> bytes:
    """``message`` as the DATA phase sends it: CRLF line ends, dot-stuffed, terminated."""
    body = _LINE_ENDS.sub(b"\r\n", message)
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return _LEADING_DOT.sub(b"..", body) + b".\r\n"


class PeerSession:
    """One open SMTP session; use :meth:`open`, then :meth:`send` once per message."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        timeout: float,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._sock = writer.get_extra_info("socket")
        self.timeout = timeout
        self.extensions: dict[str, str] = {}
        """EHLO keywords (upper case) and their parameters."""
        self.last_used = time.monotonic()
        self.messages = 0
        self._deferred_ehlo: str | None = None
        """EHLO name still to send, with the first transaction (a peer that said EXPRESS)."""
        self.rcpt_replies: list[Reply] = []
        """The replies to the last transaction's RCPTs."""
        self.data_sent = False
        """Whether the current transaction's data went out (a failure after it
        may still have delivered: never retried on another session at once)."""
        self.pending = 0
        """Transactions written whose replies are not all read (more than one: pipelined)."""
        self.silent = False
        """Whether the peer stopped answering (no reply within ``timeout``): unlike a closed
        connection, nothing says its end is still there."""
        self._express = False
        self._turn: asyncio.Future[None] | None = None
        """Done when the last transaction written has read its replies: the next one's turn."""
        self._broken: str | None = None

    @classmethod
    async def open(cls, sock: socket.socket, *, ehlo_name: str, timeout: float) -> PeerSession:
        """Take over a connected socket, read the greeting and say EHLO."""
        # tor's SOCKS reply is in; unacknowledged, it would hold the greeting
        # back for 40 ms (onionmail.smtp.quickack.ack_now).
        ack_now(sock)
        try:
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_LINE)
        except OSError as exc:
            sock.close()
            raise ProtocolFailure(f"SMTP with the peer failed: {exc}") from None
        session = cls(reader, writer, timeout=timeout)
        try:
            greeting = await session.reply()
            if greeting.code != 220:
                raise failure_for(greeting, "the connection")
            words = greeting.text.split()
            if len(words) >= 6 and words[-4] == SEAL_KEYWORD and words[-1] == EXPRESS:
                # An onionmail box: its challenge is here already, and it takes
                # EHLO pipelined with the first transaction (send()).
                session.extensions[SEAL_KEYWORD] = f"{words[-3]} {words[-2]}"
                if len(words) >= 8 and words[-6] == SEAL2_KEYWORD:
                    # and the first message of the handshake seal (onionmail.seal.handshake)
                    session.extensions[SEAL2_KEYWORD] = words[-5]
                session._deferred_ehlo = ehlo_name
                session._express = True
                return session
            session._write(f"EHLO {ehlo_name}\r\n".encode())
            session._read_ehlo(await session.reply())
        except BaseException:
            session.close()
            raise
        return session

    def _read_ehlo(self, ehlo: Reply) -> None:
        if ehlo.code != 250:
            raise failure_for(ehlo, "EHLO")
        for line in ehlo.text.splitlines()[1:]:
            keyword, _, params = line.strip().partition(" ")
            self.extensions[keyword.upper()] = params

    @property
    def usable(self) -> bool:
        return self._broken is None and not self._writer.is_closing() and not self._reader.at_eof()

    @property
    def pipelines(self) -> bool:
        """Whether a transaction may be written while earlier ones wait for their replies:
        each is one write (BDAT), so the replies come back in the order written."""
        return self._express or (self.supports("PIPELINING") and self.supports("CHUNKING"))

    def supports(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    async def send(
        self,
        mail_from: str,
        recipients: tuple[str, ...],
        payload_for: Callable[[tuple[str, ...]], Awaitable[bytes]],
        *,
        mail_options: tuple[str, ...] = (),
        prepared: bytes | None = None,
        rcpt_options: Mapping[str, tuple[str, ...]] | None = None,
    ) -> list[str]:
        """One transaction; returns the recipients the peer refused (5xx).

        ``payload_for(accepted)`` gives the message for the recipients the
        peer accepted; ``prepared`` is that payload made in advance for all of
        them (used when all were accepted). Raises :class:`PermanentDeliveryError`
        (5xx for the sender, the data, or every recipient) or
        :class:`DeliveryError` (4xx, a broken session).
        """
        self.data_sent = False
        mail = f"MAIL FROM:<{mail_from}>{''.join(' ' + o for o in mail_options)}\r\n"
        extra = rcpt_options or {}
        rcpts = [
            f"RCPT TO:<{r}>{''.join(' ' + o for o in extra.get(r, ()))}\r\n" for r in recipients
        ]
        if self.pipelines:
            if prepared is None:
                prepared = await payload_for(recipients)
            refused, again = await self._send_in_one_write(mail, rcpts, recipients, prepared)
            if again:
                # The data named every recipient and the peer refused it (a box: the
                # sealed recipients must be those it accepted): sent again for the
                # accepted ones, as a transaction of its own, after any pipelined
                # meanwhile (this one's turn is over).
                taken = tuple(r for r in recipients if r not in refused)
                lines = [line for line, r in zip(rcpts, recipients, strict=True) if r in taken]
                await self._send_in_one_write(mail, lines, taken, await payload_for(taken))
            return refused
        if self.pending:
            raise ProtocolFailure("a transaction is still pending on this session")
        if self.supports("PIPELINING"):
            self._write((mail + "".join(rcpts) + "DATA\r\n").encode())
            mail_reply = await self.reply()
            rcpt_replies = self.rcpt_replies = [await self.reply() for _ in rcpts]
            data_reply = await self.reply()
        else:
            self._write(mail.encode())
            mail_reply = await self.reply()
            if not mail_reply.positive:
                raise failure_for(mail_reply, "MAIL FROM")
            rcpt_replies = self.rcpt_replies = []
            for line in rcpts:
                self._write(line.encode())
                rcpt_replies.append(await self.reply())
            data_reply = None
        if not mail_reply.positive:
            await self._reset_after(data_reply)
            raise failure_for(mail_reply, "MAIL FROM")
        accepted, refused, failed = sort_recipients(recipients, rcpt_replies)
        if failed is not None:
            await self._reset_after(data_reply)
            raise DeliveryError(f"peer answered {failed} to RCPT TO")
        if not accepted:
            await self._reset_after(data_reply)
            raise every_recipient_refused(rcpt_replies)
        if data_reply is None:
            self._write(b"DATA\r\n")
            data_reply = await self.reply()
        if data_reply.code != 354:
            raise failure_for(data_reply, "DATA")
        if prepared is not None and len(accepted) == len(recipients):
            payload = prepared
        else:
            payload = await payload_for(tuple(accepted))
        self.data_sent = True
        self._write(data_block(payload))
        final = await self.reply()
        if not final.positive:
            raise failure_for(final, "the end of data")
        self.messages += 1
        self.last_used = time.monotonic()
        return refused

    async def _send_in_one_write(
        self, mail: str, rcpts: list[str], recipients: tuple[str, ...], prepared: bytes
    ) -> tuple[list[str], bool]:
        """The whole transaction in one write: [EHLO,] MAIL, RCPT..., BDAT chunks + data.

        One round trip (:func:`bdat_chunks`: a few ``BDAT n``, then ``BDAT n
        LAST``). Written at once, even while earlier transactions of this
        session wait for their replies; its own replies are read when theirs
        have been. Returns the recipients refused while others were accepted,
        and whether the data must go again for those: when the peer refused
        it (a box refuses data sealed for a recipient it did not accept; a
        plain MTA stores it for the accepted ones). A failure leaves the session out of step
        for the transactions written after this one: it is marked broken
        (they fail as :class:`ProtocolFailure` and are sent again elsewhere).
        """
        if not self.usable:
            raise ProtocolFailure(self._broken or "the session is closed")
        ehlo_name, self._deferred_ehlo = self._deferred_ehlo, None
        chunks = bdat_chunks(chunk_body(prepared))
        head = (f"EHLO {ehlo_name}\r\n" if ehlo_name else "") + mail + "".join(rcpts)
        self.data_sent = True
        self._write(head.encode() + b"".join(chunks))
        before, mine = self._turn, asyncio.get_running_loop().create_future()
        self._turn = mine
        self.pending += 1
        try:
            if before is not None:
                await asyncio.shield(before)  # cancelled here, the one before is not
            if self._broken is not None:
                raise ProtocolFailure(self._broken)
            if ehlo_name:
                self._read_ehlo(await self.reply())
            mail_reply = await self.reply()
            rcpt_replies = [await self.reply() for _ in rcpts]
            finals = [await self.reply() for _ in chunks]  # a refused chunk is answered too
        except BaseException as exc:
            self._broken = self._broken or f"SMTP with the peer failed: {exc}"
            raise
        finally:
            self.pending -= 1
            if not mine.done():
                mine.set_result(None)
            if self._turn is mine:
                self._turn = None
        # Set here, after the last await: the caller reads it before any other
        # transaction of this session can finish.
        self.rcpt_replies = rcpt_replies
        if not mail_reply.positive:
            raise failure_for(mail_reply, "MAIL FROM")
        accepted, refused, failed = sort_recipients(recipients, rcpt_replies)
        if failed is not None:
            raise DeliveryError(f"peer answered {failed} to RCPT TO")
        if not accepted:
            raise every_recipient_refused(rcpt_replies)
        for number, final in enumerate(finals, 1):
            if not final.positive:
                if refused and number == len(finals):
                    self.data_sent = False
                    return refused, True
                raise failure_for(final, "a chunk of data")
        self.messages += 1
        self.last_used = time.monotonic()
        return refused, False

    async def _reset_after(self, data_reply: Reply | None) -> None:
        # A pipelined DATA that the peer accepted (354) despite a failed
        # envelope must be ended before the session can be used again.
        if data_reply is not None and data_reply.code == 354:
            self._write(b".\r\n")
            await self.reply()
        self._write(b"RSET\r\n")
        await self.reply()

    async def quit(self) -> None:
        """Say QUIT and close; failures are ignored (the work was done)."""
        try:
            self._write(b"QUIT\r\n")
            await asyncio.wait_for(self._reader.read(MAX_LINE), min(self.timeout, 5.0))
        except (OSError, TimeoutError, DeliveryError):
            pass
        finally:
            self.close()

    def close(self) -> None:
        self._broken = self._broken or "the session was closed"
        self._writer.close()

    def _write(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ProtocolFailure("SMTP with the peer failed: the connection is closed")
        self._writer.write(data)

    async def reply(self) -> Reply:
        """Read one (possibly multi-line) reply."""
        ack_now(self._sock)  # what came before (an earlier reply) must not hold this one back
        lines: list[str] = []
        code = 0
        while True:
            try:
                raw = await asyncio.wait_for(self._reader.readuntil(b"\n"), self.timeout)
            except TimeoutError:
                self.silent = True
                self.close()
                raise PeerSilent("the peer did not answer in time") from None
            except asyncio.IncompleteReadError:
                self.close()
                raise ProtocolFailure("the peer closed the connection") from None
            except asyncio.LimitOverrunError:
                self.close()
                raise ProtocolFailure("the peer sent an overlong reply line") from None
            except OSError as exc:
                self.close()
                raise ProtocolFailure(f"SMTP with the peer failed: {exc}") from None
            line = raw.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                self.close()
                raise ProtocolFailure("the peer sent a malformed reply")
            if code and int(line[:3]) != code:
                self.close()
                raise ProtocolFailure("the peer sent a malformed reply")
            code = int(line[:3])
            lines.append(line[4:])
            if len(lines) > MAX_REPLY_LINES:
                self.close()
                raise ProtocolFailure("the peer sent an overlong reply")
            if line[3:4] != "-":
                return Reply(code, "\n".join(lines))
