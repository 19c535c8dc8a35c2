"""Tor's defences for the box's onion: the ADD_ONION line, tor's answers, and the real network.

Unit tests drive :class:`BoxTor.publish` against canned control-port replies
(stem's own parser reads them); the ``tor`` tests publish onions on the
private Tor network and attack them through a client tor.

What tor 0.4.9 offers an ephemeral onion, and so what is tested here:
proof of work (``PoWDefensesEnabled``, ``PoWQueueRate``, ``PoWQueueBurst``)
and a cap on streams per client circuit (``MaxStreams`` +
``MaxStreamsCloseCircuit``). Rate limiting at the introduction points is not
on offer: ``ADD_ONION ... HiddenServiceEnableIntroDoSDefense=1`` is answered
``512 Bad arguments to ADD_ONION: Unrecognized keyword argument
"HiddenServiceEnableIntroDoSDefense"``, and ``SETCONF
HiddenServiceEnableIntroDoSDefense=1`` ``513 Unacceptable option value:
Failed to configure rendezvous options`` (tor logs "with no preceding
HiddenServiceDir directive"); :func:`test_tor_refuses_intro_dos_options`
keeps that finding honest.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import stem
import stem.control
import stem.process
import stem.version
from stem.response import ControlMessage

from onionmail.config.box import TorSection
from onionmail.core.errors import TorError, TorTimeoutError
from onionmail.seal.identity import Identity
from onionmail.smtp.server import SafeHandler, start_smtp_server
from onionmail.tor.control import BoxTor, add_onion_command
from onionmail.tor.socks import SocksError, open_tor_stream
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import ClientTor, offline_tor, start_client_tor
from tests.smtp_client import RawSMTP, code

KEY = "KEYBLOB+secret/base64=="
HSDIR = "$" + "A" * 40
UPLOADS = [
    f"650 HS_DESC UPLOAD {{sid}} UNKNOWN {HSDIR}~hsdir1 descid HSDIR_INDEX=00\r\n",
    f"650 HS_DESC UPLOADED {{sid}} UNKNOWN {HSDIR}~hsdir1\r\n",
]
OLD_TOR = '512 Bad arguments to ADD_ONION: Unrecognized keyword argument "PoWDefensesEnabled"\r\n'


# --- the ADD_ONION line ---------------------------------------------------------------


def test_add_onion_command_with_the_default_defences() -> None:
    assert add_onion_command(KEY, "127.0.0.1:2525", TorSection(), pow_defenses=True) == (
        f"ADD_ONION ED25519-V3:{KEY} Flags=MaxStreamsCloseCircuit MaxStreams=10 "
        "PoWDefensesEnabled=1 PoWQueueRate=25 PoWQueueBurst=250 Port=25,127.0.0.1:2525"
    )


def test_add_onion_command_with_tuned_defences() -> None:
    settings = TorSection(pow_queue_rate=0, pow_queue_burst=7, max_streams_per_circuit=3)
    assert add_onion_command(KEY, "127.0.0.1:1", settings, pow_defenses=True) == (
        f"ADD_ONION ED25519-V3:{KEY} Flags=MaxStreamsCloseCircuit MaxStreams=3 "
        "PoWDefensesEnabled=1 PoWQueueRate=0 PoWQueueBurst=7 Port=25,127.0.0.1:1"
    )


def test_add_onion_command_without_defences() -> None:
    settings = TorSection(pow_defenses=False, max_streams_per_circuit=0)
    assert (
        add_onion_command(KEY, "127.0.0.1:2525", settings, pow_defenses=False)
        == f"ADD_ONION ED25519-V3:{KEY} Port=25,127.0.0.1:2525"
    )


# --- publish() against canned replies ---------------------------------------------------


class FakeController:
    """Answers ``msg`` from a script of replies; after a 250 it emits the given HS_DESC events."""

    def __init__(self, replies: list[str], events: list[str], version: str = "0.4.9.11") -> None:
        self.replies = replies
        self.events = events
        self.version = version
        self.sent: list[str] = []
        self.listeners: list[Any] = []

    def add_event_listener(self, listener: Any, *event_types: Any) -> None:
        assert event_types == (stem.control.EventType.HS_DESC,)
        self.listeners.append(listener)

    def remove_event_listener(self, listener: Any) -> None:
        self.listeners.remove(listener)

    def get_version(self) -> stem.version.Version:
        return stem.version.Version(self.version)

    def msg(self, command: str) -> ControlMessage:
        self.sent.append(command)
        reply = ControlMessage.from_str(self.replies.pop(0))
        if reply.is_ok():
            for text in self.events:
                event = ControlMessage.from_str(text, "EVENT")
                for listener in self.listeners:
                    listener(event)
        return reply


def box_tor(controller: FakeController, **settings: Any) -> BoxTor:
    tor = BoxTor(TorSection(**settings), Path("/nonexistent"), {})
    tor.controller = controller
    return tor


def service_id(identity: Identity) -> str:
    return identity.onion_address.removesuffix(".onion")


async def test_publish_sends_the_defences_and_waits_for_the_upload() -> None:
    identity = Identity.generate()
    sid = service_id(identity)
    controller = FakeController(
        [f"250-ServiceID={sid}\r\n250 OK\r\n"], [e.format(sid=sid) for e in UPLOADS]
    )
    tor = box_tor(controller)
    await tor.publish(identity, 2525)
    assert controller.sent == [
        add_onion_command(
            identity.tor_key_blob(), "127.0.0.1:2525", tor.settings, pow_defenses=True
        )
    ]
    assert tor.published and tor.pow_defenses is True
    assert controller.listeners == []  # the HS_DESC listener is gone again


async def test_tor_without_pow_gets_the_onion_without_it(caplog: pytest.LogCaptureFixture) -> None:
    identity = Identity.generate()
    sid = service_id(identity)
    controller = FakeController(
        [OLD_TOR, f"250-ServiceID={sid}\r\n250 OK\r\n"],
        [e.format(sid=sid) for e in UPLOADS],
        version="0.4.8.16",
    )
    tor = box_tor(controller)
    with caplog.at_level(logging.WARNING):
        await tor.publish(identity, 2525)
    assert len(controller.sent) == 2
    assert "PoW" in controller.sent[0] and "PoW" not in controller.sent[1]
    assert "MaxStreams=10" in controller.sent[1]  # the other defence stays
    assert tor.published and tor.pow_defenses is False
    assert "tor 0.4.8.16 does not offer the proof-of-work defence" in caplog.text
    assert identity.tor_key_blob() not in caplog.text


async def test_pow_off_sends_no_pow_keywords() -> None:
    identity = Identity.generate()
    sid = service_id(identity)
    controller = FakeController(
        [f"250-ServiceID={sid}\r\n250 OK\r\n"], [e.format(sid=sid) for e in UPLOADS]
    )
    tor = box_tor(controller, pow_defenses=False)
    await tor.publish(identity, 2525)
    assert "PoW" not in controller.sent[0]
    assert tor.pow_defenses is False


async def test_other_refusal_is_reported_with_tors_words() -> None:
    identity = Identity.generate()
    controller = FakeController(["512 Invalid PoWQueueRate\r\n"], [])
    with pytest.raises(TorError, match="Invalid PoWQueueRate") as info:
        await box_tor(controller).publish(identity, 2525)
    assert len(controller.sent) == 1  # no retry without PoW: the option was understood
    assert identity.tor_key_blob() not in str(info.value)
    assert controller.listeners == []


async def test_no_upload_in_time_is_a_timeout() -> None:
    identity = Identity.generate()
    controller = FakeController([f"250-ServiceID={service_id(identity)}\r\n250 OK\r\n"], [])
    tor = box_tor(controller, publish_timeout=0.2)
    with pytest.raises(TorTimeoutError, match=r"raise \[tor\] publish_timeout"):
        await tor.publish(identity, 2525)
    assert not tor.published


async def test_failed_uploads_everywhere_are_an_error() -> None:
    identity = Identity.generate()
    sid = service_id(identity)
    events = [
        UPLOADS[0].format(sid=sid),
        f"650 HS_DESC FAILED {sid} UNKNOWN {HSDIR} REASON=UPLOAD_REJECTED\r\n",
    ]
    controller = FakeController([f"250-ServiceID={sid}\r\n250 OK\r\n"], events)
    with pytest.raises(TorError, match="UPLOAD_REJECTED"):
        await box_tor(controller).publish(identity, 2525)


async def test_uploads_of_other_onions_do_not_count() -> None:
    identity = Identity.generate()
    sid = service_id(identity)
    other = service_id(Identity.generate())
    controller = FakeController(
        [f"250-ServiceID={sid}\r\n250 OK\r\n"], [e.format(sid=other) for e in UPLOADS]
    )
    with pytest.raises(TorTimeoutError):
        await box_tor(controller, publish_timeout=0.2).publish(identity, 2525)


# --- the real thing -----------------------------------------------------------------------


@pytest.fixture
def lone_tor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A tor with networking disabled (ADD_ONION works; nothing is published)."""
    with offline_tor(tmp_path_factory.mktemp("lone")) as controller:
        yield controller


