"""A bare SMTP line client for tests that must send exactly the bytes they choose."""

from __future__ import annotations

import asyncio


class RawSMTP:
    """Send raw bytes, read whole (multi-line) replies.

    Every client still open when a test ends is closed by the ``raw_smtp_cleanup``
    fixture of ``tests/conftest.py`` (``close_all``), so a test that stops
    early after an assertion leaks no socket.
    """

    _open: set[RawSMTP] = set()

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        RawSMTP._open.add(self)

    @classmethod
    async def close_all(cls) -> None:
        for client in list(cls._open):
            await client.close()

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> tuple[RawSMTP, str]:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
        client = cls(reader, writer)
        return client, await client.reply()

    async def reply(self) -> str:
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 10)
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line.decode("utf-8", errors="replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return "\n".join(lines)

    async def cmd(self, data: bytes | str) -> str:
        if isinstance(data, str):
            data = data.encode() + b"\r\n"
        self.writer.write(data)
        await self.writer.drain()
        return await self.reply()

    async def close(self) -> None:
        RawSMTP._open.discard(self)
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


def code(reply: str) -> int:
    return int(reply.splitlines()[-1][:3])
