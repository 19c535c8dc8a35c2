"""A phone reads and sends through its box: IMAP and submission over a client-authorized onion.

Real parts on the private Tor network: Alice's box (``onionmail run`` as an
ordinary user, with its private Dovecot), Bob's box, a *phone* tor whose
``ClientOnionAuthDir`` holds the key ``onionmail device add`` printed, and a
*stranger* tor without one. The phone logs in with Python's imaplib and
neomutt (through torsocks), reads mail that came box-to-box, sets ``\\Seen``,
waits in IDLE, and submits a message that reaches Bob. The tests run in file
order on one world.
"""

from __future__ import annotations

import asyncio
import email
import imaplib
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onionmail.box.api import BoxApi
from onionmail.box.create import NewBox
from onionmail.tor.testnet.network import client_tor_options
from tests.box_process import (
    ClientTor,
    RunningBox,
    free_port,
    start_box,
    start_client_tor,
    submit,
    wait_for_mail,
)
from tests.device_clients import (
    AS_USER,
    OnionIMAP,
    OnionSMTP,
    SocksRefused,
    connect_retrying,
    idle_until_exists,
    socks_socket,
)
from tests.neomutt import neomutt_subjects
from tests.wire_capture import LoopbackCapture, connections_to
from threat_model import Visibility
from threat_model.devices import DeviceItem, DeviceLeg, DeviceObserver, device_leaks

pytestmark = pytest.mark.tor


@dataclass
class AddedDevice:
    auth_line: str
    password: str

    @property
    def onion(self) -> str:
        return self.auth_line.split(":", 1)[0] + ".onion"


@dataclass
class World:
    root: Path
    alice: RunningBox
    bob: RunningBox
    phone: AddedDevice
    phone_tor: ClientTor
    stranger_tor: ClientTor
    local_imap_port: int
    testnet: Any


