"""A private Tor network on 127.0.0.1, for tests, the demo and ``onionmail testnet``.

Design
------
A network is a directory (0700) that holds everything: ``testnet.json`` (the
:class:`TestnetState`), an empty file used as GeoIP database and as empty
torrc, and one data directory (0700) per tor, with its keys, ``tor.pid``,
``notice.log`` and ``control.sock`` (a unix control socket with cookie
authentication). Nothing listens anywhere but 127.0.0.1.

:func:`start_testnet` does, in order, each step bounded by one deadline:

1. pick free loopback ports (bind port 0, all at once so they differ);
2. generate keys concurrently: ``tor-gencert`` for each authority's v3
   identity, ``tor --list-fingerprint`` for every node's relay identity;
3. build one option dict per node (:func:`authority_options`,
   :func:`relay_options`) and launch every tor concurrently with
   ``stem.process.launch_tor_with_config`` (never a torrc from templates);
4. poll every authority's ``/tor/status-vote/current/consensus-microdesc``
   until it lists every node as Running.

The voting schedule is what makes a cold start fast: a 10 s voting interval
with 2 s vote and distribution delays, and ``TestingV3AuthVotingStartOffset``
chosen at launch so that the first vote happens :data:`FIRST_VOTE_AFTER`
seconds after launch -- late enough that the relays (``AssumeReachable``)
have uploaded their descriptors, early enough to not wait a full interval.

Lifetime: with ``take_ownership=True`` each tor is launched with stem's
``__OwningControllerProcess`` and a control connection that issued
``TAKEOWNERSHIP`` is kept in a module-level registry until
:func:`stop_testnet`; the tors die when the calling process dies. Without
it (``onionmail testnet up``) the tors outlive the caller and are stopped
later by PID, read from the state file and the PidFiles; a PID is only
signalled when ``/proc`` says it is a tor.

Clients (a box's tor) join the network with :func:`client_tor_options`.
:func:`check_onion_reachable` proves the network works end to end: a client
tor publishes an onion service in front of a local echo server and reaches
it through its own SOCKS port.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import socketserver
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import stem
import stem.control
import stem.process
from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from onionmail.errors import TestnetError
from onionmail.fsutil import ensure_private_dir, write_private_file

log = logging.getLogger(__name__)

Progress = Callable[[str], None]
TorOptions = dict[str, str | list[str]]

STATE_FILE = "testnet.json"
EMPTY_FILE = "empty"
VOTING_INTERVAL = 10
"""Seconds between consensuses; 20 is stable too, at half the CPU."""
VOTE_DELAY = 2
DIST_DELAY = 2
FIRST_VOTE_AFTER = 3.0
"""Seconds from launch to the first vote. Relays upload their descriptors ~1-2 s after
launch; with 3 s the first consensus listed all 6 nodes ~8 s after launch in every run
measured here (2 s worked too, with less margin)."""
POLL_INTERVAL = 0.2
HTTP_TIMEOUT = 2.0
STOP_TIMEOUT = 10.0
MAX_UNIX_SOCKET_PATH = 100
INSTALL_HINT = "install Debian's 'tor' package (apt-get install tor)"

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
class TestnetState:
    """A network as persisted in ``DIRECTORY/testnet.json``."""

    __test__ = False  # not a pytest test class despite the name

    directory: Path
    dir_authority_lines: tuple[str, ...]
    """Values for the torrc ``DirAuthority`` option, one per authority."""
    nodes: tuple[NodeInfo, ...]

    @property
    def authorities(self) -> tuple[NodeInfo, ...]:
        return tuple(node for node in self.nodes if node.role == "authority")


@dataclass(frozen=True)
class TestnetStatus:
    """What :func:`testnet_status` found."""

    __test__ = False

    running: tuple[str, ...]
    """Names of the nodes whose tor process is alive."""
    stopped: tuple[str, ...]
    relays_listed: int
    """Nodes listed as Running in the consensus (authorities are relays too)."""
    relays_expected: int
    valid_after: str | None
    """The consensus' ``valid-after`` (UTC), or None without a consensus."""

    @property
    def healthy(self) -> bool:
        return not self.stopped and self.relays_listed == self.relays_expected


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


@dataclass(frozen=True)
class _Consensus:
    valid_after: str | None
    running: frozenset[str]
    """Base64 identity digests (no padding) of relays flagged Running."""


