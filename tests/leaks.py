"""Shared by the leak tests: what must never leak, and how a capture is held to the model.

:func:`host_identity_in`: what a banner, an EHLO reply or a message must never
reveal about this machine or software. Host names are matched as whole labels:
a short host name such as ``vm`` also occurs by chance inside a random base32
onion address, which is no leak.

:func:`judge` holds one observer's row of a leak matrix to one capture, item by
item, with a probe per item ("does this capture show it in clear?") or an
explicit :class:`Unchecked` reason; :func:`records` splits a process's stderr
into log records; :func:`read_queue_entry` opens a queue file as someone
holding the box's key would, without the queue's own code.
"""

from __future__ import annotations

import gc
import re
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from onionmail.seal.identity import derive_subkey
from onionmail.store.queue import CLEAR_HEADER_MAGIC
from threat_model import Item, Observer, Visibility

if TYPE_CHECKING:
    from tests.wire_capture import LoopbackCapture

SOFTWARE_MARKERS = ("Python", "aiosmtpd", "aiosmtplib", "1.4.")


def host_names() -> set[str]:
    names = {socket.gethostname(), socket.getfqdn()}
    return {n for n in names if n and n not in ("localhost", "localhost.localdomain")}


def host_identity_in(text: str | bytes) -> list[str]:
    """Host names and software markers found in ``text`` (empty list: no leak)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    found = [m for m in SOFTWARE_MARKERS if m in text]
    for name in host_names():
        if re.search(rf"(?<![A-Za-z0-9-]){re.escape(name)}(?![A-Za-z0-9-])", text, re.I):
            found.append(name)
    return found


# -- judging a capture against the model -------------------------------------------


@dataclass(frozen=True)
class Unchecked:
    """An item this capture cannot show either way, and why."""

    why: str


Probe = Callable[[], bool] | Unchecked
SHOWN_EXPECTED = {
    Visibility.VISIBLE: True,
    Visibility.ENCRYPTED: False,
    Visibility.HIDDEN: False,
    Visibility.PADDED: False,
}


def judge(matrix: Any, observer: Observer, capture: str, probes: dict[Item, Probe]) -> None:
    """Hold every cell of ``observer``'s row to ``capture``; every item must be accounted for."""
    assert set(probes) == set(Item), f"{observer}: no probe for {set(Item) - set(probes)}"
    problems, table = [], []
    for item in Item:
        cell = matrix.cell(observer, item)
        probe = probes[item]
        if isinstance(probe, Unchecked):
            table.append(f"  {item:20} {cell.visibility:9} not checkable here: {probe.why}")
            continue
        assert cell.visibility in SHOWN_EXPECTED, f"{observer}/{item}: {cell.visibility} unexpected"
        shown = probe()
        table.append(f"  {item:20} {cell.visibility:9} capture {'shows' if shown else 'hides'} it")
        if shown != SHOWN_EXPECTED[cell.visibility]:
            problems.append(
                f"{observer} / {item}: the model says {cell.visibility} ({cell.reason}), "
                f"but {capture} {'shows' if shown else 'does not show'} it"
            )
    print(f"\n{matrix.path} {observer} <- {capture}\n" + "\n".join(table))
    assert not problems, "\n".join(problems)


def has(blob: bytes, *tokens: str) -> Callable[[], bool]:
    return lambda: any(t.encode() in blob for t in tokens)


def has_all(blob: bytes, *tokens: str) -> Callable[[], bool]:
    return lambda: all(t.encode() in blob for t in tokens)


def carries_message(stream: bytes) -> bool:
    """Whether an SMTP client stream sends a message (DATA, or BDAT chunks)."""
    return b"\r\nDATA\r\n" in stream or b"\r\nBDAT " in stream


def data_of(stream: bytes) -> bytes:
    """The message an SMTP client stream sends: its DATA section (without the final
    dot line), or its BDAT chunks (RFC 3030) put together."""
    if b"\r\nBDAT " in stream and b"\r\nDATA\r\n" not in stream:
        chunks, rest = [], stream
        while b"\r\nBDAT " in rest:
            _, _, rest = rest.partition(b"\r\nBDAT ")
            command, _, rest = rest.partition(b"\r\n")
            size = int(command.split()[0])
            assert len(rest) >= size, "no complete BDAT chunk in the stream"
            chunks.append(rest[:size])
            rest = b"\r\n" + rest[size:]
            if command.upper().endswith(b"LAST"):
                break
        return b"".join(chunks)
    _, _, after = stream.partition(b"\r\nDATA\r\n")
    data, dot, _ = after.partition(b"\r\n.\r\n")
    assert dot, "no complete DATA in the stream"
    return data + b"\r\n"