def device_cli(box_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "onionmail.cli", "device", *args, "--dir", str(box_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def device_add(box_dir: Path, name: str) -> AddedDevice:
    out = device_cli(box_dir, "add", name, "--no-qr").stdout
    auth = next(line.strip() for line in out.splitlines() if ":descriptor:x25519:" in line)
    password = next(
        line.split(":", 1)[1].strip()
        for line in out.splitlines()
        if line.strip().startswith("Password:")
    )
    return AddedDevice(auth, password)


def device_tor(root: Path, name: str, testnet: Any, auth_line: str) -> ClientTor:
    auth_dir = root / f"{name}-auth"
    auth_dir.mkdir(mode=0o700)
    (auth_dir / f"{name}.auth_private").write_text(auth_line + "\n")
    options = {**client_tor_options(testnet), "ClientOnionAuthDir": str(auth_dir)}
    return start_client_tor(root / f"{name}-tor", options)


@pytest.fixture(scope="module")
def world(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("devices")
    port = free_port()
    added: list[AddedDevice] = []

    def add_phone(new: NewBox) -> None:
        added.append(device_add(new.box_dir, "phone"))

    alice = start_box(
        root,
        "alice",
        testnet.directory,
        settings={"devices.local_imap_port": port},
        wrapper=AS_USER,
        prepare=add_phone,
    )
    started: list[Any] = [alice]
    try:
        started.append(bob := start_box(root, "bob", testnet.directory))
        started.append(phone_tor := device_tor(root, "phone", testnet, added[0].auth_line))
        started.append(stranger := start_client_tor(root / "stranger", client_tor_options(testnet)))
        yield World(root, alice, bob, added[0], phone_tor, stranger, port, testnet)
    finally:
        for running in reversed(started):
            running.stop()


def phone_imap(
    world: World, tor: ClientTor | None = None, device: AddedDevice | None = None
) -> OnionIMAP:
    via = tor or world.phone_tor
    onion = (device or world.phone).onion
    return OnionIMAP(lambda: connect_retrying(via.socks_port, onion, 143))


def test_the_phone_reads_mail_that_came_box_to_box(world: World) -> None:
    asyncio.run(submit(world.bob, world.alice.address, "over the onion", "Hello from Bob.\n"))
    (stored,) = wait_for_mail(world.alice.maildir, 1)
    assert BoxApi(world.alice.new.box_dir).unread("alice") == 1

    imap = phone_imap(world)
    try:
        assert imap.login("alice", world.phone.password)[0] == "OK"
        _, listed = imap.list()
        assert any(isinstance(line, bytes) and line.endswith(b" INBOX") for line in listed)
        assert imap.select("INBOX") == ("OK", [b"1"])
        _, fetched = imap.fetch("1", "(RFC822)")
        part = fetched[0]
        assert isinstance(part, tuple)
        body = part[1]
        assert body == stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert email.message_from_bytes(body)["Subject"] == "over the onion"
        assert imap.store("1", "+FLAGS", "\\Seen")[0] == "OK"
    finally:
        imap.logout()
    # One Maildir: the flag is in the file name, so the TUI (through BoxApi) shows it read.
    names = [p.name for p in (world.alice.maildir / "cur").iterdir()]
    assert len(names) == 1 and names[0].endswith(":2,S")
    assert BoxApi(world.alice.new.box_dir).unread("alice") == 0


def test_idle_tells_the_phone_of_new_mail_within_two_seconds(world: World) -> None:
    imap = phone_imap(world)
    landed: list[float] = []

    def names() -> set[str]:
        return {
            p.name.split(":")[0]
            for sub in ("new", "cur")
            for p in (world.alice.maildir / sub).iterdir()
        }

    before = names()

    def watch_maildir() -> None:
        # new/ or cur/: Dovecot, told by inotify, may move the file to cur/ before a
        # poll every 10 ms sees it in new/ (a run under load missed it so).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not landed:
            if names() - before:
                landed.append(time.monotonic())
            time.sleep(0.01)

    try:
        imap.login("alice", world.phone.password)
        imap.select("INBOX")
        watcher = threading.Thread(target=watch_maildir, daemon=True)
        watcher.start()
        sender = threading.Thread(
            target=lambda: asyncio.run(
                submit(world.bob, world.alice.address, "second", "Another one.\n")
            )
        )
        sender.start()
        line, told = idle_until_exists(imap, timeout=120)
        sender.join(60)
        watcher.join(5)
        assert line.rstrip() == b"* 2 EXISTS"
        assert landed, "the message never landed in the Maildir"
        assert told - landed[0] <= 2.0, f"IDLE told {told - landed[0]:.2f} s after arrival"
    finally:
        imap.logout()


def test_the_phone_sends_through_the_box(world: World) -> None:
    smtp = OnionSMTP(lambda: connect_retrying(world.phone_tor.socks_port, world.phone.onion, 587))
    try:
        smtp.login("alice", world.phone.password)
        message = (
            f"From: {world.alice.address}\r\nTo: {world.bob.address}\r\n"
            "Subject: sent from the phone\r\n\r\nTyped on a phone.\r\n"
        )
        refused = smtp.sendmail(world.alice.address, [world.bob.address], message)
        assert refused == {}
    finally:
        smtp.quit()
    (arrived,) = wait_for_mail(world.bob.maildir, 1)
    assert email.message_from_bytes(arrived)["Subject"] == "sent from the phone"


def test_neomutt_reads_the_inbox_over_torsocks(world: World) -> None:
    conf = world.root / "torsocks.conf"
    conf.write_text(f"TorAddress 127.0.0.1\nTorPort {world.phone_tor.socks_port}\n")
    work = world.root / "neomutt"
    work.mkdir()
    settings = (
        f"set imap_user=alice\nset imap_pass={world.phone.password}\n"
        "set ssl_starttls=no\nset ssl_force_tls=no\nset imap_passive=no\n"
    )
    subjects = neomutt_subjects(
        f"imap://alice@{world.phone.onion}:143/INBOX",
        work,
        timeout=120,
        wrapper=["env", f"TORSOCKS_CONF_FILE={conf}", "torsocks"],
        settings=settings,
    )
    assert sorted(subjects) == ["over the onion", "second"]


def test_the_device_network_and_guard_see_what_the_model_says(world: World) -> None:
    """The phone's tor's links to the relays, captured while it reads and sends, hold none
    of what the model calls encrypted; the SOCKS hop, before tor, holds all of it (so the
    probes can see). The box's logs (its stderr and Dovecot's) hold none of it either."""
    marker = "wire-" + secrets.token_hex(8)
    or_ports = {node.or_port for node in world.testnet.nodes}
    capture = LoopbackCapture().start()
    try:
        start = time.time()
        asyncio.run(submit(world.bob, world.alice.address, f"{marker} in", f"{marker} body\n"))
        wait_for_mail(world.alice.maildir, 3)
        imap = phone_imap(world)
        imap.login("alice", world.phone.password)
        imap.select("INBOX")
        imap.fetch("1:*", "(RFC822)")
        imap.logout()
        smtp = OnionSMTP(
            lambda: connect_retrying(world.phone_tor.socks_port, world.phone.onion, 587)
        )
        smtp.login("alice", world.phone.password)
        smtp.sendmail(
            world.alice.address,
            [world.bob.address],
            f"To: {world.bob.address}\r\nSubject: {marker} out\r\n\r\n{marker}\r\n",
        )
        smtp.quit()
        links = connections_to(world.phone_tor.process.pid, or_ports)
        time.sleep(0.3)
        end = time.time()
    finally:
        dropped = capture.stop()
    assert dropped == 0
    on_links = b"".join(
        seg.payload
        for seg in capture.between(start, end)
        if (seg.sport in links and seg.dport in or_ports)
        or (seg.dport in links and seg.sport in or_ports)
    )
    socks_hop = capture.touching({world.phone_tor.socks_port}, start, end)
    host = world.phone.onion.removesuffix(".onion").encode()
    probes: dict[DeviceItem, Callable[[bytes], bool]] = {
        DeviceItem.MAIL: lambda data: marker.encode() in data,
        DeviceItem.CREDENTIALS: lambda data: world.phone.password.encode() in data,
        DeviceItem.DEVICE_ONION: lambda data: host in data,
    }
    assert len(on_links) > 10_000, "the capture holds the device's Tor links"
    for item, probe in probes.items():
        assert probe(socks_hop), f"{item}: the probe finds it before tor's encryption"
    logs = "".join(world.alice.stderr_lines).encode()
    dovecot_log = world.alice.new.box_dir / "devices" / "dovecot" / "dovecot.log"
    logs += dovecot_log.read_bytes() if dovecot_log.exists() else b""
    captures = {
        DeviceObserver.DEVICE_NETWORK: on_links,
        DeviceObserver.TOR_GUARD: on_links,
        DeviceObserver.BOX_LOGS: logs,
    }
    for leg in DeviceLeg:
        cells = device_leaks(leg)
        for observer, data in captures.items():
            for item, probe in probes.items():
                cell = cells[observer, item]
                shown = cell.visibility is Visibility.VISIBLE
                assert probe(data) == shown, f"{leg} {observer} {item}: {cell.reason}"
    assert b"Login" not in logs  # activity: logins are not logged


def test_a_tor_without_the_key_cannot_fetch_the_descriptor(world: World) -> None:
    with pytest.raises(SocksRefused) as refused:
        connect_retrying(world.stranger_tor.socks_port, world.phone.onion, 143)
    assert refused.value.code == 0xF4  # tor: "onion service needs client authorization"


def test_local_imap_for_a_client_on_the_same_machine(world: World) -> None:
    local = imaplib.IMAP4("127.0.0.1", world.local_imap_port)
    try:
        with pytest.raises(imaplib.IMAP4.error):
            local.login("alice", "not-the-password")
        assert local.login("alice", world.phone.password)[0] == "OK"
        assert local.select("INBOX")[0] == "OK"
    finally:
        local.logout()


def test_a_device_added_while_running_then_revoked(world: World) -> None:
    laptop = device_add(world.alice.new.box_dir, "laptop")  # returns once the box applied it
    assert laptop.onion == world.phone.onion
    laptop_tor = device_tor(world.root, "laptop", world.testnet, laptop.auth_line)
    try:
        imap = phone_imap(world, laptop_tor, laptop)
        assert imap.login("alice", laptop.password)[0] == "OK"
        imap.logout()

        out = device_cli(world.alice.new.box_dir, "revoke", "laptop")
        assert "applied it" in out.stderr
        seen: list[int] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                sock = socks_socket(laptop_tor.socks_port, laptop.onion, 143)
            except SocksRefused as exc:
                seen.append(exc.code)
                if exc.code in (0xF4, 0xF5):
                    break
                time.sleep(2)
                continue
            sock.close()
            raise AssertionError("a revoked device reached the device onion")
        assert seen and seen[-1] in (0xF4, 0xF5), f"tor's answers: {[hex(c) for c in seen]}"

        local = imaplib.IMAP4("127.0.0.1", world.local_imap_port)
        with pytest.raises(imaplib.IMAP4.error):
            local.login("alice", laptop.password)
        local.logout()

        imap = phone_imap(world)  # the phone's key is in the republished descriptor
        assert imap.login("alice", world.phone.password)[0] == "OK"
        imap.logout()
        listed = device_cli(world.alice.new.box_dir, "list").stdout
        assert "phone" in listed and "laptop" not in listed
    finally:
        laptop_tor.stop()
