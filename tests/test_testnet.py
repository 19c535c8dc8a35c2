"""The private Tor network: unit tests of its pieces, then the real thing.

``testnet`` is the session fixture; the module is imported as ``tn`` (pytest would
collect ``testnet_status`` as a test if imported by name).
"""

from __future__ import annotations

import argparse
import json
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from onionmail.cli import testnet as cli_testnet
from onionmail.core.errors import OnionMailError, TestnetError
from onionmail.tor.testnet import network as tn
from onionmail.tor.testnet.network import (
    TestnetState,
    check_onion_reachable,
    client_tor_options,
    identity_digest_b64,
    load_testnet,
    parse_consensus,
    pick_free_ports,
    start_testnet,
)

# --- without tor ------------------------------------------------------------------------------


def test_pick_free_ports_are_distinct_and_bindable() -> None:
    ports = pick_free_ports(8)
    assert len(set(ports)) == 8
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_voting_offset_puts_the_first_vote_after_launch() -> None:
    lead = tn.VOTE_DELAY + tn.DIST_DELAY  # a vote happens this long before its boundary
    for launch in (1000.0, 1003.4, 1009.99, 1234.5):
        offset = tn.voting_start_offset(launch, 3.0)
        assert 0 <= offset < tn.VOTING_INTERVAL
        boundary = next(t for t in range(int(launch), int(launch) + 30) if t % 10 == offset)
        assert launch + 3.0 <= boundary - lead < launch + 4.0


def _plan(tmp_path: Path, role: str) -> tn.NodePlan:
    return tn.NodePlan(
        "auth1" if role == "authority" else "relay1", role, 5000, 5001, tmp_path / "node"
    )


def test_authority_options_are_a_structured_dict(tmp_path: Path) -> None:
    lines = ["auth1 orport=5000 no-v2 v3ident=AB 127.0.0.1:5001 CD"]
    options = tn.authority_options(_plan(tmp_path, "authority"), tmp_path, lines, 7)
    assert options["DirAuthority"] == lines
    assert options["TestingV3AuthVotingStartOffset"] == "7 seconds"
    assert options["V3AuthoritativeDirectory"] == "1"
    assert options["ORPort"] == "127.0.0.1:5000"
    assert options["DirPort"] == "127.0.0.1:5001"
    assert options["GeoIPFile"] == str(tmp_path / "empty")
    assert options["ControlSocket"] == str(tmp_path / "node" / "control.sock")
    assert options["SocksPort"] == "0"
    tn.check_options(options)


def test_relay_options_have_no_dir_cache(tmp_path: Path) -> None:
    options = tn.relay_options(_plan(tmp_path, "relay"), tmp_path, ["x"])
    assert options["DirCache"] == "0"
    assert options["AssumeReachable"] == "1"
    assert "DirPort" not in options and "AuthoritativeDirectory" not in options


def test_option_values_with_newlines_are_refused() -> None:
    with pytest.raises(TestnetError):
        tn.check_options({"Nickname": "x\nSocksPort 9050"})


def test_dir_authority_line_and_identity_digest() -> None:
    fp = "C33B6763EDD4DF93E7CA9A8F1A8768187A9DB4C3"
    line = tn.dir_authority_line("auth1", 1, 2, "B6E3", fp)
    assert line == f"auth1 orport=1 no-v2 v3ident=B6E3 127.0.0.1:2 {fp}"
    assert identity_digest_b64(fp) == "wztnY+3U35PnypqPGodoGHqdtMM"


def test_parse_consensus_counts_only_running_relays() -> None:
    text = (
        "network-status-version 3 microdesc\nvalid-after 2025-01-01 00:00:10\n"
        "r a AAAA 2025-01-01 00:00:00 127.0.0.1 1 0\nm x\ns Fast Running Valid\n"
        "r b BBBB 2025-01-01 00:00:00 127.0.0.1 2 0\nm y\ns Fast Valid\n"
    )
    consensus = parse_consensus(text)
    assert consensus.valid_after == "2025-01-01 00:00:10"
    assert consensus.running == {"AAAA"}


def test_load_testnet_absent_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(TestnetError, match="testnet up"):
        load_testnet(tmp_path)
    (tmp_path / "testnet.json").write_text("{not json")
    with pytest.raises(TestnetError, match="corrupt"):
        load_testnet(tmp_path)


