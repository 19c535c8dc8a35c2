"""Run boxes and client tors for integration tests: real processes, stopped by PID."""

from __future__ import annotations

import asyncio
import contextlib
import mailbox
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosmtplib
import stem.control
import stem.process

from onionmail.box.create import NewBox, create_box
from onionmail.tor.socks import open_tor_stream
from tests.smtp_client import RawSMTP


def take_strangers(box_dir: Path) -> None:
    """Mail from boxes this one does not know goes to INBOX, without a stamp or a limit.

    Boxes in tests that are not about strangers (tests/test_admission*.py are) write
    to each other without having met: by default their mail would wait in Requests
    behind a proof of work. This is the box's own setting (``[inbound] strangers =
    "inbox"``, ``pow_bits = 0``), written into its config, not a test-only path.
    """
    config = box_dir / "onionmail.toml"
    text = config.read_text()
    for line, setting in (
        ('# strangers = "requests"', 'strangers = "inbox"'),
        ("# pow_bits = 9", "pow_bits = 0"),
        ("# stranger_messages_per_hour = 10", "stranger_messages_per_hour = 0"),
        ("# strangers_messages_per_hour = 200", "strangers_messages_per_hour = 0"),
    ):
        assert line in text, line
        text = text.replace(line, setting, 1)
    config.write_text(text)


def create_test_box(box_dir: Path, local_part: str, **options: Any) -> NewBox:
    """:func:`create_box` for tests: a box that takes strangers' mail (:func:`take_strangers`)."""
    new = create_box(box_dir, local_part, **options)
    take_strangers(new.box_dir)
    return new


