"""Bring up ``lo`` in a fresh network namespace, then run a command there.

Run as ``unshare --net -- python -m tests.loopback_only COMMAND...``: a new
network namespace has one interface, ``lo``, and it is down. This sets it up
with the ``SIOCSIFFLAGS`` ioctl (no iproute2 needed), prints the interfaces
it sees to stderr (``network interfaces: lo``), and replaces itself with
COMMAND, which then has 127.0.0.1 and ::1 and no route anywhere else.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = "16sH14x"  # struct ifreq: the name, then ifr_flags in the union


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack(_IFREQ, b"lo", 0)
        flags = struct.unpack(_IFREQ, fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack(_IFREQ, b"lo", flags | IFF_UP))


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -m tests.loopback_only COMMAND [ARG...]")
    bring_up_loopback()
    names = sorted(name for _, name in socket.if_nameindex())
    print(f"network interfaces: {' '.join(names)}", file=sys.stderr, flush=True)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