# --- small pure helpers -----------------------------------------------------------------


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


def identity_digest_b64(fingerprint: str) -> str:
    """A hex relay fingerprint as the base64 digest a consensus ``r`` line carries."""
    return base64.b64encode(bytes.fromhex(fingerprint)).decode("ascii").rstrip("=")


def dir_authority_line(
    name: str, or_port: int, dir_port: int, v3ident: str, fingerprint: str
) -> str:
    """The value of one torrc ``DirAuthority`` option."""
    return f"{name} orport={or_port} no-v2 v3ident={v3ident} 127.0.0.1:{dir_port} {fingerprint}"


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


def client_tor_options(state: TestnetState) -> dict[str, str | list[str]]:
    """Options any client tor adds to join the network (the caller adds data dir and ports).

    Clients should also set an explicit ``SocksTimeout``; that choice is theirs.
    """
    empty = str(state.directory / EMPTY_FILE)
    return {
        "TestingTorNetwork": "1",
        "DirAuthority": list(state.dir_authority_lines),
        "GeoIPFile": empty,
        "GeoIPv6File": empty,
        "ShutdownWaitLength": "0",
        "__ReloadTorrcOnSIGHUP": "0",
    }


def check_options(options: TorOptions) -> None:
    for key, value in options.items():
        for item in [value] if isinstance(value, str) else value:
            if "\n" in item or "\r" in item or not item.strip():
                raise TestnetError(f"bad value for tor option {key}: {item!r}")


# --- state file ---------------------------------------------------------------------------


def _state_to_json(state: TestnetState) -> bytes:
    data = {
        "version": 1,
        "dir_authority_lines": list(state.dir_authority_lines),
        "nodes": [
            {
                "name": n.name,
                "role": n.role,
                "pid": n.pid,
                "or_port": n.or_port,
                "dir_port": n.dir_port,
                "control_socket": str(n.control_socket),
                "data_dir": str(n.data_dir),
            }
            for n in state.nodes
        ],
    }
    return (json.dumps(data, indent=2) + "\n").encode()


def save_state(state: TestnetState) -> None:
    write_private_file(state.directory / STATE_FILE, _state_to_json(state))


def load_testnet(directory: Path) -> TestnetState:
    """Read ``DIRECTORY/testnet.json``; :class:`TestnetError` if absent or corrupt."""
    directory = directory.absolute()
    path = directory / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        nodes = tuple(
            NodeInfo(
                name=str(n["name"]),
                role=str(n["role"]),
                pid=int(n["pid"]),
                or_port=int(n["or_port"]),
                dir_port=int(n["dir_port"]),
                control_socket=Path(n["control_socket"]),
                data_dir=Path(n["data_dir"]),
            )
            for n in data["nodes"]
        )
        lines = tuple(str(line) for line in data["dir_authority_lines"])
    except FileNotFoundError:
        raise TestnetError(
            f"no private Tor network in {directory} (no {STATE_FILE}); "
            f"start one with 'onionmail testnet up --dir {directory}'"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TestnetError(f"{path} is unreadable or corrupt: {exc}") from None
    if any(node.role not in ("authority", "relay") for node in nodes) or not lines:
        raise TestnetError(f"{path} is corrupt: bad node role or no authority")
    return TestnetState(directory, lines, nodes)


# --- processes ------------------------------------------------------------------------------


def _is_tor(pid: int) -> bool:
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


def _pids_of(node: NodeInfo) -> set[int]:
    pids = {node.pid}
    try:
        pids.add(int((node.data_dir / "tor.pid").read_text().strip() or 0))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable PidFile of %s: %s", node.name, exc)
    return {pid for pid in pids if pid > 0}


def _reap(directory: Path) -> None:
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
        _reap(directory)
        alive = {pid for pid in alive if _is_tor(pid)}
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


def _stop_pids(directory: Path, pids: set[int]) -> int:
    pids = {pid for pid in pids if _is_tor(pid)}
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


def stop_testnet(directory: Path) -> int:
    """Stop the network's tors by PID and wait for them to exit; return how many ran.

    Idempotent: stopping a stopped network returns 0. A directory without a
    state file is an error (:class:`TestnetError`).
    """
    directory = directory.absolute()
    state = load_testnet(directory)
    pids: set[int] = set()
    for node in state.nodes:
        pids |= _pids_of(node)
    count = _stop_pids(directory, pids)
    log.info("stopped %d tor processes of the private network", count)
    return count


# --- key generation -------------------------------------------------------------------------


def require_tor_tools(search_path: str | None = None) -> tuple[str, str]:
    """Paths of ``tor`` and ``tor-gencert``; :class:`TestnetError` saying how to install them.

    ``search_path`` defaults to ``$PATH`` plus /usr/sbin and /usr/bin (where Debian puts them).
    """
    if search_path is None:
        search_path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])
    found = []
    for tool in ("tor", "tor-gencert"):
        path = shutil.which(tool, path=search_path)
        if path is None:
            raise TestnetError(f"{tool} not found: {INSTALL_HINT}")
        found.append(path)
    return found[0], found[1]


