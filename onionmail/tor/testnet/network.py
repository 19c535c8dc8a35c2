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

Layout: :mod:`onionmail.tor.testnet.nodes` builds the option dicts and launches
and stops the tors, :mod:`onionmail.tor.testnet.keys` generates their keys,
:mod:`onionmail.tor.testnet.checks` probes consensuses and onion services; this
module keeps the public API and re-exports the pieces tests use.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import stem
import stem.control

from onionmail.core.errors import TestnetError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.tor.testnet.checks import (
    POLL_INTERVAL,
    Consensus,
    fetch_consensus,
    onion_roundtrip,
    parse_consensus,
)
from onionmail.tor.testnet.keys import (
    dir_authority_line,
    generate_keys,
    identity_digest_b64,
    read_fingerprint,
    require_tor_tools,
)
from onionmail.tor.testnet.nodes import (
    DIST_DELAY,
    EMPTY_FILE,
    MAX_UNIX_SOCKET_PATH,
    VOTE_DELAY,
    VOTING_INTERVAL,
    NodeInfo,
    NodePlan,
    abort_launch,
    authority_options,
    check_options,
    is_tor,
    launch_all,
    launch_tor,
    node_options,
    own_nodes,
    pick_free_ports,
    pids_of,
    plan_nodes,
    plan_of,
    reap,
    relay_options,
    stop_pids,
    terminate,
    voting_start_offset,
)

__all__ = [
    "DIST_DELAY",
    "VOTE_DELAY",
    "VOTING_INTERVAL",
    "NodeInfo",
    "NodePlan",
    "TestnetState",
    "TestnetStatus",
    "authority_options",
    "check_onion_reachable",
    "check_options",
    "client_tor_options",
    "dir_authority_line",
    "identity_digest_b64",
    "load_testnet",
    "parse_consensus",
    "pick_free_ports",
    "relay_options",
    "require_tor_tools",
    "start_testnet",
    "stop_testnet",
    "testnet_status",
    "voting_start_offset",
]

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

STATE_FILE = "testnet.json"


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


def tor_options_for(testnet: str) -> dict[str, str | list[str]]:
    """The options a tor adds to join the private network at ``testnet`` (``[tor] testnet``),
    or none when it is empty (the public Tor network)."""
    return client_tor_options(load_testnet(Path(testnet))) if testnet else {}


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


def stop_testnet(directory: Path) -> int:
    """Stop the network's tors by PID and wait for them to exit; return how many ran.

    Idempotent: stopping a stopped network returns 0. A directory without a
    state file is an error (:class:`TestnetError`).
    """
    directory = directory.absolute()
    state = load_testnet(directory)
    pids: set[int] = set()
    for node in state.nodes:
        pids |= pids_of(node)
    count = stop_pids(directory, pids)
    log.info("stopped %d tor processes of the private network", count)
    return count


# --- start and status ---------------------------------------------------------------------


def _listed(state: TestnetState, consensus: Consensus | None, fingerprints: dict[str, str]) -> int:
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
        consensuses = [fetch_consensus(node.dir_port) for node in state.authorities]
        listed = min(_listed(state, c, fingerprints) for c in consensuses)
        if listed != reported:
            say(f"waiting for the consensus: {listed}/{expected} relays listed")
            reported = listed
        if listed == expected:
            first = consensuses[0]
            return (first.valid_after if first else None) or "?"
        dead = [n.name for n in state.nodes if not is_tor(n.pid)]
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


def _prepare_directory(directory: Path) -> None:
    """Make DIRECTORY 0700; clear a previous, stopped network; refuse anything else."""
    if (directory / STATE_FILE).exists():
        old = load_testnet(directory)
        if any(is_tor(pid) for node in old.nodes for pid in pids_of(node)):
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
    plans = plan_nodes(directory, authorities, relays)
    state = TestnetState(directory, (), ())
    try:
        say(f"generating keys for {authorities} authorities and {relays} relays")
        keys = generate_keys(plans, directory, tools, deadline)
        lines = tuple(
            dir_authority_line(p.name, p.or_port, p.dir_port, keys[p.name][1], keys[p.name][0])
            for p in plans
            if p.role == "authority"
        )
        state = _state_for(directory, lines, plans, [0] * len(plans))
        save_state(state)
        say(f"launching {len(plans)} tor processes")
        configs = node_options(plans, directory, lines)
        pids = launch_all(plans, configs, directory, tools[0], take_ownership)
        state = _state_for(directory, lines, plans, pids)
        save_state(state)
        if take_ownership:
            own_nodes(directory, state.nodes)
        fingerprints = {name: fp for name, (fp, _) in keys.items()}
        valid_after = _wait_for_consensus(state, fingerprints, deadline, say)
    except BaseException:
        abort_launch(directory, plans)
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


def testnet_status(directory: Path) -> TestnetStatus:
    """Which nodes run, and what the first reachable authority's consensus says."""
    state = load_testnet(directory)
    reap(state.directory)
    running = tuple(n.name for n in state.nodes if any(is_tor(p) for p in pids_of(n)))
    stopped = tuple(n.name for n in state.nodes if n.name not in running)
    fingerprints = {n.name: read_fingerprint(plan_of(n)) for n in state.nodes}
    consensus = None
    for node in state.authorities:
        if node.name in running:
            consensus = fetch_consensus(node.dir_port)
            if consensus is not None:
                break
    return TestnetStatus(
        running=running,
        stopped=stopped,
        relays_listed=_listed(state, consensus, fingerprints),
        relays_expected=len(state.nodes),
        valid_after=consensus.valid_after if consensus else None,
    )


# --- end-to-end check ---------------------------------------------------------------------


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
    process = launch_tor(options, tor, take_ownership=True)
    try:
        controller = stem.control.Controller.from_socket_file(str(control))
        try:
            controller.authenticate()
            onion_roundtrip(controller, deadline)
        finally:
            controller.close()
    except (stem.ControllerError, stem.connection.AuthenticationFailure) as exc:
        raise TestnetError(f"the check's client tor failed: {exc}") from None
    finally:
        terminate(process)
    return time.monotonic() - started
