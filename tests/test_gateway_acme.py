"""The MX's certificate from a real ACME CA (pebble), renewed and reloaded without a drop.

Real parts on loopback: Knot + Unbound answer ``mail.gw.test`` with
127.0.0.1; pebble validates the ``http-01`` challenge by connecting there,
to the port certbot (Debian's) listens on; the gateway runs with its own
tor on the private Tor network. ``onionmail-gateway certificate`` gets the
certificate and names it in ``[smtp]``; the gateway offers it with
STARTTLS; a forced renewal runs the deploy hook, which installs the new
one and sends SIGHUP; a session opened before the renewal still delivers
a message, and the next session gets the new certificate.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from cryptography import x509

from tests.acme_server import Pebble, running_pebble
from tests.box_process import free_port, stop_process
from tests.dns_server import Zone, a, running_dns
from tests.gateway_process import cli, gateway_init
from tests.gateway_wire import spawn_gateway, wait_gateway

pytestmark = pytest.mark.tor

DOMAIN = "gw.test"
MX_HOST = f"mail.{DOMAIN}"


def certificate(gw_dir: Path, pebble: Pebble, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("gateway.cli", "certificate", "--dir", str(gw_dir), *args),
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_file)},
    )


async def starttls_serial(port: int, root: Path) -> tuple[int, aiosmtplib.SMTP]:
    """A session that did STARTTLS, checking the chain against pebble's root and the MX
    name; the certificate's serial number, and the session, still open."""
    context = ssl.create_default_context(cafile=str(root))
    smtp = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        local_hostname="sender.test",
        start_tls=False,
        timeout=30,
    )
    await smtp.connect()
    await smtp.starttls(server_hostname=MX_HOST, tls_context=context)
    transport: Any = smtp.transport
    der = transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number, smtp


def test_acme_certificate_is_issued_offered_renewed_and_reloaded_without_a_drop(
    testnet: Any, tmp_path: Path
) -> None:
    with running_dns([Zone(DOMAIN, [a("mail")])], tmp_path / "dns") as dns:
        with running_pebble(
            tmp_path / "pebble", f"{dns.resolver_host}:{dns.resolver_port}"
        ) as pebble:
            gw_dir = tmp_path / "gw"
            gateway_init(gw_dir, DOMAIN)
            config = gw_dir / "gateway.toml"
            smtp_port = free_port()
            config.write_text(
                config.read_text()
                .replace("[gateway]\n", f'[gateway]\nmx_host = "{MX_HOST}"\n', 1)
                .replace("[smtp]", f"[smtp]\nport = {smtp_port}", 1)
                .replace(
                    "[dns]",
                    f'[dns]\nresolver = "{dns.resolver_host}"\nport = {dns.resolver_port}',
                    1,
                )
                .replace("[tor]", f'[tor]\ntestnet = "{testnet.directory}"', 1)
                .replace('# testnet = ""\n', "", 1)
            )
            issued = certificate(
                gw_dir,
                pebble,
                "--email", "ops@example.org",
                "--server", pebble.directory_url,
                "--http-01-port", str(pebble.http_port),
            )  # fmt: skip
            assert issued.returncode == 0, issued.stdout + issued.stderr
            text = config.read_text()
            assert f'tls_cert = "{gw_dir / "tls" / "chain.pem"}"' in text
            key = gw_dir / "tls" / "key.pem"
            assert key.stat().st_mode & 0o777 == 0o600
            root = tmp_path / "pebble-root.pem"
            root.write_bytes(pebble.root_pem())

            process, log = spawn_gateway(gw_dir)
            try:
                wait_gateway(process, log)
                asyncio.run(_renew_while_a_session_is_open(gw_dir, pebble, smtp_port, root))
            finally:
                stop_process(process)
            assert any("certificate reloaded" in line for line in log), "".join(log[-20:])


async def _renew_while_a_session_is_open(
    gw_dir: Path, pebble: Pebble, port: int, root: Path
) -> None:
    first, session = await starttls_serial(port, root)
    try:
        await _renew_and_deliver(gw_dir, pebble, port, root, first, session)
    finally:
        session.close()


async def _renew_and_deliver(
    gw_dir: Path, pebble: Pebble, port: int, root: Path, first: int, session: aiosmtplib.SMTP
) -> None:
    renewed = await asyncio.to_thread(certificate, gw_dir, pebble, "--force-renewal")
    assert renewed.returncode == 0, renewed.stdout + renewed.stderr
    assert "the running gateway" in renewed.stdout + renewed.stderr
    deadline = time.monotonic() + 30
    second = first
    while second == first and time.monotonic() < deadline:
        second, other = await starttls_serial(port, root)
        await other.quit()
        await asyncio.sleep(0.2)
    assert second != first, "the new certificate was not offered"
    # the session from before the renewal goes on: a message for the operator goes through
    await session.ehlo()
    await session.mail("reporter@sender.test")
    await session.rcpt(f"postmaster@{DOMAIN}")
    reply = await session.data(b"From: reporter@sender.test\r\nSubject: hi\r\n\r\nstill here\r\n")
    assert reply.code == 250, reply
    await session.quit()
    assert list((gw_dir / "operator" / "new").iterdir())
