"""Two gateway instances behind one onion with Onionbalance: real tor, PostgreSQL, Postfix.

One world for the module (the tests run in file order and build on each other):

* the private Tor network (session fixture) and a private PostgreSQL cluster;
* Knot + a validating Unbound serving ``clear.test``, whose MX is a private Postfix;
* ``gw-a`` made by ``onionmail-gateway init``, ``gw-b`` a copy of its ``keys/``: both
  run with ``[onion] onionbalance_instance`` and the same ``[storage] url``, each with
  its own tor and backend onion;
* Debian's Onionbalance (tests/onionbalance_child.py: its testnet arithmetic for this
  network's voting interval) on a client tor, publishing the gateway's onion from the
  file ``onionmail-gateway onionbalance-config`` wrote;
* the box ``alice``, which knows only the gateway's onion.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import smtplib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

from gateway.registry import APPROVED, Registry
from gateway.storage import Database
from onionmail.config.reference import toml_value
from onionmail.tor.testnet.network import VOTING_INTERVAL, client_tor_options
from tests.box_process import (
    ClientTor,
    RunningBox,
    configure,
    create_test_box,
    free_port,
    run_box,
    start_client_tor,
    stop_process,
    submit,
)
from tests.dns_server import running_dns
from tests.gateway_process import cli, gateway_init, start_registration
from tests.gateway_wire import spawn_gateway, wait_gateway
from tests.postfix import Postfix, postfix_for_domain
from tests.postgres import private_postgres
from tests.test_gateway_flow import (
    CLEAR_DOMAIN,
    MX_NAME,
    ZONES,
    mail_from,
    postfix_messages,
    wait_box_mail,
)

pytestmark = pytest.mark.tor

GW_DOMAIN = "gw.test"
SYSTEM_PYTHON = "/usr/bin/python3"
"""The interpreter Debian's onionbalance package is installed for."""


@dataclass
class Instance:
    name: str
    gw_dir: Path
    process: subprocess.Popen[str]
    stderr: list[str]
    backend: str = ""
    smtp_port: int = 0
    metrics: str = ""

    def counter(self, name: str) -> float:
        """A counter of this instance's /metrics (0 when absent)."""
        text = urllib.request.urlopen(self.metrics, timeout=10).read().decode()
        found = re.search(rf"^onionmail_gateway_{name}_total(?:{{[^}}]*}})? (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    def wait_counter(self, name: str, at_least: float, timeout: float = 15) -> float:
        """The counter once it reaches ``at_least`` (it is counted after the peer's reply)."""
        deadline = time.monotonic() + timeout
        while (value := self.counter(name)) < at_least and time.monotonic() < deadline:
            time.sleep(0.2)
        return value


@dataclass
class World:
    root: Path
    gw_onion: str
    db_url: str
    instances: dict[str, Instance]
    postfix: Postfix
    alice: RunningBox
    balancer: subprocess.Popen[str]
    balancer_log: Path
    ob_tor: ClientTor
    register_output: str
    config_text: dict[str, str] = field(default_factory=dict)


def _config(testnet_dir: Path, smtp_port: int, dns: Any, mx_port: int, ca: Path, db: str) -> str:
    """An instance's gateway.toml: the shared database, Onionbalance's backend."""
    sections: dict[str, dict[str, Any]] = {
        "gateway": {"domain": GW_DOMAIN, "require_approval": False},
        "smtp": {"port": smtp_port},
        "dns": {"resolver": dns.resolver_host, "port": dns.resolver_port},
        "outbound": {"ca_file": str(ca), "mx_port": mx_port, "allow_private_mx": True},
        "tor": {"testnet": str(testnet_dir)},
        "delivery": {"retry_initial": 2.0},
        "metrics": {"listen": "127.0.0.1:0"},
        "storage": {"url": db},
        "onion": {"onionbalance_instance": True},
    }
    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in keys.items())
        for name, keys in sections.items()
    )


def start_instance(name: str, gw_dir: Path) -> Instance:
    process, stderr = spawn_gateway(gw_dir)
    printed = wait_gateway(process, stderr, timeout=120)
    smtp_port = int(printed["smtp"].rsplit(":", 1)[1])
    return Instance(
        name, gw_dir, process, stderr, printed["instance onion"], smtp_port, printed["metrics"]
    )


