"""An HTTPS server on 127.0.0.1 (free port) that serves MTA-STS policies, for the gateway's tests.

One server answers for every ``mta-sts.<domain>`` a test declares: its
certificate (issued by a trustme CA) names them all, except those the test
wants to fail the name check, and the policy is chosen by the ``Host``
header. Tests change :attr:`PolicyServer.responses` while it runs, point
:class:`gateway.outbound.mta_sts.FetchConfig` at :meth:`PolicyServer.fetch_config`
(CA bundle + host → loopback address), and no real internet is involved.
"""

from __future__ import annotations

import http.server
import ssl
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme

from gateway.outbound.mta_sts import FetchConfig


@dataclass
class PolicyResponse:
    body: bytes
    status: int = 200
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


def policy_text(mode: str, *mx: str, max_age: int = 86400) -> bytes:
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {pattern}" for pattern in mx)]
    lines.append(f"max_age: {max_age}")
    return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class PolicyServer:
    port: int
    ca_file: Path
    responses: dict[str, PolicyResponse]
    """``mta-sts.<domain>`` → what to answer for the well-known path."""
    requests: list[str] = field(default_factory=list)
    """The ``Host`` of every request served, in order."""

    def fetch_config(self, timeout: float = 5.0) -> FetchConfig:
        hosts = dict.fromkeys(self.responses, ("127.0.0.1", self.port))
        return FetchConfig(ca_file=str(self.ca_file), timeout=timeout, connect_to=hosts)


def _handler(server_state: PolicyServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the name http.server calls
            host = (self.headers.get("Host") or "").split(":")[0].lower()
            server_state.requests.append(host)
            response = server_state.responses.get(host)
            if response is None or self.path != "/.well-known/mta-sts.txt":
                self.send_error(404)
                return
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)

        def log_message(self, format: str, *args: object) -> None:
            return  # keep the test output clean; requests are recorded above

    return Handler


@contextmanager
def running_policy_server(
    ca: trustme.CA,
    directory: Path,
    responses: dict[str, PolicyResponse],
    *,
    certificate_names: Iterable[str] | None = None,
) -> Iterator[PolicyServer]:
    """Serve ``responses`` over HTTPS; the certificate names ``certificate_names``
    (default: every host in ``responses``)."""
    names = list(certificate_names if certificate_names is not None else responses)
    leaf = ca.issue_cert(*names)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    leaf.configure_cert(context)
    ca_file = directory / "mta-sts-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    state = PolicyServer(0, ca_file, responses)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.port = int(httpd.server_address[1])
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.05,), name="mta-sts-https", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
