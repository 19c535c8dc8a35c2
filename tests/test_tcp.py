"""onionmail.smtp.quickack: the ACK that keeps tor's un-NODELAYed writes from waiting 40 ms."""

from __future__ import annotations

import socket

import pytest

from onionmail.smtp.quickack import ack_now


@pytest.mark.skipif(not hasattr(socket, "TCP_QUICKACK"), reason="TCP_QUICKACK is Linux only")
def test_ack_now_sets_quickack_on_a_tcp_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        with socket.create_connection(server.getsockname()) as client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 0)
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 0
            ack_now(client)
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK) == 1


def test_ack_now_is_harmless_where_it_cannot_apply() -> None:
    ack_now(None)
    left, right = socket.socketpair()  # a unix socket: no TCP options
    with left, right:
        ack_now(left)
    closed = socket.socket()
    closed.close()
    ack_now(closed)