@pytest.mark.tor
def test_tor_accepts_the_default_add_onion_line(lone_tor: Any) -> None:
    identity = Identity.generate()
    command = add_onion_command(
        identity.tor_key_blob(), "127.0.0.1:9", TorSection(), pow_defenses=True
    )
    reply = lone_tor.msg(command)
    assert reply.is_ok(), str(reply)
    assert f"ServiceID={service_id(identity)}" in str(reply)


@pytest.mark.tor
def test_tor_refuses_intro_dos_options(lone_tor: Any) -> None:
    """Regression guard on a finding: if this starts passing, wire the option up."""
    reply = lone_tor.msg(
        "ADD_ONION NEW:ED25519-V3 Flags=DiscardPK HiddenServiceEnableIntroDoSDefense=1 "
        "Port=25,127.0.0.1:9"
    )
    assert not reply.is_ok()
    assert 'Unrecognized keyword argument "HiddenServiceEnableIntroDoSDefense"' in str(reply)
    reply = lone_tor.msg("SETCONF HiddenServiceEnableIntroDoSDefense=1")
    assert not reply.is_ok()
    assert "Failed to configure rendezvous options" in str(reply)


@dataclass
class DosNet:
    """Two onions on one box tor, both to 127.0.0.1:``port``, and a client tor that logs at info."""

    tor: BoxTor
    plain_tor: BoxTor
    defended: str  # the onion with PoW and MaxStreams=2
    plain: str  # the onion without PoW
    port: int
    client: ClientTor
    client_log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def dos_net(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DosNet]:
    root = tmp_path_factory.mktemp("dos")
    port = _free_port()
    settings = TorSection(testnet=str(testnet.directory), max_streams_per_circuit=2)
    tor = BoxTor(settings, root / "tor", dict(client_tor_options(testnet)))
    defended, plain = Identity.generate(), Identity.generate()
    client: ClientTor | None = None
    plain_tor: BoxTor | None = None
    try:
        asyncio.run(tor.start())
        asyncio.run(tor.publish(defended, port))
        # A second controller on the same tor, publishing without PoW.
        plain_settings = dataclasses.replace(
            settings,
            mode="attach",
            control_socket=str(root / "tor" / "control.sock"),
            pow_defenses=False,
        )
        plain_tor = BoxTor(plain_settings, root / "tor", {})
        asyncio.run(plain_tor.start())
        asyncio.run(plain_tor.publish(plain, port))
        client_log = root / "client-debug.log"
        client = start_client_tor(
            root / "client",
            {
                **client_tor_options(testnet),
                "Log": f"debug file {client_log}",
                "SocksTimeout": "30",
            },
        )
        yield DosNet(
            tor, plain_tor, defended.onion_address, plain.onion_address, port, client, client_log
        )
    finally:
        if client is not None:
            client.stop()
        if plain_tor is not None:
            asyncio.run(plain_tor.stop())
        asyncio.run(tor.stop())