@dataclass
class RunningBox:
    """An ``onionmail run`` process and what it printed."""

    new: NewBox
    process: subprocess.Popen[str]
    onion: str = ""
    submission_port: int = 0
    stderr_lines: list[str] = field(default_factory=list)
    drain: threading.Thread | None = None

    @property
    def address(self) -> str:
        return self.new.address

    @property
    def maildir(self) -> Path:
        return self.new.box_dir / "mail" / self.new.local_part

    def kill(self) -> None:
        """SIGKILL, as a crash would; the box's tor is left to notice on its own."""
        self.process.kill()
        self.stop()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.drain is not None:
            self.drain.join(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start_box(
    root: Path,
    name: str,
    testnet_dir: Path,
    timeout: float = 90,
    attach_control_socket: Path | None = None,
    submission_port: int = 0,
    wrapper: list[str] | None = None,
    settings: dict[str, int | float | bool] | None = None,
    verbose: bool = False,
    prepare: Callable[[NewBox], None] | None = None,
    strangers_to_inbox: bool = True,
) -> RunningBox:
    """Create a box and run it as ``onionmail run``; return once it printed its ports.

    With ``attach_control_socket`` the box attaches to that running tor instead
    of launching its own; ``wrapper`` goes to :func:`run_box`. ``settings`` sets
    keys the generated config leaves commented out (``{"delivery.smtp_timeout": 30}``);
    ``verbose`` goes to :func:`run_box`; ``prepare`` is called with the new box before it
    runs (``onionmail device add``, say). ``strangers_to_inbox``: :func:`take_strangers`
    (False for a box that holds strangers' mail in Requests behind a stamp, the default
    of a real box).
    """
    new = create_box(
        root / name, name, testnet=testnet_dir, submission_port=submission_port, retry_initial=2.0
    )
    if strangers_to_inbox:
        take_strangers(new.box_dir)
    configure(new, settings or {})
    config = new.box_dir / "onionmail.toml"
    text = config.read_text()
    if attach_control_socket is not None:
        launch_line = next(line for line in text.splitlines() if line.startswith("# mode ="))
        attach = f'mode = "attach"\ncontrol_socket = "{attach_control_socket}"'
        text = text.replace(launch_line, attach)
    config.write_text(text)
    if prepare is not None:
        prepare(new)
    return run_box(new, timeout, wrapper=wrapper, verbose=verbose)


def configure(new: NewBox, settings: dict[str, int | float | bool]) -> None:
    """Set keys that the box's generated config leaves commented out, by their dotted
    names (``{"delivery.smtp_timeout": 30}``)."""
    config = new.box_dir / "onionmail.toml"
    text = config.read_text()
    for dotted, value in settings.items():
        section, key = dotted.split(".")
        head, header, rest = text.partition(f"\n[{section}]\n")
        commented = next(line for line in rest.splitlines() if line.startswith(f"# {key} = "))
        rendered = str(value).lower() if isinstance(value, bool) else repr(value)
        text = head + header + rest.replace(commented, f"{key} = {rendered}", 1)
    config.write_text(text)


def run_box(
    new: NewBox, timeout: float = 90, wrapper: list[str] | None = None, *, verbose: bool = False
) -> RunningBox:
    """Run the existing box ``new`` as ``onionmail run`` (again, after a stop or a kill).

    ``wrapper`` is put before the command (``["strace", "-f", "-o", FILE]``); then
    ``process`` is the wrapper, and the box is its child. ``verbose`` adds ``-v``
    (the log at every level).
    """
    cli = [sys.executable, "-m", "onionmail.cli", *(["-v"] if verbose else [])]
    process = subprocess.Popen(
        [*(wrapper or []), *cli, "run", "--dir", str(new.box_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    box = RunningBox(new, process)
    box.drain = threading.Thread(
        target=_drain, args=(process.stderr, box.stderr_lines), daemon=True
    )
    box.drain.start()
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        key, _, value = line.partition(":")
        if key == "onion":
            box.onion = value.strip()
        elif key == "submission":
            box.submission_port = int(value.strip().rsplit(":", 1)[1])
            return box
    box.stop()
    raise AssertionError(f"box {new.local_part} did not start:\n" + "".join(box.stderr_lines[-30:]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drain(stream: Any, sink: list[str]) -> None:
    for line in stream:
        sink.append(line)


@dataclass
class ClientTor:
    """A plain tor client on the private network (an attacker or a plain peer)."""

    process: subprocess.Popen[bytes]
    controller: Any
    socks_port: int
    control_socket: Path

    def stop(self) -> None:
        self.controller.close()
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def start_client_tor(data_dir: Path, options: dict[str, Any]) -> ClientTor:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    config = {
        "DataDirectory": str(data_dir),
        "ControlSocket": str(data_dir / "control.sock"),
        "CookieAuthentication": "1",
        "SocksPort": "127.0.0.1:auto ExtendedErrors",
        **options,
    }
    process = stem.process.launch_tor_with_config(
        config, completion_percent=0, timeout=None, take_ownership=True
    )
    controller = stem.control.Controller.from_socket_file(str(data_dir / "control.sock"))
    controller.authenticate()
    deadline = time.monotonic() + 60
    while "PROGRESS=100" not in controller.get_info("status/bootstrap-phase"):
        if time.monotonic() > deadline:
            raise AssertionError("client tor did not bootstrap in 60 s")
        time.sleep(0.2)
    (_, port), *_ = controller.get_listeners(stem.control.Listener.SOCKS)
    return ClientTor(process, controller, int(port), data_dir / "control.sock")


def wait_for_mail(folder: Path, count: int, timeout: float = 120) -> list[bytes]:
    """Poll the Maildir (bounded) until ``count`` messages are there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.exists():
            store = mailbox.Maildir(folder, create=False)
            messages = [store.get_bytes(key) for key in store.keys()]
            if len(messages) >= count:
                return messages
        time.sleep(0.1)
    raise AssertionError(f"{folder}: fewer than {count} message(s) after {timeout} s")


async def submit(box: RunningBox, to: str, subject: str, body: str, **extra: str) -> None:
    headers = "".join(f"{k}: {v}\r\n" for k, v in extra.items())
    message = f"From: {box.address}\r\nTo: {to}\r\nSubject: {subject}\r\n{headers}\r\n{body}"
    await submit_raw(box, to, message.encode())


async def submit_raw(box: RunningBox, to: str, message: bytes, *, ehlo: str = "localhost") -> None:
    """Hand ``message`` to ``box``'s submission server, as its user's mail client would."""
    await aiosmtplib.send(
        message,
        sender=box.address,
        recipients=[to],
        hostname="127.0.0.1",
        port=box.submission_port,
        username=box.new.local_part,
        password=box.new.password,
        local_hostname=ehlo,
        start_tls=False,
        timeout=30,
    )


def stop_process(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 20 s; its pipes closed."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


@contextlib.contextmanager
def offline_tor(data_dir: Path, tor_cmd: str = "tor") -> Iterator[Any]:
    """A tor with networking disabled (ADD_ONION works, nothing is published) and its controller."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    process = stem.process.launch_tor_with_config(
        {
            "DataDirectory": str(data_dir),
            "ControlSocket": str(data_dir / "c.sock"),
            "CookieAuthentication": "1",
            "SocksPort": "0",
            "DisableNetwork": "1",
            "Log": f"notice file {data_dir / 'notice.log'}",
        },
        tor_cmd=tor_cmd,
        completion_percent=0,
        timeout=None,
        take_ownership=True,
    )
    try:
        with stem.control.Controller.from_socket_file(str(data_dir / "c.sock")) as controller:
            controller.authenticate()
            yield controller
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()


async def onion_smtp(tor: ClientTor, onion: str) -> tuple[RawSMTP, str]:
    """An SMTP session with ``onion``:25 through ``tor``: the client and the greeting."""
    for attempt in range(5):  # a fresh circuit may fail once right after publication
        try:
            sock = await open_tor_stream("127.0.0.1", tor.socks_port, onion, 25, timeout=30)
            break
        except ConnectionError:
            if attempt == 4:
                raise
    reader, writer = await asyncio.open_connection(sock=sock)
    client = RawSMTP(reader, writer)
    return client, await client.reply()