def test_missing_tor_is_reported_with_the_install_hint(tmp_path: Path) -> None:
    with pytest.raises(TestnetError, match="tor not found: install Debian's 'tor' package"):
        tn.require_tor_tools(str(tmp_path))


def test_start_refuses_a_foreign_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "precious").write_text("x")
    with pytest.raises(TestnetError, match="not empty"):
        start_testnet(tmp_path)


def test_start_timeout_stops_everything(tmp_path: Path) -> None:
    with pytest.raises(TestnetError, match="timed out"):
        start_testnet(tmp_path / "net", timeout=0.01)
    assert not list((tmp_path / "net").glob("*/tor.pid"))


# --- with the session's private network ---------------------------------------------------

tor = pytest.mark.tor


def _fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback
        return str(response.read().decode())


@tor
def test_every_authority_consensus_lists_all_relays(testnet: TestnetState) -> None:
    fingerprints = {
        identity_digest_b64((node.data_dir / "fingerprint").read_text().split()[1])
        for node in testnet.nodes
    }
    for node in testnet.authorities:
        text = _fetch(
            f"http://127.0.0.1:{node.dir_port}/tor/status-vote/current/consensus-microdesc"
        )
        assert parse_consensus(text).running >= fingerprints


@tor
def test_status_reports_all_running(testnet: TestnetState) -> None:
    status = tn.testnet_status(testnet.directory)
    assert status.stopped == ()
    assert set(status.running) == {node.name for node in testnet.nodes}
    assert status.relays_listed == status.relays_expected == len(testnet.nodes) == 6
    assert status.valid_after is not None and status.healthy


@tor
def test_state_file_roundtrip(testnet: TestnetState) -> None:
    assert load_testnet(testnet.directory) == testnet
    assert (testnet.directory.stat().st_mode & 0o777) == 0o700
    assert json.loads((testnet.directory / "testnet.json").read_text())["version"] == 1


@tor
def test_client_tor_options(testnet: TestnetState) -> None:
    options = client_tor_options(testnet)
    assert options["TestingTorNetwork"] == "1"
    assert options["DirAuthority"] == list(testnet.dir_authority_lines)
    assert len(testnet.dir_authority_lines) == 3
    assert options["GeoIPFile"] == options["GeoIPv6File"] == str(testnet.directory / "empty")
    assert (testnet.directory / "empty").stat().st_size == 0
    assert options["ShutdownWaitLength"] == "0"
    assert not {"DataDirectory", "SocksPort", "ControlPort", "ORPort"} & options.keys()


@tor
def test_check_onion_reachable(testnet: TestnetState, tmp_path: Path) -> None:
    took = check_onion_reachable(testnet, tmp_path / "check")
    assert 0 < took < 40


@tor
def test_check_onion_reachable_times_out(testnet: TestnetState, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(TestnetError, match="in time"):
        check_onion_reachable(testnet, tmp_path / "check", timeout=0.3)
    assert time.monotonic() - started < 15


# --- the CLI, with a small network of its own --------------------------------------------


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="onionmail")
    cli_testnet.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    try:
        return int(args.func(args))
    except OnionMailError as exc:
        print(f"onionmail: error: {exc}")
        return 1


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


@tor
def test_cli_up_status_down(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = str(tmp_path / "net")
    assert (
        _cli("testnet", "up", "--dir", net, "--authorities", "1", "--relays", "1", "--no-check")
        == 0
    )
    out, err = capsys.readouterr()
    assert "private Tor network up" in out and "consensus after" in out
    assert "generating keys" in err and "2/2 relays listed" in err
    pids = [node.pid for node in load_testnet(Path(net)).nodes]
    assert all(_alive(pid) for pid in pids)

    assert _cli("testnet", "status", "--dir", net) == 0
    assert "2/2 relays listed" in capsys.readouterr().out
    assert _cli("testnet", "up", "--dir", net) == 1
    assert "already running" in capsys.readouterr().out

    assert _cli("testnet", "down", "--dir", net) == 0
    assert "stopped 2 tor processes" in capsys.readouterr().out
    assert not any(_alive(pid) for pid in pids)
    assert _cli("testnet", "down", "--dir", net) == 0
    assert "stopped 0" in capsys.readouterr().out
    assert _cli("testnet", "status", "--dir", net) == 1


def test_cli_help_explains(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _cli("testnet", "up", "--help")
    assert "--no-check" in capsys.readouterr().out
