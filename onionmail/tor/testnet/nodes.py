"""The tors of a private network: their torrc option dicts, launching and stopping them.

Every tor gets a structured option dict (:func:`authority_options`,
:func:`relay_options`) handed to ``stem.process.launch_tor_with_config``;
:func:`check_options` refuses values that could smuggle in extra torrc lines.
Stopping is by PID, and a PID is only signalled when ``/proc`` says it is a tor.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stem
import stem.control
import stem.process

from onionmail.core.errors import TestnetError

log = logging.getLogger(__name__)

TorOptions = dict[str, str | list[str]]

EMPTY_FILE = "empty"
VOTING_INTERVAL = 10
"""Seconds between consensuses; 20 is stable too, at half the CPU."""
VOTE_DELAY = 2
DIST_DELAY = 2
FIRST_VOTE_AFTER = 3.0
"""Seconds from launch to the first vote. Relays upload their descriptors ~1-2 s after
launch; with 3 s the first consensus listed all 6 nodes ~8 s after launch in every run
measured here (2 s worked too, with less margin)."""
STOP_TIMEOUT = 10.0
MAX_UNIX_SOCKET_PATH = 100

# Controllers that own tors (take_ownership=True) and the Popen objects of
# tors launched by this process, both by network directory, until stop.
_registry_lock = threading.Lock()
_controllers: dict[Path, list[Any]] = {}
_processes: dict[Path, list[subprocess.Popen[bytes]]] = {}


@dataclass(frozen=True)
class NodeInfo:
    """One tor of the network."""

    name: str
    role: str
    """``authority`` or ``relay``."""
    pid: int
    or_port: int
    dir_port: int
    """0 for relays (``DirCache 0``, no DirPort)."""
    control_socket: Path
    data_dir: Path


@dataclass(frozen=True)
class NodePlan:
    """A node before launch: where it lives and which ports it gets."""

    name: str
    role: str
    or_port: int
    dir_port: int
    data_dir: Path

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "control.sock"


# --- plans and option dicts ---------------------------------------------------------------


def pick_free_ports(count: int) -> list[int]:
    """Return ``count`` distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def voting_start_offset(launch_time: float, first_vote_after: float = FIRST_VOTE_AFTER) -> int:
    """``TestingV3AuthVotingStartOffset`` putting the first vote ``first_vote_after`` s out.

    A consensus becomes valid at an interval boundary ``T`` (``T`` is congruent
    to the offset modulo the interval); authorities vote at
    ``T - VOTE_DELAY - DIST_DELAY``.
    """
    boundary = math.ceil(launch_time + first_vote_after + VOTE_DELAY + DIST_DELAY)
    return boundary % VOTING_INTERVAL


def _base_options(plan: NodePlan, directory: Path, dir_authorities: Sequence[str]) -> TorOptions:
    empty = str(directory / EMPTY_FILE)
    return {
        "TestingTorNetwork": "1",
        "DirAuthority": list(dir_authorities),
        "DataDirectory": str(plan.data_dir),
        "PidFile": str(plan.data_dir / "tor.pid"),
        "ControlSocket": str(plan.control_socket),
        "CookieAuthentication": "1",
        "Log": ["notice stdout", f"notice file {plan.data_dir / 'notice.log'}"],
        "Nickname": plan.name,
        "Address": "127.0.0.1",
        "ORPort": f"127.0.0.1:{plan.or_port}",
        "SocksPort": "0",
        "ExitRelay": "0",
        "AssumeReachable": "1",
        "GeoIPFile": empty,
        "GeoIPv6File": empty,
        "ShutdownWaitLength": "0",
        "__ReloadTorrcOnSIGHUP": "0",
    }


def authority_options(
    plan: NodePlan, directory: Path, dir_authorities: Sequence[str], voting_offset: int
) -> TorOptions:
    """Options of a directory authority (keys already in ``plan.data_dir/keys``)."""
    options = _base_options(plan, directory, dir_authorities)
    interval, vote, dist = (
        f"{VOTING_INTERVAL} seconds",
        f"{VOTE_DELAY} seconds",
        f"{DIST_DELAY} seconds",
    )
    options.update(
        {
            "DirPort": f"127.0.0.1:{plan.dir_port}",
            "AuthoritativeDirectory": "1",
            "V3AuthoritativeDirectory": "1",
            "TestingDirAuthVoteGuard": "*",
            "V3AuthVotingInterval": interval,
            "V3AuthVoteDelay": vote,
            "V3AuthDistDelay": dist,
            "TestingV3AuthInitialVotingInterval": interval,
            "TestingV3AuthInitialVoteDelay": vote,
            "TestingV3AuthInitialDistDelay": dist,
            "V3AuthNIntervalsValid": "2",
            "TestingV3AuthVotingStartOffset": f"{voting_offset} seconds",
        }
    )
    return options


def relay_options(plan: NodePlan, directory: Path, dir_authorities: Sequence[str]) -> TorOptions:
    """Options of a middle relay: no exit, no directory cache (clients ask authorities)."""
    options = _base_options(plan, directory, dir_authorities)
    options["DirCache"] = "0"
    return options


def check_options(options: TorOptions) -> None:
    for key, value in options.items():
        for item in [value] if isinstance(value, str) else value:
            if "\n" in item or "\r" in item or not item.strip():
                raise TestnetError(f"bad value for tor option {key}: {item!r}")