def _run_all(commands: list[tuple[list[str], bytes]], deadline: float, what: str) -> None:
    """Run commands concurrently (each with its stdin bytes); all must succeed by ``deadline``."""
    procs = [
        (
            cmd,
            stdin,
            subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            ),
        )
        for cmd, stdin in commands
    ]
    try:
        for cmd, stdin, proc in procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                output, _ = proc.communicate(stdin, timeout=remaining)
            except subprocess.TimeoutExpired:
                raise TestnetError(f"{what} timed out ({cmd[0]})") from None
            if proc.returncode != 0:
                text = output.decode(errors="replace").strip().splitlines()[-3:]
                raise TestnetError(f"{what} failed ({cmd[0]}): {' | '.join(text)}")
    finally:
        for _, _, proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def _generate_keys(
    plans: Sequence[NodePlan], directory: Path, tools: tuple[str, str], deadline: float
) -> dict[str, tuple[str, str]]:
    """Return ``name -> (relay fingerprint, v3ident or "")`` for every node."""
    tor, gencert = tools
    empty = str(directory / EMPTY_FILE)
    commands: list[tuple[list[str], bytes]] = []
    for plan in plans:
        keys = ensure_private_dir(plan.data_dir / "keys")
        if plan.role == "authority":
            commands.append(
                (
                    [
                        gencert,
                        "--create-identity-key",
                        "--passphrase-fd",
                        "0",
                        "-m",
                        "12",
                        "-i",
                        str(keys / "authority_identity_key"),
                        "-s",
                        str(keys / "authority_signing_key"),
                        "-c",
                        str(keys / "authority_certificate"),
                        "-a",
                        f"127.0.0.1:{plan.dir_port}",
                    ],
                    b"\n",
                )
            )
        commands.append(
            (
                [
                    tor,
                    "--list-fingerprint",
                    "--DataDirectory",
                    str(plan.data_dir),
                    "--ORPort",
                    "1",
                    "-f",
                    empty,
                    "--defaults-torrc",
                    empty,
                    "--quiet",
                ],
                b"",
            )
        )
    _run_all(commands, deadline, "key generation")
    return {plan.name: (_read_fingerprint(plan), _read_v3ident(plan)) for plan in plans}


def _read_fingerprint(plan: NodePlan) -> str:
    text = (plan.data_dir / "fingerprint").read_text().split()
    if len(text) != 2 or len(text[1]) != 40:
        raise TestnetError(f"unexpected fingerprint file of {plan.name}: {text!r}")
    return text[1].upper()


def _read_v3ident(plan: NodePlan) -> str:
    if plan.role != "authority":
        return ""
    cert = (plan.data_dir / "keys" / "authority_certificate").read_text()
    for line in cert.splitlines():
        if line.startswith("fingerprint "):
            return line.split()[1].upper()
    raise TestnetError(f"no fingerprint line in the authority certificate of {plan.name}")


# --- launch and readiness -------------------------------------------------------------------


def _launch(options: TorOptions, tor: str, take_ownership: bool) -> subprocess.Popen[bytes]:
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


