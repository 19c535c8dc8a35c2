"""A device's side in tests: IMAP and submission through a tor's SOCKS port, IDLE, as_user.

Python's imaplib and smtplib, each given a socket that a tor client opened
to the device onion (SOCKS5 by hand, keeping tor's extended error codes, so
a test can show which refusal tor gave).
"""

from __future__ import annotations

import imaplib
import os
import smtplib
import socket
import time
from typing import Any

from onionmail.tor.socks import REPLY_TEXT

AS_USER = (
    ["unshare", "--user", "--map-user=65534", "--map-group=65534"] if os.geteuid() == 0 else []
)
"""Run a box as an ordinary user, as its owner does: Dovecot will not read mail as root.
As root (the test machine), a user namespace maps our uid to ``nobody``, which owns the
box's files inside it; otherwise the box already runs as an ordinary user."""


class SocksRefused(ConnectionError):
    """tor answered the SOCKS CONNECT with ``code`` (see onionmail.tor.socks.REPLY_TEXT)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"SOCKS reply {code:#04x}: {REPLY_TEXT.get(code, 'unknown')}")
        self.code = code


def _exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("tor closed the SOCKS connection")
        data += chunk
    return data


def socks_socket(socks_port: int, host: str, port: int, timeout: float = 60) -> socket.socket:
    """A stream to ``host:port`` through tor's SOCKS5 port; :class:`SocksRefused` if refused."""
    sock = socket.create_connection(("127.0.0.1", socks_port), timeout)
    try:
        sock.sendall(b"\x05\x01\x00")
        if _exactly(sock, 2) != b"\x05\x00":
            raise ConnectionError("tor refused the SOCKS greeting")
        name = host.encode("ascii")
        sock.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
        head = _exactly(sock, 4)
        if head[1] != 0:
            raise SocksRefused(head[1])
        bound = {1: 4, 4: 16}.get(head[3]) or _exactly(sock, 1)[0]
        _exactly(sock, bound + 2)
    except BaseException:
        sock.close()
        raise
    return sock


def connect_retrying(socks_port: int, host: str, port: int, attempts: int = 8) -> socket.socket:
    """:func:`socks_socket`, retried (bounded) while tor is still fetching or building
    (a descriptor just published, a refused client authorization is raised at once)."""
    for attempt in range(attempts):
        try:
            return socks_socket(socks_port, host, port)
        except SocksRefused as exc:
            if exc.code in (0xF4, 0xF5, 0xF6) or attempt == attempts - 1:
                raise
        time.sleep(2)
    raise AssertionError("unreachable")  # pragma: no cover


class OnionIMAP(imaplib.IMAP4):
    """imaplib over a socket made by ``connect()`` (a SOCKS stream through tor)."""

    def __init__(self, connect: Any) -> None:
        self._open_stream = connect
        super().__init__("device-onion", 143)

    def _create_socket(self, timeout: Any) -> socket.socket:
        sock: socket.socket = self._open_stream()
        sock.settimeout(60)
        return sock


class OnionSMTP(smtplib.SMTP):
    """smtplib over a socket made by ``connect()``."""

    def __init__(self, connect: Any) -> None:
        self._open_stream = connect
        super().__init__("device-onion", 587, local_hostname="localhost", timeout=60)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock: socket.socket = self._open_stream()
        return sock


def idle_until_exists(imap: imaplib.IMAP4, timeout: float) -> tuple[bytes, float]:
    """IMAP IDLE (RFC 2177) until an ``EXISTS`` update: the line and when it came."""
    tag = b"IDLE1"  # our own tag: imaplib has no IDLE before Python 3.14
    imap.send(tag + b" IDLE\r\n")
    if not imap.readline().startswith(b"+"):
        raise AssertionError("the server refused IDLE")
    imap.sock.settimeout(timeout)
    try:
        while True:
            line = imap.readline()
            if not line:
                raise AssertionError("the server closed the connection during IDLE")
            if line.rstrip().endswith(b"EXISTS"):
                when = time.monotonic()
                break
    finally:
        imap.sock.settimeout(60)
    imap.send(b"DONE\r\n")
    while not imap.readline().startswith(tag):
        pass
    return line, when