def plan_nodes(directory: Path, authorities: int, relays: int) -> list[NodePlan]:
    ports = pick_free_ports(2 * authorities + relays)
    plans = [
        NodePlan(
            f"auth{i + 1}", "authority", ports[2 * i], ports[2 * i + 1], directory / f"auth{i + 1}"
        )
        for i in range(authorities)
    ]
    base = 2 * authorities
    plans += [
        NodePlan(f"relay{i + 1}", "relay", ports[base + i], 0, directory / f"relay{i + 1}")
        for i in range(relays)
    ]
    for plan in plans:
        if len(str(plan.control_socket)) > MAX_UNIX_SOCKET_PATH:
            raise TestnetError(f"directory path too long for a unix socket: {plan.control_socket}")
    return plans


def plan_of(node: NodeInfo) -> NodePlan:
    return NodePlan(node.name, node.role, node.or_port, node.dir_port, node.data_dir)


def node_options(
    plans: Sequence[NodePlan], directory: Path, lines: Sequence[str]
) -> list[TorOptions]:
    offset = voting_start_offset(time.time(), FIRST_VOTE_AFTER)
    return [
        authority_options(p, directory, lines, offset)
        if p.role == "authority"
        else relay_options(p, directory, lines)
        for p in plans
    ]


# --- processes ----------------------------------------------------------------------------


def is_tor(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) tor process."""
    if pid <= 0:
        return False
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError as exc:
        raise TestnetError(f"cannot inspect process {pid}: {exc}") from None
    state = stat.rsplit(")", 1)[-1].split()[0]
    return comm == "tor" and state not in ("Z", "X")


def pids_of(node: NodeInfo) -> set[int]:
    pids = {node.pid}
    try:
        pids.add(int((node.data_dir / "tor.pid").read_text().strip() or 0))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable PidFile of %s: %s", node.name, exc)
    return {pid for pid in pids if pid > 0}


def reap(directory: Path) -> None:
    """Collect exit statuses of tors this process launched (no zombies, no warnings)."""
    with _registry_lock:
        processes = list(_processes.get(directory, []))
    for process in processes:
        process.poll()


def _wait_gone(pids: Iterable[int], directory: Path, timeout: float) -> set[int]:
    """Wait until none of ``pids`` is a live tor; return those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive:
        reap(directory)
        alive = {pid for pid in alive if is_tor(pid)}
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return alive


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_pids(directory: Path, pids: set[int]) -> int:
    pids = {pid for pid in pids if is_tor(pid)}
    _signal_all(pids, signal.SIGTERM)
    left = _wait_gone(pids, directory, STOP_TIMEOUT)
    if left:
        log.warning("tor processes %s ignored SIGTERM; killing them", sorted(left))
        _signal_all(left, signal.SIGKILL)
        left = _wait_gone(left, directory, STOP_TIMEOUT)
    _release(directory)
    if left:
        raise TestnetError(f"tor processes {sorted(left)} did not exit")
    return len(pids)


def _release(directory: Path) -> None:
    with _registry_lock:
        controllers = _controllers.pop(directory, [])
        processes = _processes.pop(directory, [])
    for controller in controllers:
        controller.close()
    for process in processes:
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def launch_tor(options: TorOptions, tor: str, take_ownership: bool) -> subprocess.Popen[bytes]:
    """Launch one tor (returns once it logged "Bootstrapped 0%"); no stem timeout off-main."""
    check_options(options)
    try:
        process: subprocess.Popen[bytes] = stem.process.launch_tor_with_config(
            dict(options),
            tor_cmd=tor,
            completion_percent=0,
            timeout=None,
            take_ownership=take_ownership,
        )
    except OSError as exc:
        raise TestnetError(f"tor {options.get('Nickname', '')} failed to start: {exc}") from None
    return process


def _take_ownership(node: NodeInfo) -> Any:
    """Connect to the node's control socket; stem issues TAKEOWNERSHIP on authentication."""
    try:
        controller = stem.control.Controller.from_socket_file(str(node.control_socket))
        controller.authenticate()
    except (stem.SocketError, stem.connection.AuthenticationFailure) as exc:
        raise TestnetError(f"cannot control tor {node.name}: {exc}") from None
    return controller


def own_nodes(directory: Path, nodes: Iterable[NodeInfo]) -> None:
    """Take ownership of every node; keep the controllers until the network is stopped."""
    owned = [_take_ownership(node) for node in nodes]
    with _registry_lock:
        _controllers.setdefault(directory, []).extend(owned)


def launch_all(
    plans: Sequence[NodePlan],
    configs: Sequence[TorOptions],
    directory: Path,
    tor: str,
    take_ownership: bool,
) -> list[int]:
    """Launch every tor concurrently; register each Popen as soon as it exists."""

    def one(options: TorOptions) -> int:
        process = launch_tor(options, tor, take_ownership)
        with _registry_lock:
            _processes.setdefault(directory, []).append(process)
        return process.pid

    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        futures = [pool.submit(one, options) for options in configs]
        return [future.result() for future in futures]


def abort_launch(directory: Path, plans: Sequence[NodePlan]) -> None:
    """Stop whatever a failed start launched: registered Popens and PidFiles."""
    with _registry_lock:
        pids = {process.pid for process in _processes.get(directory, [])}
    for plan in plans:
        node = NodeInfo(plan.name, plan.role, 0, 0, 0, plan.control_socket, plan.data_dir)
        pids |= pids_of(node)
    try:
        stop_pids(directory, pids)
    except TestnetError as exc:
        log.error("could not stop the tors of a failed start: %s", exc)


def terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