def _fetch_consensus(dir_port: int) -> _Consensus | None:
    """The authority's current microdescriptor consensus, or None if it has none yet."""
    url = f"http://127.0.0.1:{dir_port}/tor/status-vote/current/consensus-microdesc"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:  # noqa: S310
            text = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            exc.close()
            return None
        exc.close()
        raise TestnetError(f"authority on port {dir_port} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError):
        return None
    return parse_consensus(text)


def parse_consensus(text: str) -> _Consensus:
    """Extract valid-after and the identities of relays flagged Running."""
    valid_after: str | None = None
    running: set[str] = set()
    identity = ""
    for line in text.splitlines():
        if line.startswith("valid-after "):
            valid_after = line.split(" ", 1)[1].strip()
        elif line.startswith("r "):
            fields = line.split()
            identity = fields[2] if len(fields) > 2 else ""
        elif line.startswith("s ") and identity and "Running" in line.split()[1:]:
            running.add(identity)
    return _Consensus(valid_after, frozenset(running))


def _listed(state: TestnetState, consensus: _Consensus | None, fingerprints: dict[str, str]) -> int:
    if consensus is None:
        return 0
    return sum(identity_digest_b64(fingerprints[n.name]) in consensus.running for n in state.nodes)


def _wait_for_consensus(
    state: TestnetState, fingerprints: dict[str, str], deadline: float, say: Progress
) -> str:
    """Poll every authority until each serves a consensus listing all nodes; return valid-after."""
    expected = len(state.nodes)
    reported = -1
    while True:
        consensuses = [_fetch_consensus(node.dir_port) for node in state.authorities]
        listed = min(_listed(state, c, fingerprints) for c in consensuses)
        if listed != reported:
            say(f"waiting for the consensus: {listed}/{expected} relays listed")
            reported = listed
        if listed == expected:
            first = consensuses[0]
            return (first.valid_after if first else None) or "?"
        dead = [n.name for n in state.nodes if not _is_tor(n.pid)]
        if dead:
            raise TestnetError(
                f"tor {', '.join(dead)} exited; see its notice.log under {state.directory}"
            )
        if time.monotonic() >= deadline:
            raise TestnetError(
                f"no consensus listing all {expected} relays in time ({listed} listed); "
                f"see the notice.log files under {state.directory}"
            )
        time.sleep(POLL_INTERVAL)


def _plan_nodes(directory: Path, authorities: int, relays: int) -> list[NodePlan]:
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


def _prepare_directory(directory: Path) -> None:
    """Make DIRECTORY 0700; clear a previous, stopped network; refuse anything else."""
    if (directory / STATE_FILE).exists():
        old = load_testnet(directory)
        if any(_is_tor(pid) for node in old.nodes for pid in _pids_of(node)):
            raise TestnetError(
                f"a private Tor network is already running in {directory}; "
                f"stop it with 'onionmail testnet down --dir {directory}'"
            )
        for node in old.nodes:
            if node.data_dir.parent == directory:
                shutil.rmtree(node.data_dir, ignore_errors=False)
        (directory / STATE_FILE).unlink()
    elif directory.exists() and any(directory.iterdir()):
        raise TestnetError(
            f"{directory} is not empty and holds no private Tor network; "
            "choose a new or empty directory"
        )
    ensure_private_dir(directory)
    empty = directory / EMPTY_FILE
    empty.touch(mode=0o600, exist_ok=True)


def _node_options(
    plans: Sequence[NodePlan], directory: Path, lines: Sequence[str]
) -> list[TorOptions]:
    offset = voting_start_offset(time.time(), FIRST_VOTE_AFTER)
    return [
        authority_options(p, directory, lines, offset)
        if p.role == "authority"
        else relay_options(p, directory, lines)
        for p in plans
    ]


def _launch_all(
    plans: Sequence[NodePlan],
    configs: Sequence[TorOptions],
    directory: Path,
    tor: str,
    take_ownership: bool,
) -> list[int]:
    """Launch every tor concurrently; register each Popen as soon as it exists."""

    def one(options: TorOptions) -> int:
        process = _launch(options, tor, take_ownership)
        with _registry_lock:
            _processes.setdefault(directory, []).append(process)
        return process.pid

    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        futures = [pool.submit(one, options) for options in configs]
        return [future.result() for future in futures]


def start_testnet(
    directory: Path,
    *,
    authorities: int = 3,
    relays: int = 3,
    timeout: float = 60.0,
    take_ownership: bool = False,
    progress: Progress | None = None,
) -> TestnetState:
    """Start a private network in ``directory`` and block until its consensus lists all relays.

    Raises :class:`TestnetError` on failure, after stopping whatever it started.
    With ``take_ownership`` the tors die with the calling process.
    """
    say = progress or (lambda _msg: None)
    if authorities < 1 or relays < 0:
        raise TestnetError("a private Tor network needs at least one authority")
    tools = require_tor_tools()
    directory = directory.absolute()
    deadline = time.monotonic() + timeout
    _prepare_directory(directory)
    plans = _plan_nodes(directory, authorities, relays)
    state = TestnetState(directory, (), ())
    try:
        say(f"generating keys for {authorities} authorities and {relays} relays")
        keys = _generate_keys(plans, directory, tools, deadline)
        lines = tuple(
            dir_authority_line(p.name, p.or_port, p.dir_port, keys[p.name][1], keys[p.name][0])
            for p in plans
            if p.role == "authority"
        )
        state = _state_for(directory, lines, plans, [0] * len(plans))
        save_state(state)
        say(f"launching {len(plans)} tor processes")
        configs = _node_options(plans, directory, lines)
        pids = _launch_all(plans, configs, directory, tools[0], take_ownership)
        state = _state_for(directory, lines, plans, pids)
        save_state(state)
        if take_ownership:
            owned = [_take_ownership(node) for node in state.nodes]
            with _registry_lock:
                _controllers.setdefault(directory, []).extend(owned)
        fingerprints = {name: fp for name, (fp, _) in keys.items()}
        valid_after = _wait_for_consensus(state, fingerprints, deadline, say)
    except BaseException:
        _abort(directory, plans)
        raise
    log.info("private Tor network ready (consensus valid-after %s)", valid_after)
    return state


def _state_for(
    directory: Path, lines: tuple[str, ...], plans: Sequence[NodePlan], pids: Sequence[int]
) -> TestnetState:
    nodes = tuple(
        NodeInfo(p.name, p.role, pid, p.or_port, p.dir_port, p.control_socket, p.data_dir)
        for p, pid in zip(plans, pids, strict=True)
    )
    return TestnetState(directory, lines, nodes)


def _abort(directory: Path, plans: Sequence[NodePlan]) -> None:
    """Stop whatever a failed start launched: registered Popens and PidFiles."""
    with _registry_lock:
        pids = {process.pid for process in _processes.get(directory, [])}
    for plan in plans:
        node = NodeInfo(plan.name, plan.role, 0, 0, 0, plan.control_socket, plan.data_dir)
        pids |= _pids_of(node)
    try:
        _stop_pids(directory, pids)
    except TestnetError as exc:
        log.error("could not stop the tors of a failed start: %s", exc)


def testnet_status(directory: Path) -> TestnetStatus:
    """Which nodes run, and what the first reachable authority's consensus says."""
    state = load_testnet(directory)
    _reap(state.directory)
    running = tuple(n.name for n in state.nodes if any(_is_tor(p) for p in _pids_of(n)))
    stopped = tuple(n.name for n in state.nodes if n.name not in running)
    fingerprints = {n.name: _read_fingerprint(_plan_of(n)) for n in state.nodes}
    consensus = None
    for node in state.authorities:
        if node.name in running:
            consensus = _fetch_consensus(node.dir_port)
            if consensus is not None:
                break
    return TestnetStatus(
        running=running,
        stopped=stopped,
        relays_listed=_listed(state, consensus, fingerprints),
        relays_expected=len(state.nodes),
        valid_after=consensus.valid_after if consensus else None,
    )


def _plan_of(node: NodeInfo) -> NodePlan:
    return NodePlan(node.name, node.role, node.or_port, node.dir_port, node.data_dir)


# --- end-to-end check -----------------------------------------------------------------------


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(HTTP_TIMEOUT * 5)
        while data := sock.recv(4096):
            sock.sendall(data)


class _EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("echo server: connection ended with an error", exc_info=True)


def check_onion_reachable(state: TestnetState, work_dir: Path, timeout: float = 40.0) -> float:
    """Reach an onion service over the network end to end; return the seconds it took.

    Launches a client tor in ``work_dir`` (0700), publishes an ephemeral v3
    onion service in front of a local echo server, and exchanges bytes with
    it through the client's SocksPort. The tor is stopped before returning.
    """
    started = time.monotonic()
    deadline = started + timeout
    work_dir = ensure_private_dir(work_dir.absolute())
    control = work_dir / "control.sock"
    if len(str(control)) > MAX_UNIX_SOCKET_PATH:
        raise TestnetError(f"directory path too long for a unix socket: {control}")
    options = client_tor_options(state)
    options.update(
        {
            "DataDirectory": str(work_dir),
            "ControlSocket": str(control),
            "CookieAuthentication": "1",
            "SocksPort": "127.0.0.1:auto ExtendedErrors",
            "SocksTimeout": "20 seconds",
            "Log": ["notice stdout", f"notice file {work_dir / 'notice.log'}"],
        }
    )
    tor, _ = require_tor_tools()
    process = _launch(options, tor, take_ownership=True)
    try:
        controller = stem.control.Controller.from_socket_file(str(control))
        try:
            controller.authenticate()
            _roundtrip(controller, deadline)
        finally:
            controller.close()
    except (stem.ControllerError, stem.connection.AuthenticationFailure) as exc:
        raise TestnetError(f"the check's client tor failed: {exc}") from None
    finally:
        _terminate(process)
    return time.monotonic() - started


def _terminate(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _roundtrip(controller: Any, deadline: float) -> None:
    socks_port = _socks_port(controller)
    _wait_bootstrapped(controller, deadline)
    with _EchoServer(("127.0.0.1", 0), _EchoHandler) as server:
        thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
        thread.start()
        try:
            service = controller.create_ephemeral_hidden_service(
                {80: f"127.0.0.1:{server.server_address[1]}"},
                key_content="ED25519-V3",
                discard_key=True,
                await_publication=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )
            _echo_through_tor(socks_port, f"{service.service_id}.onion", deadline)
        except stem.Timeout:
            raise TestnetError("the check's onion service was not published in time") from None
        finally:
            server.shutdown()
            thread.join()


def _socks_port(controller: Any) -> int:
    for host, port in controller.get_listeners(stem.control.Listener.SOCKS):
        if host == "127.0.0.1":
            return int(port)
    raise TestnetError("the check's client tor has no SOCKS listener on 127.0.0.1")


def _wait_bootstrapped(controller: Any, deadline: float) -> None:
    while True:
        phase = controller.get_info("status/bootstrap-phase")
        if "PROGRESS=100" in phase:
            return
        if time.monotonic() >= deadline:
            raise TestnetError(f"the check's client tor did not bootstrap in time: {phase}")
        time.sleep(POLL_INTERVAL / 2)


def _echo_through_tor(socks_port: int, onion: str, deadline: float) -> None:
    """Connect (retrying: 0xF0 right after publication is normal) and check the echo."""
    payload = b"onionmail testnet check " + secrets.token_hex(16).encode()
    attempt = 0
    while True:
        attempt += 1
        user = secrets.token_hex(8)  # fresh credentials: a fresh circuit per attempt
        proxy = Proxy.from_url(f"socks5://{user}:x@127.0.0.1:{socks_port}", rdns=True)
        remaining = deadline - time.monotonic()
        try:
            sock = proxy.connect(onion, 80, timeout=max(1.0, remaining))
        except ProxyConnectionError as exc:
            raise TestnetError(f"the check's client tor refused SOCKS: {exc}") from None
        except (ProxyError, ProxyTimeoutError) as exc:
            code = getattr(exc, "error_code", None)
            log.debug("check attempt %d failed: %s (code %s)", attempt, exc, code)
            if time.monotonic() + POLL_INTERVAL >= deadline:
                raise TestnetError(f"onion service unreachable in time: {exc}") from None
            time.sleep(POLL_INTERVAL)  # back-off between attempts, not a readiness wait
            continue
        with sock:
            try:
                echoed = _exchange(sock, payload, deadline)
            except OSError as exc:
                raise TestnetError(f"the onion connection broke: {exc}") from None
        if echoed != payload:
            raise TestnetError("the onion service echoed something else than was sent")
        log.debug("onion service reached at attempt %d", attempt)
        return


def _exchange(sock: socket.socket, payload: bytes, deadline: float) -> bytes:
    sock.settimeout(max(1.0, deadline - time.monotonic()))
    sock.sendall(payload)
    echoed = b""
    while len(echoed) < len(payload) and (chunk := sock.recv(4096)):
        echoed += chunk
    return echoed