# -- windows and captured streams ----------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One send: from just before submission to just after the recipient stored it."""

    start: float
    end: float


class Captured(Protocol):
    """A wire module's run: the loopback capture and the time window of each send."""

    @property
    def capture(self) -> LoopbackCapture: ...

    @property
    def windows(self) -> dict[str, Window]: ...


def streams_to(run: Captured, port: int, name: str, *, with_data: bool = True) -> list[bytes]:
    """Client streams to ``port`` during send ``name`` (those carrying a message)."""
    w = run.windows[name]
    found = run.capture.to_port(port, w.start, w.end)
    return [s for s in found if carries_message(s)] if with_data else found


def one_stream(run: Captured, port: int, name: str) -> bytes:
    found = streams_to(run, port, name)
    assert len(found) == 1, f"{name}: {len(found)} streams with a message to port {port}"
    return found[0]


def tls_stream(run: Captured, port: int, name: str) -> bytes:
    """The one client stream to ``port`` in the window that carries STARTTLS."""
    found = [s for s in streams_to(run, port, name, with_data=False) if b"STARTTLS\r\n" in s]
    assert len(found) == 1, f"{name}: {len(found)} STARTTLS streams to port {port}"
    return found[0]


def both_ways(run: Captured, port: int, name: str) -> bytes:
    w = run.windows[name]
    return run.capture.touching([port], w.start, w.end)


def sent_in(run: Captured, port: int, name: str) -> Callable[[], bool]:
    w = run.windows[name]
    return lambda: any(s.dport == port and s.payload for s in run.capture.between(w.start, w.end))


# -- log records --------------------------------------------------------------------

_RECORD = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)


@dataclass(frozen=True)
class LogRecord:
    at: float
    level: str
    text: str


def records(lines: list[str]) -> list[LogRecord]:
    """The log records of a box's stderr (a traceback belongs to its record; a progress
    line, printed at every level, counts as INFO with no timestamp)."""
    found: list[LogRecord] = []
    for line in lines:
        match = _RECORD.match(line)
        if match:
            at = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
            found.append(LogRecord(at, match.group(2), line[match.end() :]))
        elif found and not line.startswith("["):
            last = found.pop()
            found.append(LogRecord(last.at, last.level, last.text + line))
        else:
            found.append(LogRecord(0.0, "INFO", line))
    return found


# -- the harness's own sockets ---------------------------------------------------------


class HarnessWarnings:
    """ResourceWarnings of this process's sockets ignored while a wire module sets up.

    The boxes and the gateway run in child processes; in the test process only
    the harness opens sockets (attacker proxies, SMTP clients, the policy
    server). One of them, from a connection cut on purpose, is sometimes
    collected late, and pytest reports it against whatever runs then. While a
    module builds its world (and when it ends) such leftovers are collected
    quietly; the tests themselves run under the usual warnings-as-errors.
    """

    def __init__(self) -> None:
        self._quiet: warnings.catch_warnings[None] | None = None

    def start(self) -> HarnessWarnings:
        self._quiet = warnings.catch_warnings()
        self._quiet.__enter__()
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()  # what an earlier module left behind
        return self

    def end(self) -> None:
        if self._quiet is not None:
            gc.collect()
            self._quiet.__exit__(None, None, None)
            self._quiet = None


def collect_quietly() -> None:
    """Collect this process's leftover harness sockets without ResourceWarnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


def read_queue_entry(data: bytes, key: bytes) -> tuple[bytes, bytes]:
    """``(clear header line, plaintext)`` of one queue file, ``key`` being the queue's key.

    The layout, read independently: the clear line, a 12-byte nonce, then
    AES-256-GCM (key: BLAKE2b of the queue key, ``om-queue-gcm``) with the
    line as associated data; the plaintext is a JSON line, then the message.
    """
    clear, _, sealed = data.partition(b"\n")
    assert clear.startswith(CLEAR_HEADER_MAGIC), clear[:8]
    aead = AESGCM(derive_subkey(key, b"om-queue-gcm"))
    return clear, aead.decrypt(sealed[:12], sealed[12:], clear + b"\n")