@contextlib.asynccontextmanager
async def smtp_on(port: int, **kwargs: Any) -> AsyncIterator[None]:
    server = await start_smtp_server(SafeHandler(), "127.0.0.1", port, hostname="x", **kwargs)
    try:
        yield
    finally:
        await RawSMTP.close_all()
        server.close()
        await server.wait_closed()


async def onion_session(net: DosNet, onion: str, isolation: str) -> tuple[RawSMTP, str]:
    """An SMTP connection to ``onion`` through the client tor; retried while tor settles."""
    deadline = time.monotonic() + 90
    while True:
        try:
            sock = await open_tor_stream(
                "127.0.0.1", net.client.socks_port, onion, 25, timeout=30, isolation=isolation
            )
            break
        except SocksError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1)  # a fresh descriptor is often not found at once
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawSMTP(reader, writer)
    return client, await client.reply()


# tor logs this at debug level when it reads a descriptor's pow-params line
# (the only client-side trace: the line sits in the descriptor's encrypted layer).
pow_params = re.compile(r"PoW params present in descriptor, suggested_effort=(\d+)")


@pytest.mark.tor
async def test_defended_onion_publishes_pow_params(dos_net: DosNet) -> None:
    assert dos_net.tor.pow_defenses is True  # tor took PoWDefensesEnabled=1
    assert dos_net.plain_tor.pow_defenses is False
    log = dos_net.client_log
    async with smtp_on(dos_net.port):
        seen = len(log.read_bytes())
        client, banner = await onion_session(dos_net, dos_net.plain, "plain")
        assert code(banner) == 220
        await client.close()
        assert pow_params.findall(log.read_bytes()[seen:].decode()) == []
        seen = len(log.read_bytes())
        client, banner = await onion_session(dos_net, dos_net.defended, "defended")
        assert code(banner) == 220
        await client.close()
    efforts = pow_params.findall(log.read_bytes()[seen:].decode())
    # The client tor read pow-params from the descriptor; with no flood the
    # suggested effort is 0, so honest peers solve nothing.
    assert efforts and set(efforts) == {"0"}


