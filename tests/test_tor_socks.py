"""The SOCKS5 connector keeps tor's extended error codes and isolates every stream.

tor itself is exercised by the onion-delivery tests; here a small loopback
server plays tor's SOCKS side so every reply code can be driven.
"""

from __future__ import annotations

import asyncio
import struct

import pytest

from onionmail.tor.socks import (
    PermanentSocksError,
    SocksError,
    isolation_credentials,
    open_tor_stream,
)


class FakeTorSocks:
    """Answers one CONNECT with ``reply``; records the credentials and target it saw."""

    def __init__(self, reply: int, stall: bool = False) -> None:
        self.reply = reply
        self.stall = stall
        self.seen: list[tuple[bytes, bytes, bytes, int]] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._converse(reader, writer)
        finally:
            writer.close()
            await writer.wait_closed()

    async def _converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(3)
        writer.write(b"\x05\x02")
        _, ulen = await reader.readexactly(2)
        user = await reader.readexactly(ulen)
        plen = (await reader.readexactly(1))[0]
        password = await reader.readexactly(plen)
        writer.write(b"\x01\x00")
        _, _, _, _, hlen = await reader.readexactly(5)
        host = await reader.readexactly(hlen)
        (port,) = struct.unpack(">H", await reader.readexactly(2))
        self.seen.append((user, password, host, port))
        if self.stall:
            await reader.read()  # until the client gives up and closes
            return
        writer.write(bytes([5, self.reply, 0, 1, 0, 0, 0, 0, 0, 0]))
        if self.reply == 0:
            writer.write(b"hello")
        await writer.drain()


async def serve(fake: FakeTorSocks) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_success_returns_connected_socket_with_isolated_credentials() -> None:
    fake = FakeTorSocks(0)
    server, port = await serve(fake)
    async with server:
        first = await open_tor_stream("127.0.0.1", port, "peer.onion", 25, timeout=5)
        second = await open_tor_stream("127.0.0.1", port, "peer.onion", 25, timeout=5)
        third = await open_tor_stream(
            "127.0.0.1", port, "peer.onion", 25, timeout=5, isolation="t1"
        )
        fourth = await open_tor_stream(
            "127.0.0.1", port, "peer.onion", 25, timeout=5, isolation="t1"
        )
        loop = asyncio.get_running_loop()
        assert await loop.sock_recv(first, 5) == b"hello"
        for sock in (first, second, third, fourth):
            sock.close()
    (u1, p1, host, dport), (u2, p2, _, _), (_, p3, _, _), (_, p4, _, _) = fake.seen
    assert (host, dport) == (b"peer.onion", 25)
    assert u1 == u2 == b"peer.onion" and p1 != p2  # no token: a circuit per stream
    assert p3 == p4 == b"t1"  # the caller's token: streams share the destination's circuit


@pytest.mark.parametrize("code", [0x01, 0x04, 0x06, 0xF0, 0xF2, 0xF3, 0xF7])
async def test_transient_tor_errors_keep_their_code(code: int) -> None:
    server, port = await serve(FakeTorSocks(code))
    async with server:
        with pytest.raises(SocksError) as info:
            await open_tor_stream("127.0.0.1", port, "peer.onion", 25, timeout=5)
    assert info.value.code == code
    assert not isinstance(info.value, PermanentSocksError)
    assert f"0x{code:02X}" in str(info.value)


async def test_malformed_onion_is_permanent() -> None:
    server, port = await serve(FakeTorSocks(0xF6))
    async with server:
        with pytest.raises(PermanentSocksError, match="malformed onion address"):
            await open_tor_stream("127.0.0.1", port, "bad.onion", 25, timeout=5)


async def test_timeout_is_bounded() -> None:
    server, port = await serve(FakeTorSocks(0, stall=True))
    async with server:
        with pytest.raises(SocksError, match="within 0.3 s"):
            await open_tor_stream("127.0.0.1", port, "peer.onion", 25, timeout=0.3)


async def test_dead_tor_is_a_clear_transient_error() -> None:
    server, port = await serve(FakeTorSocks(0))
    server.close()
    await server.wait_closed()
    with pytest.raises(SocksError, match="cannot reach tor's SOCKS port"):
        await open_tor_stream("127.0.0.1", port, "peer.onion", 25, timeout=5)


def test_credentials_are_fresh() -> None:
    assert isolation_credentials("x.onion")[1] != isolation_credentials("x.onion")[1]
