"""A SOCKS5 connector for tor that keeps tor's extended error codes.

Written here rather than taken from python-socks because that library turns
tor's ``ExtendedErrors`` replies (0xF0-0xF7, onion-service specific) into a
generic "invalid reply code" without the code, and the retry decision needs
exactly that code: a malformed onion address (0xF6) must bounce at once,
while a descriptor not found yet (0xF0) is worth retrying. The protocol
part is small (RFC 1928 CONNECT with a domain name, RFC 1929
username/password for tor's per-stream isolation).

SOCKS credentials decide circuits: tor puts streams with different
credentials on different circuits (``IsolateSOCKSAuth``, on by default).
The username is always the destination onion, so deliveries to different
onions never share a circuit. The password is an isolation token the caller
keeps per destination (the delivery agent rotates it after a failure, so a
retry never queues behind a stalled rendezvous); without one, every stream
gets a fresh token and its own circuit.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import struct

from onionmail.core.errors import DeliveryError, PermanentDeliveryError

# RFC 1928 reply codes and tor's extensions (tor's socks-extensions.txt).
REPLY_TEXT = {
    0x01: "general failure (tor could not reach the onion service)",
    0x02: "not allowed by tor's policy",
    0x03: "network unreachable",
    0x04: "host unreachable",
    0x05: "connection refused (the onion has no such port)",
    0x06: "TTL expired (circuit or rendezvous timed out)",
    0x07: "command not supported",
    0x08: "address type not supported",
    0xF0: "onion service descriptor not found (offline, or not yet published)",
    0xF1: "onion service descriptor is invalid",
    0xF2: "onion service introduction failed",
    0xF3: "onion service rendezvous failed",
    0xF4: "onion service needs client authorization",
    0xF5: "onion service client authorization is wrong",
    0xF6: "malformed onion address",
    0xF7: "onion service introduction timed out",
}
PERMANENT_REPLIES = frozenset({0x02, 0x07, 0x08, 0xF6})


class SocksError(DeliveryError):
    """tor refused or failed the stream; ``code`` is its SOCKS reply (or None)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PermanentSocksError(SocksError, PermanentDeliveryError):
    """tor's reply means retrying cannot help (for example a malformed onion)."""


def new_isolation_token() -> str:
    return secrets.token_hex(8)


def isolation_credentials(destination: str, token: str | None = None) -> tuple[bytes, bytes]:
    """SOCKS username/password: one circuit per destination and token (fresh if None)."""
    token = token if token is not None else new_isolation_token()
    return destination.encode("ascii")[:200], token.encode("ascii")[:64]


async def open_tor_stream(
    socks_host: str,
    socks_port: int,
    destination: str,
    port: int,
    *,
    timeout: float,
    isolation: str | None = None,
) -> socket.socket:
    """Connect through tor to ``destination:port``; return the connected socket.

    Raises :class:`SocksError` (retry) or :class:`PermanentSocksError`
    (bounce); ``timeout`` bounds the whole handshake including tor's
    rendezvous.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in socks_host else socket.AF_INET)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            try:
                await loop.sock_connect(sock, (socks_host, socks_port))
            except OSError as exc:
                raise SocksError(f"cannot reach tor's SOCKS port: {exc.strerror}") from None
            await _handshake(loop, sock, destination, port, isolation)
    except TimeoutError:
        sock.close()
        raise SocksError(f"tor did not open the stream within {timeout:g} s") from None
    except BaseException:
        sock.close()
        raise
    return sock


async def _handshake(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    destination: str,
    port: int,
    isolation: str | None,
) -> None:
    user, password = isolation_credentials(destination, isolation)
    await loop.sock_sendall(sock, b"\x05\x01\x02")
    if await _recv_exact(loop, sock, 2) != b"\x05\x02":
        raise SocksError("tor's SOCKS port refused username/password authentication")
    await loop.sock_sendall(
        sock, b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password
    )
    if (await _recv_exact(loop, sock, 2))[1] != 0:
        raise SocksError("tor's SOCKS port refused the isolation credentials")
    host = destination.encode("ascii")
    if len(host) > 255:
        raise PermanentSocksError("destination host name too long", None)
    request = b"\x05\x01\x00\x03" + bytes([len(host)]) + host + struct.pack(">H", port)
    await loop.sock_sendall(sock, request)
    version, reply, _, atyp = await _recv_exact(loop, sock, 4)
    if version != 5:
        raise SocksError("tor's SOCKS port answered with an unknown protocol version")
    if reply != 0:
        text = REPLY_TEXT.get(reply, "unknown error")
        cls = PermanentSocksError if reply in PERMANENT_REPLIES else SocksError
        raise cls(f"tor: {text} (SOCKS 0x{reply:02X})", reply)
    await _recv_exact(loop, sock, _bound_address_length(atyp, await _peek_len(loop, sock, atyp)))


async def _peek_len(loop: asyncio.AbstractEventLoop, sock: socket.socket, atyp: int) -> int:
    if atyp == 3:
        return (await _recv_exact(loop, sock, 1))[0]
    return 0


def _bound_address_length(atyp: int, domain_length: int) -> int:
    if atyp == 1:
        return 4 + 2
    if atyp == 4:
        return 16 + 2
    if atyp == 3:
        return domain_length + 2
    raise SocksError("tor's SOCKS reply has an unknown address type")


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = await loop.sock_recv(sock, n - len(data))
        if not chunk:
            raise SocksError("tor closed the SOCKS connection during the handshake")
        data += chunk
    return data
