"""Probes of a running private network: authority consensuses and an onion round trip.

:func:`fetch_consensus` asks an authority for its current consensus;
:func:`onion_roundtrip` publishes an onion service in front of a local echo
server and exchanges bytes with it through a client tor's SOCKS port.
"""

from __future__ import annotations

import logging
import secrets
import socket
import socketserver
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import stem
import stem.control
from python_socks import ProxyConnectionError, ProxyError, ProxyTimeoutError
from python_socks.sync import Proxy

from onionmail.core.errors import TestnetError

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.2
HTTP_TIMEOUT = 2.0


# --- consensus ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Consensus:
    """What an authority's consensus says: since when it is valid, which relays run."""

    valid_after: str | None
    running: frozenset[str]
    """Base64 identity digests (no padding) of relays flagged Running."""


def fetch_consensus(dir_port: int) -> Consensus | None:
    """The authority's current microdescriptor consensus, or None if it has none yet."""
    url = f"http://127.0.0.1:{dir_port}/tor/status-vote/current/consensus-microdesc"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
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


def parse_consensus(text: str) -> Consensus:
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
    return Consensus(valid_after, frozenset(running))


# --- onion round trip ---------------------------------------------------------------------


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


def onion_roundtrip(controller: Any, deadline: float) -> None:
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
