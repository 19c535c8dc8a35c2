"""The box's tor: launch one of its own (or attach to one), bootstrap, publish the onion.

stem 1.8 is synchronous, so every blocking stem call runs in
``asyncio.to_thread``. Its launch timeout works only in the main thread, so
tor is launched with ``completion_percent=0`` and the box waits for
bootstrap itself, reading ``status/bootstrap-phase`` and reporting progress.

A launched tor is owned by the box (``take_ownership``): it exits when the
box exits, even on SIGKILL, and one long-lived controller is kept for it
(closing an owning controller stops tor). Its data directory is
``BOXDIR/tor`` (0700) and it is controlled through a unix socket there, so
no control port is open to other local users.

The onion service is created from the box's own identity key
(``ADD_ONION ED25519-V3:<expanded key>``) and is ephemeral: tor never
writes the key to disk; the box re-adds it at every start. It is added with
the onion defences of [tor] (``add_onion_command``): tor's proof-of-work
defence where tor offers it to an ephemeral onion (0.4.9.2 and later), and a
cap on streams per client circuit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import stem
import stem.control
import stem.process
import stem.response

from onionmail.config.box import TorSection
from onionmail.core.errors import TorError, TorTimeoutError
from onionmail.core.files import ensure_private_dir, write_private_file
from onionmail.seal.identity import Identity

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

_PHASE = re.compile(r"PROGRESS=(\d+).*?SUMMARY=\"([^\"]*)\"")


PID_FILE = "tor.pid"


def stop_stale_tor(data_dir: Path, grace: float = 10.0) -> bool:
    """Stop a tor that a killed earlier run of this box left behind; True if there was one.

    An owned tor notices its owner's death only by polling (about every 15 s),
    and until then it holds the data directory's lock, so a box restarted
    quickly after SIGKILL could not launch its tor. The pid comes from tor's
    ``PidFile``; it is signalled only if that process has ``DATA_DIR/lock``
    open, i.e. it really is this box's tor.
    """
    try:
        pid = int((data_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return False
    if not _has_open(pid, data_dir / "lock"):
        return False
    log.warning("stopping the tor (pid %d) left running by an earlier run of this box", pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True


def _has_open(pid: int, path: Path) -> bool:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        return any(os.readlink(fd) == str(path) for fd in fd_dir.iterdir())
    except OSError:  # no such process, or not ours to inspect
        return False


class BoxTor:
    """A tor for one box; use ``await start()``, then ``publish()``, finally ``stop()``."""

    def __init__(self, settings: TorSection, data_dir: Path, testnet_options: dict[str, Any]):
        self.settings = settings
        self.data_dir = data_dir
        self.testnet_options = testnet_options
        self.controller: Any = None
        self.process: Any = None
        self.socks_address: tuple[str, int] = ("127.0.0.1", 0)
        self.bootstrap_percent = 0
        self.bootstrap_summary = "not started"
        self.published = False

    async def start(self, progress: Progress | None = None) -> None:
        """Launch or attach, then wait until tor is bootstrapped to 100 %."""
        say = progress or (lambda _msg: None)
        if self.settings.mode == "attach":
            await asyncio.to_thread(self._attach)
        else:
            say("launching tor")
            await asyncio.to_thread(self._launch)
        self.socks_address = await asyncio.to_thread(self._socks_listener)
        await self._wait_bootstrap(say)

    def _launch(self) -> None:
        ensure_private_dir(self.data_dir)
        stop_stale_tor(self.data_dir)
        control = self.data_dir / "control.sock"
        if len(str(control)) > 100:
            raise TorError(f"box directory path too long for tor's control socket: {control}")
        config: dict[str, Any] = {
            "DataDirectory": str(self.data_dir),
            "ControlSocket": str(control),
            "CookieAuthentication": "1",
            "SocksPort": "127.0.0.1:auto ExtendedErrors IsolateSOCKSAuth",
            "AvoidDiskWrites": "1",
            "PidFile": str(self.data_dir / PID_FILE),
        }
        config.update(self.testnet_options)
        try:
            self.process = stem.process.launch_tor_with_config(
                config, completion_percent=0, timeout=None, take_ownership=True
            )
        except OSError as exc:
            raise TorError(f"could not launch tor: {exc} (is Debian's 'tor' installed?)") from None
        self.controller = self._connect_socket(control)

    def _attach(self) -> None:
        if self.settings.control_socket:
            self.controller = self._connect_socket(Path(self.settings.control_socket))
            return
        try:
            controller = stem.control.Controller.from_port("127.0.0.1", self.settings.control_port)
            controller.authenticate()
        except stem.SocketError as exc:
            raise TorError(f"cannot reach tor's control port: {exc}") from None
        except stem.connection.AuthenticationFailure as exc:
            raise TorError(f"tor refused control authentication: {exc}") from None
        self.controller = controller

    @staticmethod
    def _connect_socket(path: Path) -> Any:
        try:
            controller = stem.control.Controller.from_socket_file(str(path))
            controller.authenticate()
        except stem.SocketError as exc:
            raise TorError(f"cannot reach tor's control socket {path}: {exc}") from None
        except stem.connection.AuthenticationFailure as exc:
            raise TorError(f"tor refused control authentication: {exc}") from None
        return controller

    def _socks_listener(self) -> tuple[str, int]:
        if self.settings.mode == "attach" and self.settings.socks_port:
            return ("127.0.0.1", self.settings.socks_port)
        listeners = self.controller.get_listeners(stem.control.Listener.SOCKS)
        for host, port in listeners:
            if host in ("127.0.0.1", "::1"):
                return (host, int(port))
        raise TorError("tor has no SOCKS listener on loopback; set [tor] socks_port")

    async def _wait_bootstrap(self, say: Progress) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.bootstrap_timeout
        last = -1
        while True:
            try:
                phase = await asyncio.to_thread(self.controller.get_info, "status/bootstrap-phase")
            except (stem.ControllerError, stem.SocketError) as exc:
                raise TorError(f"tor stopped while bootstrapping: {exc}") from None
            match = _PHASE.search(phase)
            if match:
                self.bootstrap_percent = int(match.group(1))
                self.bootstrap_summary = match.group(2)
            if self.bootstrap_percent != last:
                last = self.bootstrap_percent
                say(f"tor bootstrap {self.bootstrap_percent}%: {self.bootstrap_summary}")
            if self.bootstrap_percent >= 100:
                return
            if loop.time() > deadline:
                raise TorTimeoutError(
                    f"tor did not bootstrap within {self.settings.bootstrap_timeout:g} s "
                    f"(stuck at {self.bootstrap_percent}%: {self.bootstrap_summary}); "
                    "check the network or [tor] testnet, or raise [tor] bootstrap_timeout"
                )
            await asyncio.sleep(0.2)

    def alive(self) -> bool:
        """Whether tor (and the control connection to it) is still there."""
        if self.process is not None and self.process.poll() is not None:
            return False
        return self.controller is not None and bool(self.controller.is_alive())

    async def restart(
        self, identity: Identity, target_port: int, progress: Progress | None = None
    ) -> None:
        """After tor died or was restarted under the box: start (or re-attach) and republish."""
        await self.stop()
        self.published = False
        self.device_service_id = None
        self._device_keys = ()
        self.bootstrap_percent = 0
        self.bootstrap_summary = "restarting"
        await self.start(progress)
        await self.publish(identity, target_port, progress)

    pow_defenses: bool | None = None
    """Whether tor took the proof-of-work defence for the onion; None before publish()."""

    async def publish(
        self, identity: Identity, target_port: int, progress: Progress | None = None
    ) -> None:
        """Publish the box's onion (virtual port 25 -> 127.0.0.1:target_port) and wait for it.

        The onion gets the defences of [tor] (proof of work, streams per
        circuit); see :func:`add_onion_command`.
        """
        say = progress or (lambda _msg: None)
        say("publishing the onion service")
        try:
            service_id = await asyncio.to_thread(
                self._publish, identity.tor_key_blob(), f"127.0.0.1:{target_port}"
            )
        except (stem.ControllerError, stem.SocketError) as exc:
            raise TorError(f"tor refused to create the onion service: {exc}") from None
        if f"{service_id}.onion" != identity.onion_address:
            raise TorError("tor derived a different onion address from the identity key")
        self.published = True
        say("onion service published")

    def _publish(self, key_blob: str, target: str) -> str:
        """ADD_ONION, then wait for a descriptor upload (blocking; run in a thread).

        stem's ``create_ephemeral_hidden_service`` cannot pass the PoW keywords,
        so the command is sent with ``msg`` and the wait for publication is
        done here the way stem does it (listen to HS_DESC before ADD_ONION).
        """
        return self._add_and_wait(lambda: self._add_onion(key_blob, target))

    def _add_and_wait(self, add: Callable[[], str]) -> str:
        """Run ``add`` (an ADD_ONION, returning the service id), then wait for an upload."""
        deadline = time.monotonic() + self.settings.publish_timeout
        events: queue.Queue[Any] = queue.Queue()
        listener = events.put
        self.controller.add_event_listener(listener, stem.control.EventType.HS_DESC)
        try:
            service_id = add()
            self._await_upload(events, service_id, deadline)
        finally:
            self.controller.remove_event_listener(listener)
        return service_id

    async def publish_instance(
        self,
        service_dir: Path,
        master_onion: str,
        target_port: int,
        progress: Progress | None = None,
    ) -> str:
        """Publish this process as one Onionbalance backend of ``master_onion``; its address.

        Clients reach ``master_onion``, whose descriptor Onionbalance makes from the
        introduction points of every backend; each backend is an ordinary onion of its
        own (key in ``service_dir``, made by tor at the first start, kept across
        restarts) that also answers introductions made to the master's descriptor.
        That needs ``HiddenServiceOnionbalanceInstance`` and the ``ob_config`` file
        naming the master, which only tor's configuration carries (ADD_ONION has no
        such flag), so the service is set with SETCONF. The defences of [tor] apply as
        to :meth:`publish`.
        """
        say = progress or (lambda _msg: None)
        say("publishing the onion service (an Onionbalance instance)")
        try:
            service_id = await asyncio.to_thread(
                self._publish_instance, service_dir, master_onion, target_port
            )
        except (stem.ControllerError, stem.SocketError) as exc:
            raise TorError(f"tor refused to create the onion service: {exc}") from None
        self.published = True
        say("onion service published")
        return f"{service_id}.onion"

    def _publish_instance(self, service_dir: Path, master_onion: str, target_port: int) -> str:
        ensure_private_dir(service_dir)  # blocking file work: here, in the worker thread
        write_private_file(
            service_dir / "ob_config", f"MasterOnionAddress {master_onion}\n".encode()
        )
        options: list[tuple[str, str]] = [
            ("HiddenServiceDir", str(service_dir)),
            ("HiddenServicePort", f"{ONION_VIRTUAL_PORT} 127.0.0.1:{target_port}"),
            ("HiddenServiceOnionbalanceInstance", "1"),
        ]
        if self.settings.max_streams_per_circuit:
            options.append(("HiddenServiceMaxStreams", str(self.settings.max_streams_per_circuit)))
            options.append(("HiddenServiceMaxStreamsCloseCircuit", "1"))
        if self.settings.pow_defenses:
            options.append(("HiddenServicePoWDefensesEnabled", "1"))
            options.append(("HiddenServicePoWQueueRate", str(self.settings.pow_queue_rate)))
            options.append(("HiddenServicePoWQueueBurst", str(self.settings.pow_queue_burst)))

        def add() -> str:
            self.controller.set_options(options)
            hostname = (service_dir / "hostname").read_text().strip()
            return hostname.removesuffix(".onion")

        service_id = self._add_and_wait(add)
        self.pow_defenses = self.settings.pow_defenses
        return service_id

    device_service_id: str | None = None
    """The device onion's service id while it is published."""
    _device_keys: tuple[str, ...] = ()

    def _close_rendezvous(self, service_id: str) -> None:
        """Close the onion's open rendezvous circuits (blocking).

        DEL_ONION leaves them open so that streams in flight can finish, and a new
        stream on one reaches the onion added again with the same key: a revoked
        device holding a circuit would keep its access. Every device's sessions are
        cut; the devices still authorized reconnect through the new descriptor.
        """
        for circuit in self.controller.get_circuits():
            if circuit.purpose == "HS_SERVICE_REND" and circuit.rend_query == service_id:
                self.controller.close_circuit(circuit.id)

    async def publish_devices(
        self, identity: Identity, ports: dict[int, str], client_keys: list[str]
    ) -> None:
        """Publish the device onion with exactly ``client_keys`` authorized, replacing the
        one published before; with no key, only remove it.

        v3 client authorization: the descriptor is encrypted to each authorized x25519
        key, so a tor without one cannot even learn the introduction points. tor cannot
        change the clients of a running onion, so a change removes the onion and adds it
        again: its introduction points are new, its open circuits closed, and a device
        whose key was dropped can neither read the new descriptor nor use the old one.
        """
        try:
            service_id = await asyncio.to_thread(
                self._publish_devices, identity.tor_key_blob(), ports, client_keys
            )
        except (stem.ControllerError, stem.SocketError) as exc:
            raise TorError(f"tor refused to create the device onion: {exc}") from None
        if service_id is not None and f"{service_id}.onion" != identity.onion_address:
            raise TorError("tor derived a different onion address from the device key")

    def _publish_devices(
        self, key_blob: str, ports: dict[int, str], client_keys: list[str]
    ) -> str | None:
        dropped = bool(set(self._device_keys) - set(client_keys))
        self._device_keys = tuple(client_keys)
        if self.device_service_id is not None:
            self.controller.msg(f"DEL_ONION {self.device_service_id}")
            if dropped:
                self._close_rendezvous(self.device_service_id)
            self.device_service_id = None
        if not client_keys:
            return None
        command = device_onion_command(key_blob, ports, client_keys, self.settings)

        def add() -> str:
            reply = self.controller.msg(command)
            if not reply.is_ok():
                raise TorError(f"tor refused to create the device onion: {reply}")
            stem.response.convert("ADD_ONION", reply)
            return str(reply.service_id)

        self.device_service_id = self._add_and_wait(add)
        return self.device_service_id

    def _add_onion(self, key_blob: str, target: str) -> str:
        pow_defenses = self.settings.pow_defenses
        reply = self.controller.msg(
            add_onion_command(key_blob, target, self.settings, pow_defenses=pow_defenses)
        )
        if pow_defenses and _refuses_pow_keywords(reply):
            log.warning(
                "tor %s does not offer the proof-of-work defence to an ephemeral onion "
                "(it needs tor 0.4.9.2 or later); publishing the onion without it",
                self.controller.get_version(),
            )
            pow_defenses = False
            reply = self.controller.msg(
                add_onion_command(key_blob, target, self.settings, pow_defenses=False)
            )
        if not reply.is_ok():
            # tor's reply names the refused option; it never echoes the key.
            raise TorError(f"tor refused to create the onion service: {reply}")
        stem.response.convert("ADD_ONION", reply)
        self.pow_defenses = pow_defenses
        return str(reply.service_id)

    def _await_upload(self, events: queue.Queue[Any], service_id: str, deadline: float) -> None:
        # tor announces UPLOAD with the address, but UPLOADED and FAILED only with
        # the directory, so the directories of our UPLOADs are remembered.
        directories: set[str] = set()
        failures: list[str] = []
        while True:
            try:
                event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TorTimeoutError(
                    f"the onion service descriptor was not published within "
                    f"{self.settings.publish_timeout:g} s; raise [tor] publish_timeout"
                ) from None
            directory = event.directory_fingerprint
            if event.action == stem.HSDescAction.UPLOAD and event.address == service_id:
                directories.add(directory)
            elif event.action == stem.HSDescAction.UPLOADED and directory in directories:
                return
            elif event.action == stem.HSDescAction.FAILED and directory in directories:
                failures.append(str(event.reason))
                if len(failures) == len(directories):
                    raise TorError(
                        "tor could not upload the onion service descriptor to any directory "
                        f"({', '.join(failures)})"
                    )

    def status(self) -> dict[str, Any]:
        return {
            "bootstrap_percent": self.bootstrap_percent,
            "bootstrap_summary": self.bootstrap_summary,
            "published": self.published,
        }

    async def stop(self) -> None:
        """Remove the onion and stop tor (if the box launched it)."""
        if self.controller is not None:
            await asyncio.to_thread(self.controller.close)
            self.controller = None
        if self.process is not None:
            proc = self.process
            self.process = None
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait, 10)
            if proc.stdout is not None:
                proc.stdout.close()


