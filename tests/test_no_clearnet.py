"""No DNS, no clearnet: a box talks only to its tor and to loopback.

Two proofs on the real private Tor network:

1. **Syscall audit.** Two boxes run as ``onionmail run`` under ``strace -f``
   while they exchange mail both ways over onion services. Every socket
   address they used is checked (:mod:`tests.syscall_audit`): loopback or
   ``AF_UNIX`` only, nothing on port 53, no name service socket, and
   ``/etc/resolv.conf`` never opened. The box's tor is in the trace too: the
   box launches and owns it (it dies with the box), so its sockets count as
   the box's. Here every relay is on 127.0.0.1, so tor passes the same rule;
   on the public network tor's connections to relays are the one clearnet
   path a box has, and tor itself resolves no names (onion addresses need no
   DNS). The box's Python is held to a stricter rule: it opens none of the
   name service files either (no host name is looked up at all).
2. **Network namespace.** ``onionmail demo`` (a private Tor network, two
   boxes, a message each way) runs in a fresh network namespace that has only
   ``lo``. Where (1) shows what the box tries, this shows it needs nothing else.

``strace`` missing fails the tests (Debian package ``strace``), never skips them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.box_process import RunningBox, start_box, submit, wait_for_mail
from tests.leaks import host_identity_in
from tests.syscall_audit import Audit, read_trace, strace_command

REPO = Path(__file__).resolve().parent.parent


# --- the audit itself: canned lines, and a real look-up it must catch --------------------

CANNED = Path(__file__).parent / "data" / "strace" / "box-and-tor.strace"
"""A box's Python, a thread of it and its tor, as ``strace -f`` prints them."""


def test_audit_reads_canned_strace_lines() -> None:
    audit = read_trace(CANNED)
    assert audit.programs == {100: "python3", 102: "tor"}
    assert [str(e) for e in audit.endpoints] == [
        "python3[100] connect AF_UNIX /box/tor/control.sock",
        "python3[101] connect AF_INET 127.0.0.1:9050",
        "python3[100] bind AF_INET6 ::1:0",
        "tor[102] connect AF_INET 127.0.0.1:5001",
        "tor[102] sendto AF_NETLINK",
    ]
    assert audit.violations() == []
    assert audit.name_service_files == [("tor", "/etc/hosts")]


def inet(port: int, address: str) -> str:
    return f'{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr("{address}")}}'


def inet6(port: int, address: str) -> str:
    return (
        f"{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_flowinfo=htonl(0), "
        f'inet_pton(AF_INET6, "{address}", &sin6_addr), sin6_scope_id=0}}'
    )


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"connect(3, {inet(53, '127.0.0.53')}, 16) = 0", "port 53"),
        (f"connect(3, {inet(25, '192.0.2.1')}, 16) = 0", "clearnet"),
        (f"bind(3, {inet(1587, '0.0.0.0')}, 16) = 0", "beyond loopback"),
        (f"connect(3, {inet6(443, '2001:db8::1')}, 28) = 0", "clearnet"),
        (f"connect(3, {inet6(25, '::ffff:127.0.0.1')}, 28) = 0", ""),
        (f"sendmsg(3, {{msg_name={inet(53, '10.0.0.1')}, msg_namelen=16}}, 0) = 30", "port 53"),
        ('connect(3, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1', "nscd"),
        ('openat(AT_FDCWD, "/etc/resolv.conf", O_RDONLY|O_CLOEXEC) = 3', "resolver"),
        ("connect(3, {sa_family=AF_PACKET, sll_protocol=htons(ETH_P_ALL)}, 20) = 0", "family"),
    ],
)
def test_audit_flags_each_kind_of_leak(tmp_path: Path, line: str, reason: str) -> None:
    trace = tmp_path / "leak.strace"
    trace.write_text(f"200 {line}\n")
    violations = read_trace(trace).violations()
    if not reason:  # the one allowed line: v4-mapped loopback
        assert violations == []
        return
    (violation,) = violations
    assert reason in violation


LOOKUP_AND_CONNECT = """
import socket, threading
def look_up():
    try:
        socket.getaddrinfo("onionmail-canary.invalid", 25)
    except OSError:
        pass
worker = threading.Thread(target=look_up)
worker.start()
worker.join()
sock = socket.socket()
sock.settimeout(0.2)
try:
    sock.connect(("192.0.2.1", 25))
except OSError:
    pass
"""


