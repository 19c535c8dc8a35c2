"""Record what observers receive on this machine: loopback packets, a box's listeners, its log.

:class:`LoopbackCapture` is a small tcpdump in Python: an ``AF_PACKET`` socket
bound to ``lo`` (needs root or ``CAP_NET_RAW``) that keeps every TCP segment
sent on loopback, so tests can reassemble a stream (what a server socket
received) or scan every Tor link for plaintext. :func:`run_verbose_box`
is :func:`tests.box_process.run_box` with ``--verbose``, so the box logs at
every level.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from onionmail.box.create import NewBox
from tests.box_process import RunningBox, run_box

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
"""Loopback shows each packet twice (sent, then received); keep the sent copy only."""


@dataclass(frozen=True)
class Segment:
    """One TCP segment seen on loopback (addresses are all 127.0.0.1 there: ports tell)."""

    at: float
    sport: int
    dport: int
    seq: int
    payload: bytes


SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


@dataclass
class LoopbackCapture:
    """Every TCP segment sent on ``lo`` between :meth:`start` and :meth:`stop`."""

    segments: list[Segment] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None
    _running: bool = False

    def start(self) -> LoopbackCapture:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        # SO_RCVBUF is capped by net.core.rmem_max (4 MiB here); as root the
        # FORCE variant is not, and 256 MiB rides out bursts of other loopback
        # traffic (a benchmark, another test's bulk transfer) without drops.
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 256 * 1024 * 1024)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024 * 1024)
        sock.bind(("lo", 0))
        sock.settimeout(0.2)
        self._sock, self._running = sock, True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        """Stop capturing; returns how many packets the kernel dropped (0: the capture is whole)."""
        self._running = False
        if self._thread is not None:
            self._thread.join(5)
        drops = 0
        if self._sock is not None:
            stats = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
            drops = struct.unpack("II", stats)[1]
            self._sock.close()
            self._sock = None
        return drops

    def _loop(self) -> None:
        assert self._sock is not None
        while self._running:
            try:
                frame, address = self._sock.recvfrom(262144)
            except TimeoutError:
                continue
            except OSError:
                return
            if address[2] != PACKET_OUTGOING:
                continue
            segment = _parse(frame, time.time())
            if segment is not None:
                self.segments.append(segment)

    def between(self, start: float, end: float) -> list[Segment]:
        return [s for s in list(self.segments) if start <= s.at <= end]

    def to_port(self, port: int, start: float = 0.0, end: float = float("inf")) -> list[bytes]:
        """The byte streams sent to ``port`` (one per client port), in sequence order.

        Sequence numbers are taken relative to the first segment captured, modulo
        2**32: a stream whose numbers wrap around is still put together in order.
        """
        flows: dict[int, dict[int, bytes]] = {}
        for s in self.between(start, end):
            if s.dport == port and s.payload:
                flows.setdefault(s.sport, {})[s.seq] = s.payload
        return [_in_order(f) for f in flows.values()]

    def touching(
        self, ports: Iterable[int], start: float = 0.0, end: float = float("inf")
    ) -> bytes:
        """Every payload byte to or from any of ``ports``, concatenated (for scanning)."""
        wanted = set(ports)
        return b"".join(
            s.payload for s in self.between(start, end) if s.sport in wanted or s.dport in wanted
        )


def _in_order(flow: dict[int, bytes]) -> bytes:
    base = next(iter(flow))
    return b"".join(flow[seq] for seq in sorted(flow, key=lambda seq: (seq - base) % 2**32))


def _parse(frame: bytes, at: float) -> Segment | None:
    if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    header_length = (ip[0] & 0x0F) * 4
    total_length = struct.unpack("!H", ip[2:4])[0]
    if ip[9] != socket.IPPROTO_TCP:
        return None
    tcp = ip[header_length:total_length]
    sport, dport, seq = struct.unpack("!HHI", tcp[:8])
    offset = (tcp[12] >> 4) * 4
    return Segment(at, sport, dport, seq, bytes(tcp[offset:]))


def listening_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (from /proc, IPv4)."""
    inodes = _socket_inodes(pid)
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:  # state LISTEN
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def run_verbose_box(new: NewBox, timeout: float = 90) -> RunningBox:
    """:func:`tests.box_process.run_box` with ``--verbose``: the log at every level."""
    return run_box(new, timeout, verbose=True)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def connections_to(pid: int, remote_ports: set[int]) -> set[int]:
    """Local ports of the established TCP connections of ``pid`` to any of ``remote_ports``."""
    inodes = _socket_inodes(pid)
    local = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote = int(fields[2].rsplit(":", 1)[1], 16)
        if fields[3] == "01" and fields[9] in inodes and remote in remote_ports:
            local.add(int(fields[1].rsplit(":", 1)[1], 16))
    return local