ONION_VIRTUAL_PORT = 25


def add_onion_command(
    key_blob: str, target: str, settings: TorSection, *, pow_defenses: bool
) -> str:
    """The ADD_ONION line publishing the box's onion with the defences of ``settings``.

    ``MaxStreams`` with the ``MaxStreamsCloseCircuit`` flag: a client circuit
    opening more streams than that is closed. ``PoWDefensesEnabled`` with
    ``PoWQueueRate`` and ``PoWQueueBurst`` (tor >= 0.4.9.2): the proof-of-work
    defence, when ``pow_defenses``. The line carries the secret key: never log it.
    """
    words = [f"ADD_ONION ED25519-V3:{key_blob}"]
    if settings.max_streams_per_circuit:
        words.append("Flags=MaxStreamsCloseCircuit")
        words.append(f"MaxStreams={settings.max_streams_per_circuit}")
    if pow_defenses:
        words.append("PoWDefensesEnabled=1")
        words.append(f"PoWQueueRate={settings.pow_queue_rate}")
        words.append(f"PoWQueueBurst={settings.pow_queue_burst}")
    words.append(f"Port={ONION_VIRTUAL_PORT},{target}")
    return " ".join(words)


def device_onion_command(
    key_blob: str, ports: dict[int, str], client_keys: list[str], settings: TorSection
) -> str:
    """The ADD_ONION line of the device onion: client authorization for each of
    ``client_keys`` (x25519, base32), ``ports`` (virtual port -> ``127.0.0.1:port`` or
    ``unix:/path``), the streams-per-circuit cap of [tor]. It carries the secret key."""
    flags = ["V3Auth"]
    words = [f"ADD_ONION ED25519-V3:{key_blob}"]
    if settings.max_streams_per_circuit:
        flags.append("MaxStreamsCloseCircuit")
        words.append(f"MaxStreams={settings.max_streams_per_circuit}")
    words.insert(1, "Flags=" + ",".join(flags))
    words += [f"Port={virtual},{target}" for virtual, target in sorted(ports.items())]
    words += [f"ClientAuthV3={key}" for key in client_keys]
    return " ".join(words)


def _refuses_pow_keywords(reply: Any) -> bool:
    """tor before 0.4.9.2: ``512 ... Unrecognized keyword argument "PoWDefensesEnabled"``."""
    return not reply.is_ok() and 'Unrecognized keyword argument "PoW' in str(reply)
