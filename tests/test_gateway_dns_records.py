"""``onionmail-gateway dns-records`` and ``check-dns`` against a real Knot + Unbound.

What dns-records prints, published as printed in a signed zone (and the
PTR in a reverse zone), is what check-dns accepts, every line; a zone that
lacks a DKIM key, carries another certificate's TLSA and no PTR is found
out, line by line, with exit status 1.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from tests.dns_server import Record, Zone, running_dns
from tests.gateway_process import cli, gateway_init

DOMAIN = "gw.test"
MX_HOST = f"mail.{DOMAIN}"
ADDRESS = "192.0.2.25"
REVERSE = "2.0.192.in-addr.arpa"


@dataclass
class Gateway:
    directory: Path
    records: list[Record]


def gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli("gateway.cli", *args), capture_output=True, text=True, timeout=60, check=False
    )


def published(zone_text: str) -> list[Record]:
    """The records of ``dns-records``' output, as a zone of DOMAIN holds them."""
    records = []
    for line in zone_text.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        name, _ttl, _class, rtype, data = line.split(None, 4)
        owner = name.rstrip(".").removesuffix(DOMAIN).rstrip(".") or "@"
        records.append(Record(owner, rtype, data.strip()))
    return records


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    root = tmp_path_factory.mktemp("gw-dns")
    directory = root / "gw"
    gateway_init(directory, DOMAIN)
    cert = trustme.CA().issue_cert(MX_HOST)
    cert.private_key_pem.write_to_path(str(root / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(root / "chain.pem"))
    config = directory / "gateway.toml"
    text = config.read_text().replace(
        "[gateway]\n",
        f'[gateway]\nmx_host = "{MX_HOST}"\npublic_addresses = ["{ADDRESS}"]\n',
        1,
    )
    text = text.replace(
        "[smtp]", f'[smtp]\ntls_cert = "{root / "chain.pem"}"\ntls_key = "{root / "key.pem"}"', 1
    )
    config.write_text(text)
    printed = gateway("dns-records", "--dir", str(directory))
    assert printed.returncode == 0, printed.stderr
    return Gateway(directory, published(printed.stdout))


def check(made: Gateway, zones: list[Zone], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """check-dns of the gateway, its [dns] pointed at a resolver serving ``zones``."""
    config = made.directory / "gateway.toml"
    original = config.read_text()
    with running_dns(zones, tmp_path / "dns") as dns:
        config.write_text(
            original.replace(
                "[dns]",
                f'[dns]\nresolver = "{dns.resolver_host}"\nport = {dns.resolver_port}',
                1,
            )
        )
        try:
            return gateway("check-dns", "--dir", str(made.directory))
        finally:
            config.write_text(original)


def reverse_zone() -> Zone:
    return Zone(REVERSE, [Record(ADDRESS.rsplit(".", 1)[1], "PTR", f"{MX_HOST}.")])


def test_what_dns_records_prints_is_what_check_dns_accepts(made: Gateway, tmp_path: Path) -> None:
    types = sorted({r.rtype for r in made.records})
    assert types == ["A", "MX", "TLSA", "TXT"]
    texts = " ".join(r.rdata for r in made.records if r.rtype == "TXT")
    for part in ("v=spf1 ip4:192.0.2.25 -all", "k=ed25519", "k=rsa", "p=reject", "v=STSv1"):
        assert part in texts
    assert "v=TLSRPTv1; rua=mailto:postmaster@gw.test" in texts
    result = check(made, [Zone(DOMAIN, made.records), reverse_zone()], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert all(line.startswith("ok") for line in lines[:-1]), result.stdout
    assert f"ok       PTR {ADDRESS} -> {MX_HOST}" in lines
    assert f"ok       SPF lets {ADDRESS} send for {DOMAIN}" in lines
    assert lines[-1] == f"{len(lines) - 1} of {len(lines) - 1} in order"


def test_check_dns_names_what_is_missing_or_wrong(made: Gateway, tmp_path: Path) -> None:
    other = trustme.CA().issue_cert(MX_HOST)
    other.cert_chain_pems[0].write_to_path(str(tmp_path / "other.pem"))
    from gateway.dns_records import tlsa_data

    records = [
        r
        for r in made.records
        if "k=rsa" not in r.rdata and r.rtype != "TLSA"  # the RSA key never published
    ] + [Record("_25._tcp.mail", "TLSA", tlsa_data(str(tmp_path / "other.pem")))]
    result = check(made, [Zone(DOMAIN, records)], tmp_path)  # and no reverse zone
    assert result.returncode == 1
    bad = [line for line in result.stdout.splitlines() if not line.startswith("ok")]
    assert any(line.startswith("MISSING  TXT gw1-rsa._domainkey.gw.test") for line in bad), bad
    assert any(line.startswith(f"WRONG    TLSA _25._tcp.{MX_HOST}") for line in bad), bad
    assert any(line.startswith(f"WRONG    PTR {ADDRESS}") for line in bad), bad
    assert bad[-1].endswith("fix the 3 above and run check-dns again"), bad