def kill_instance(instance: Instance) -> None:
    """SIGKILL the gateway and its tor, as the loss of its machine would."""
    pid_file = instance.gw_dir / "tor" / "tor.pid"
    tor_pid = int(pid_file.read_text()) if pid_file.exists() else 0
    instance.process.kill()
    stop_process(instance.process)  # reaps it and closes its pipes
    if tor_pid:
        try:
            os.kill(tor_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_balancer(
    world_root: Path, gw_dir: Path, backends: list[str], ob_tor: ClientTor
) -> tuple[subprocess.Popen[str], Path]:
    out = world_root / "onionbalance"
    written = subprocess.run(
        cli("gateway.cli", "onionbalance-config", "--dir", str(gw_dir), "--out", str(out))
        + [arg for backend in backends for arg in ("--instance", backend)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert written.returncode == 0, written.stderr
    assert (out / "gateway.key").stat().st_mode & 0o077 == 0
    log = world_root / "onionbalance.log"
    with log.open("w") as sink:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [SYSTEM_PYTHON, str(Path(__file__).with_name("onionbalance_child.py"))]
            + [str(VOTING_INTERVAL), "-c", str(out / "config.yaml")]
            + ["-s", str(ob_tor.control_socket), "--is-testnet", "-v", "info"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    return process, log


@pytest.fixture(scope="module")
def world(testnet: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    found = subprocess.run([SYSTEM_PYTHON, "-c", "import onionbalance"], capture_output=True)
    assert found.returncode == 0, "Debian's onionbalance is not installed (make system-deps)"
    root = tmp_path_factory.mktemp("gw-balance")
    ca = trustme.CA()
    cafile = root / "ca.pem"
    ca.cert_pem.write_to_path(str(cafile))
    gw_a, gw_b = root / "gw-a", root / "gw-b"
    with (
        private_postgres(root / "pg") as pg,
        running_dns(ZONES, root / "dns") as dns,
        postfix_for_domain(
            CLEAR_DOMAIN, tls=ca.issue_cert(MX_NAME), known_users=["bob"]
        ) as postfix,
    ):
        db_url = pg.create_database("gateway")
        gw_onion = gateway_init(gw_a, GW_DOMAIN)
        gw_b.mkdir(mode=0o700)
        shutil.copytree(gw_a / "keys", gw_b / "keys")
        texts = {}
        for name, gw_dir in (("a", gw_a), ("b", gw_b)):
            texts[name] = _config(testnet.directory, free_port(), dns, postfix.port, cafile, db_url)
            (gw_dir / "gateway.toml").write_text(texts[name])
        tors: list[ClientTor] = []
        tor_thread = threading.Thread(
            target=lambda: tors.append(
                start_client_tor(root / "ob-tor", client_tor_options(testnet))
            )
        )
        tor_thread.start()
        started: dict[str, Instance] = {}
        threads = [
            threading.Thread(target=lambda n=n, d=d: started.update({n: start_instance(n, d)}))
            for n, d in (("a", gw_a), ("b", gw_b))
        ]
        for thread in threads:
            thread.start()
        new = create_test_box(
            root / "alice", "alice", testnet=testnet.directory, submission_port=0, retry_initial=2.0
        )
        # A killed instance's streams may stay open without an answer (as a lost machine's
        # would): alice notices a silent peer after smtp_timeout (120 s by default, as long
        # as the tests wait for her mail) and takes a new circuit, whose stream may take up
        # to socks_timeout (60 s) to open. Then she goes on through the other instance.
        configure(new, {"delivery.smtp_timeout": 30.0, "tor.socks_timeout": 30.0})
        for thread in threads:
            thread.join(150)
        tor_thread.join(90)
        balancer: subprocess.Popen[str] | None = None
        alice: RunningBox | None = None
        try:
            assert set(started) == {"a", "b"}, "an instance did not start"
            assert tors, "Onionbalance's tor did not start"
            backends = [started["a"].backend, started["b"].backend]
            balancer, balancer_log = start_balancer(root, gw_a, backends, tors[0])
            # Registered through the gateway's onion, which only Onionbalance publishes.
            register = start_registration(new.box_dir, gw_onion)
            out, err = register.communicate(timeout=150)
            assert register.returncode == 0, err + balancer_log.read_text()[-3000:]
            alice = run_box(new, verbose=True)  # its delivery log, for a failure's message
            world = World(
                root,
                gw_onion,
                db_url,
                started,
                postfix,
                alice,
                balancer,
                balancer_log,
                tors[0],
                out + err,
                texts,
            )
            yield world
            alice = world.alice
        finally:
            if alice is not None:
                alice.stop()
            if balancer is not None:
                stop_process(balancer)
            for instance in started.values():
                stop_process(instance.process)
            for tor in tors:
                tor.stop()


def send_clearnet(instance: Instance, token: str) -> bool:
    """A clearnet server's message for alice to ``instance``'s MX port; True on 250."""
    message = mail_from(f"bob@{CLEAR_DOMAIN}", f"alice@{GW_DOMAIN}", token, f"body {token}")
    try:
        with smtplib.SMTP("127.0.0.1", instance.smtp_port, "mx.clear.test", timeout=30) as smtp:
            smtp.sendmail(f"bob@{CLEAR_DOMAIN}", [f"alice@{GW_DOMAIN}"], message)
        return True
    except (smtplib.SMTPException, OSError):
        return False


def delivery_log(lines: list[str]) -> list[str]:
    """The last 60 lines of a box's log, without stem's (its controller library's) own."""
    return [line for line in lines if " stem: " not in line][-60:]


def wait_postfix_all(postfix: Postfix, tokens: list[str], timeout: float, log: str = "") -> None:
    """Until every token is in Postfix's mail; on failure, says how many are not and ``log``
    (what the box and the gateway wrote meanwhile)."""
    deadline = time.monotonic() + timeout
    missing = set(tokens)
    while missing and time.monotonic() < deadline:
        found = b"".join(postfix_messages(postfix))
        missing = {t for t in missing if t.encode() not in found}
        time.sleep(0.5)
    assert not missing, f"{len(missing)} of {len(tokens)} never reached Postfix:\n{log}"


def test_the_box_registered_through_the_onion_onionbalance_publishes(world: World) -> None:
    """Neither instance publishes the gateway's onion itself: only Onionbalance's
    descriptor leads there, and the registration it led to is in the shared database."""
    assert world.gw_onion not in (world.instances["a"].backend, world.instances["b"].backend)
    for instance in world.instances.values():
        status = json.loads((instance.gw_dir / "run" / "status.json").read_text())
        assert status["onion"] == world.gw_onion and status["instance_onion"] == instance.backend
    db = Database(world.db_url, world.root / "unused")
    try:
        entry = Registry(db).get("alice")
    finally:
        db.close()
    assert entry is not None and entry.state == APPROVED
    assert entry.box == world.alice.address
    served = sum(i.counter("registrations") for i in world.instances.values())
    assert served == 1


def test_clearnet_mail_reaches_the_box_through_either_instance(world: World) -> None:
    """Each instance's MX takes mail for alice and delivers it over tor, sealed to the
    mail key alice showed whichever instance she registered with (shared storage)."""
    tokens = {name: f"Via{name.upper()}{secrets.token_hex(5)}" for name in world.instances}
    for name, instance in world.instances.items():
        assert send_clearnet(instance, tokens[name])
    for name, token in tokens.items():
        wait_box_mail(world.alice, token)
        assert world.instances[name].wait_counter("box_deliveries", 1) >= 1


def test_the_box_s_mail_leaves_through_the_instance_its_circuit_reached(world: World) -> None:
    token = f"Out{secrets.token_hex(6)}"
    asyncio.run(submit(world.alice, f"bob@{CLEAR_DOMAIN}", token, "to the clearnet"))
    wait_postfix_all(world.postfix, [token], 90)
    relayed = {name: i.counter("relayed") for name, i in world.instances.items()}
    assert sum(relayed.values()) == 1, relayed


def test_an_instance_killed_under_load_loses_no_acknowledged_mail(world: World) -> None:
    """Under load from both sides, the instance that carries alice's mail is killed with
    its tor (a lost machine). alice's mail goes on through the other instance; what the
    killed one acknowledged (clearnet mail for alice, alice's mail for the clearnet) is
    delivered once it is back: its queue is on its disk (docs/scale-out.md)."""
    carrier = max(world.instances.values(), key=lambda i: i.counter("relayed"))
    other = next(i for i in world.instances.values() if i is not carrier)
    outbound = [f"Load{n}x{secrets.token_hex(4)}" for n in range(8)]
    inbound = [f"In{n}x{secrets.token_hex(4)}" for n in range(8)]
    acknowledged: list[str] = []

    def clearnet_load() -> None:
        for token in inbound:
            if send_clearnet(carrier, token):
                acknowledged.append(token)

    async def box_load(tokens: list[str]) -> None:
        for token in tokens:
            await submit(world.alice, f"bob@{CLEAR_DOMAIN}", token, "under load")

    before = carrier.counter("relayed")
    loader = threading.Thread(target=clearnet_load)
    loader.start()
    asyncio.run(box_load(outbound[:4]))
    carrier.wait_counter("relayed", before + 1)
    kill_instance(carrier)
    loader.join(60)
    assert acknowledged, "the killed instance acknowledged nothing: no load reached it"
    # Mail alice sends now can only leave through the instance left.
    asyncio.run(box_load(outbound[4:]))
    wait_postfix_all(
        world.postfix,
        outbound[4:],
        120,
        "".join(delivery_log(world.alice.stderr_lines))
        + "-- the instance left:\n"
        + "".join(other.stderr[-30:]),
    )
    assert other.counter("relayed") >= 4
    # The lost instance comes back with its disk and delivers what it acknowledged:
    # clearnet mail for alice, and alice's mail it took before it was killed.
    back = start_instance(carrier.name, carrier.gw_dir)
    world.instances[carrier.name] = back
    for token in acknowledged:
        wait_box_mail(world.alice, token, timeout=120)
    wait_postfix_all(world.postfix, outbound, 120)