def test_audit_catches_a_real_name_look_up_and_a_clearnet_connect(tmp_path: Path) -> None:
    """The checker is not vacuous: a real glibc look-up and a real connect are caught."""
    trace = tmp_path / "canary.strace"
    subprocess.run(
        [*strace_command(trace), sys.executable, "-c", LOOKUP_AND_CONNECT], check=True, timeout=60
    )
    violations = "\n".join(read_trace(trace).violations())
    assert "192.0.2.1:25: not loopback" in violations
    assert "/etc/resolv.conf" in violations or "nscd" in violations or ":53:" in violations


# --- two traced boxes on the private Tor network ----------------------------------------


def _stop_traced(box: RunningBox) -> None:
    """SIGTERM the box itself (strace's child), so its shutdown is traced too; then strace ends."""
    status = box.new.box_dir / "run" / "status.json"
    if box.process.poll() is None and status.exists():
        pid = int(json.loads(status.read_text())["pid"])
        try:
            os.kill(pid, signal.SIGTERM)
            box.process.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    box.stop()


@pytest.mark.tor
def test_boxes_make_no_dns_query_and_no_clearnet_connection(
    testnet: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("traced")
    traces = {name: root / f"{name}.strace" for name in ("alice", "bob")}
    boxes: dict[str, RunningBox] = {}
    try:
        for name, trace in traces.items():
            boxes[name] = start_box(
                root, name, testnet.directory, wrapper=strace_command(trace), timeout=120
            )
        alice, bob = boxes["alice"], boxes["bob"]
        asyncio.run(submit(alice, bob.address, "traced", "over onion services\r\n"))
        (to_bob,) = wait_for_mail(bob.maildir, 1)
        asyncio.run(submit(bob, alice.address, "Re: traced", "and back\r\n"))
        (to_alice,) = wait_for_mail(alice.maildir, 1)
    finally:
        for box in boxes.values():
            _stop_traced(box)

    for message in (to_bob, to_alice):
        assert b"onionmail=pass" in message  # sealed, box to box
        assert b"\nReceived:" not in message and not message.startswith(b"Received:")
        assert host_identity_in(message) == []
    for name, trace in traces.items():
        audit = read_trace(trace)
        _assert_trace_is_real(name, audit)
        assert audit.violations() == [], f"{name}:\n" + "\n".join(audit.violations())
        python_lookups = [path for prog, path in audit.name_service_files if prog != "tor"]
        assert python_lookups == [], f"{name}'s Python looked a name up: {python_lookups}"


def _assert_trace_is_real(name: str, audit: Audit) -> None:
    """The trace followed the box and its tor: the checks above are not vacuous."""
    programs = set(audit.programs.values())
    assert "tor" in programs and any(p.startswith("python") for p in programs), programs
    box = [e for e in audit.endpoints if e.program.startswith("python")]
    tor = audit.of("tor")
    # the box: its tor's SOCKS port (deliveries), its listeners on loopback
    assert any(e.call == "connect" and e.address == "127.0.0.1" for e in box), name
    assert any(e.call == "bind" and e.address == "127.0.0.1" for e in box), name
    # tor: the private network's relays (a client may keep to one guard and a
    # directory mirror, so how many distinct relays it reaches varies)
    assert {e.port for e in tor if e.call == "connect" and e.family == "AF_INET"}, name


# --- a network namespace with only loopback ---------------------------------------------


def _unshare_net() -> list[str]:
    """``unshare --net`` (as root) or ``unshare --map-root-user --net``, whichever works."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare is not installed (Debian package util-linux)", pytrace=False)
    tried = []
    for command in ([unshare, "--net"], [unshare, "--map-root-user", "--net"]):
        probe = subprocess.run([*command, "true"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return command
        tried.append(f"{' '.join(command)}: {probe.stderr.strip()}")
    pytest.skip("this system allows no new network namespace: " + "; ".join(tried))


@pytest.mark.tor
@pytest.mark.timeout(300)
def test_demo_works_in_a_network_namespace_with_only_loopback(tmp_path: Path) -> None:
    loopback_only = [sys.executable, "-m", "tests.loopback_only"]
    demo = [
        sys.executable,
        "-m",
        "onionmail.cli",
        "demo",
        "--work-dir",
        str(tmp_path / "demo"),
    ]
    result = subprocess.run(
        [*_unshare_net(), "--", *loopback_only, *demo],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = result.stdout + result.stderr
    assert "network interfaces: lo\n" in result.stderr, output[-3000:]
    assert result.returncode == 0, output[-3000:]
    assert "RESULT: both messages arrived intact" in output