@pytest.mark.tor
async def test_connection_over_the_limit_over_onion(dos_net: DosNet) -> None:
    async with smtp_on(dos_net.port, max_connections=2):
        first, banner1 = await onion_session(dos_net, dos_net.defended, "c1")
        second, banner2 = await onion_session(dos_net, dos_net.defended, "c2")
        assert code(banner1) == code(banner2) == 220
        third, reply = await onion_session(dos_net, dos_net.defended, "c3")
        assert reply == "421 4.7.0 Too many connections, try again later"
        assert await asyncio.wait_for(third.reader.read(), 30) == b""
        assert code(await first.cmd("NOOP")) == 250
        assert code(await second.cmd("NOOP")) == 250


@pytest.mark.tor
async def test_streams_over_the_cap_close_the_circuit(dos_net: DosNet) -> None:
    # The defended onion allows 2 streams per circuit (MaxStreams=2,
    # MaxStreamsCloseCircuit); same SOCKS credentials, same circuit.
    async with smtp_on(dos_net.port):
        first, _ = await onion_session(dos_net, dos_net.defended, "one-circuit")
        second, _ = await onion_session(dos_net, dos_net.defended, "one-circuit")
        assert code(await first.cmd("NOOP")) == 250
        with pytest.raises(SocksError):  # measured: SOCKS 0x01 or 0x05
            await open_tor_stream(
                "127.0.0.1",
                dos_net.client.socks_port,
                dos_net.defended,
                25,
                timeout=30,
                isolation="one-circuit",
            )
        for client in (first, second):  # tor tore the whole circuit down
            assert await asyncio.wait_for(client.reader.read(), 30) == b""
        fresh, banner = await onion_session(dos_net, dos_net.defended, "another-circuit")
        assert code(banner) == 220
