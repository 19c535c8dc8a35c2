"""A real ACME CA on loopback for the tests: Debian's ``pebble`` (Let's Encrypt's test server).

Pebble serves the ACME API over HTTPS (its own certificate, from a trustme
CA the client is told to trust), validates ``http-01`` challenges for real
by connecting to the name's address as the test's DNS world answers it
(``-dnsserver``: the Unbound of :mod:`tests.dns_server`), and issues
certificates from a root it makes at start (``/roots/0`` on its management
port). ``PEBBLE_VA_NOSLEEP`` spares its random validation delays;
``PEBBLE_WFE_NONCEREJECT=0`` its deliberate rejection of 5 % of nonces.
Stopped by PID when the block ends; a missing ``pebble`` fails, never skips.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.dns_server import free_port


@dataclass
class Pebble:
    directory_url: str
    management: str
    ca_file: Path
    """The CA of pebble's own HTTPS (for certbot: REQUESTS_CA_BUNDLE)."""
    http_port: int
    """Where pebble connects to validate http-01 challenges."""

    def root_pem(self) -> bytes:
        """The root that signs what pebble issues (made at its start)."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        with urllib.request.urlopen(f"{self.management}/roots/0", context=context) as reply:
            return bytes(reply.read())


@contextmanager
def running_pebble(directory: Path, dns_address: str) -> Iterator[Pebble]:
    binary = shutil.which("pebble")
    if binary is None:
        raise RuntimeError("pebble is not installed (make system-deps installs it)")
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    api, management, http_port, tls_port = (free_port() for _ in range(4))
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{api}",
            "managementListenAddress": f"127.0.0.1:{management}",
            "certificate": str(directory / "cert.pem"),
            "privateKey": str(directory / "key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (directory / "pebble.json").write_text(json.dumps(config))
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    with open(directory / "pebble.log", "wb") as log:
        process = subprocess.Popen(
            [binary, "-config", str(directory / "pebble.json"), "-dnsserver", dns_address],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    pebble = Pebble(
        f"https://127.0.0.1:{api}/dir",
        f"https://127.0.0.1:{management}",
        directory / "ca.pem",
        http_port,
    )
    try:
        context = ssl.create_default_context(cafile=str(pebble.ca_file))
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(pebble.directory_url, context=context, timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    log_text = (directory / "pebble.log").read_text(errors="replace")
                    raise RuntimeError(f"pebble did not start:\n{log_text[-2000:]}") from None
                time.sleep(0.2)
        yield pebble
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
