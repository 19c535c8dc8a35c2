"""TCP details that matter for mail carried over tor."""

from __future__ import annotations

import socket
from typing import Any

_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def ack_now(sock: Any) -> None:
    """Acknowledge at once what arrived on ``sock`` (a TCP socket to or from tor).

    tor writes to its SOCKS and onion-service sockets without ``TCP_NODELAY``,
    so a second small write of tor's (the SMTP greeting after the SOCKS reply;
    the tail of a message after its first cells) waits until the first is
    acknowledged -- and Linux delays that ACK by 40 ms when this end has
    nothing to send back (it waits for the greeting, or for the rest of the
    data). ``TCP_QUICKACK`` sends the pending ACK now. Best effort: elsewhere a no-op.
    """
    if _QUICKACK is None or sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)
    except OSError:
        pass  # not TCP (a unix socket), or already closed
