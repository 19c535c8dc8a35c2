"""Every DNS record a gateway's domain needs, from its configuration, and a check of them.

``onionmail-gateway dns-records`` prints them in zone-file syntax;
``onionmail-gateway check-dns`` asks the gateway's own validating resolver
for each and says what is missing or wrong. What they are, for a gateway
of ``gw.example`` whose MX host is ``mail.gw.example``:

* ``MX`` of the domain -> the MX host; ``A``/``AAAA`` of the MX host ->
  ``[gateway] public_addresses``, and the ``PTR`` of each address back to the
  MX host (set by whoever hosts the address: receivers check it);
* ``SPF``: the MX host's addresses may send for the domain, nothing else
  (``-all``); the gateway sends from where it receives;
* both ``DKIM`` keys (``<selector>-ed25519`` and ``<selector>-rsa``);
* ``DMARC`` ``p=reject`` with strict alignment: everything the gateway sends
  is signed and aligned, so nothing legitimate fails; reports go to
  ``postmaster@`` the domain (which reaches the operator);
* ``MTA-STS`` (RFC 8461): the TXT record with an id that changes with the
  policy, and the policy itself, served by the operator's web server at
  ``https://mta-sts.<domain>/.well-known/mta-sts.txt``;
* ``TLSRPT`` (RFC 8460): TLS failure reports to ``postmaster@``;
* ``TLSA`` for DANE (RFC 7672): ``3 1 1`` and the SHA-256 of the public key of
  ``[smtp] tls_cert`` at ``_25._tcp.<MX host>``; it counts only in a zone
  signed with DNSSEC, and must be renewed before a certificate with a new key.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.config import GatewayConfig
from gateway.dns import GatewayResolver
from gateway.errors import DnsError
from gateway.inbound.spf import SpfVerdict, check_spf
from gateway.outbound.dkim_signing import DkimSigner

TTL = 3600
MTA_STS_MAX_AGE = 604800
"""One week: how long senders keep the MTA-STS policy (RFC 8461 suggests weeks)."""


@dataclass(frozen=True)
class Expected:
    """One record the domain should publish."""

    name: str
    """Owner name, without the final dot."""
    rtype: str
    strings: tuple[str, ...]
    """The record's data: one value, or a TXT record's strings."""
    why: str

    def zone_line(self) -> str:
        if self.rtype == "TXT":
            data = " ".join(f'"{part}"' for part in self.strings)
            data = f"( {data} )" if len(self.strings) > 1 else data
        else:
            data = self.strings[0]
        return f"{self.name + '.':<40} {TTL} IN {self.rtype:<5} {data}"

    @property
    def text(self) -> str:
        return "".join(self.strings)


def mx_host(config: GatewayConfig) -> str:
    return config.gateway.mx_host or f"mail.{config.gateway.domain}"


def mta_sts_policy(config: GatewayConfig) -> str:
    """The policy file's text (RFC 8461 3.2), CRLF line ends."""
    lines = ["version: STSv1", "mode: enforce", f"mx: {mx_host(config)}"]
    return "\r\n".join([*lines, f"max_age: {MTA_STS_MAX_AGE}", ""])


def tlsa_data(cert_file: str) -> str:
    """``3 1 1 <sha256 of the SubjectPublicKeyInfo>`` of the first certificate in the file."""
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"3 1 1 {hashlib.sha256(spki).hexdigest()}"


def expected_records(config: GatewayConfig, signer: DkimSigner) -> list[Expected]:
    domain, host = config.gateway.domain, mx_host(config)
    addresses = [ipaddress.ip_address(a) for a in config.gateway.public_addresses]
    records = [Expected(domain, "MX", (f"10 {host}.",), "mail for the aliases comes here")]
    for address in addresses:
        rtype = "A" if address.version == 4 else "AAAA"
        records.append(Expected(host, rtype, (str(address),), "the MX host's address"))
    spf = " ".join([f"ip{a.version}:{a}" for a in addresses] or [f"a:{host}"])
    records.append(
        Expected(domain, "TXT", (f"v=spf1 {spf} -all",), "SPF: only this host sends for it")
    )
    for key in signer.keys:
        records.append(
            Expected(key.record_name, "TXT", tuple(key.txt_strings()), "DKIM public key")
        )
    postmaster = f"postmaster@{domain}"
    dmarc = f"v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:{postmaster}"
    records.append(Expected(f"_dmarc.{domain}", "TXT", (dmarc,), "DMARC: reject forgeries"))
    policy_id = hashlib.sha256(mta_sts_policy(config).encode()).hexdigest()[:16]
    records.append(
        Expected(f"_mta-sts.{domain}", "TXT", (f"v=STSv1; id={policy_id}",), "MTA-STS (RFC 8461)")
    )
    records.append(
        Expected(
            f"_smtp._tls.{domain}",
            "TXT",
            (f"v=TLSRPTv1; rua=mailto:{postmaster}",),
            "TLS reports (RFC 8460)",
        )
    )
    if config.smtp.tls_cert:
        records.append(
            Expected(
                f"_25._tcp.{host}",
                "TLSA",
                (tlsa_data(config.smtp.tls_cert),),
                "DANE (needs a DNSSEC-signed zone)",
            )
        )
    return records


def ptr_name(address: str) -> str:
    return ipaddress.ip_address(address).reverse_pointer


def render(config: GatewayConfig, signer: DkimSigner) -> str:
    """What ``dns-records`` prints."""
    domain, host = config.gateway.domain, mx_host(config)
    lines = [f"; DNS records for {domain} (from {config.path})", ""]
    for record in expected_records(config, signer):
        lines += [f"; {record.why}", record.zone_line()]
    if not config.gateway.public_addresses:
        lines += ["", f"; and the A/AAAA records of {host}: set [gateway] public_addresses"]
    if not config.smtp.tls_cert:
        lines += ["", f"; and TLSA at _25._tcp.{host}: set [smtp] tls_cert first"]
    lines += [
        "",
        f"; the MTA-STS policy, served at https://mta-sts.{domain}/.well-known/mta-sts.txt",
        f"; (mta-sts.{domain} needs an address and a certificate for that name):",
        *(f";   {line}" for line in mta_sts_policy(config).splitlines()),
        "",
        "; ask whoever hosts each address for its PTR (reverse DNS):",
        *(f";   {ptr_name(a)}. -> {host}." for a in config.gateway.public_addresses),
    ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str = ""


async def check_records(
    config: GatewayConfig, signer: DkimSigner, resolver: GatewayResolver
) -> list[Finding]:
    """Each expected record as the resolver sees it."""
    findings = []
    for record in expected_records(config, signer):
        findings.append(await _check(record, resolver))
    host = mx_host(config)
    for address in config.gateway.public_addresses:
        spf = await check_spf(
            client_ip=address, helo=host, mail_from=f"postmaster@{config.gateway.domain}",
            resolver=resolver,
        )  # fmt: skip
        findings.append(
            Finding(
                spf.verdict == SpfVerdict.PASS,
                f"SPF lets {address} send for {config.gateway.domain}",
                "" if spf.verdict == SpfVerdict.PASS else f"SPF says {spf.verdict}",
            )
        )
        name = ptr_name(address)
        try:
            found = [r.to_text().rstrip(".").lower() for r in await resolver.records(name, "PTR")]
        except DnsError as exc:
            found, error = [], str(exc)
        else:
            error = ""
        what = f"PTR {address} -> {host}"
        findings.append(
            Finding(host in found, what, "" if host in found else error or f"found {found}")
        )
    return findings


async def _check(record: Expected, resolver: GatewayResolver) -> Finding:
    what = f"{record.rtype} {record.name}"
    try:
        if record.rtype == "TXT":
            found = [text.decode("utf-8", "replace") for text in await resolver.txt(record.name)]
        else:
            rdatas = await resolver.records(record.name, record.rtype)
            found = [r.to_text() for r in rdatas]
    except DnsError as exc:
        return Finding(False, what, f"missing ({exc})")
    finding = _compare(record, found, what)
    if finding.ok and record.rtype == "TLSA":
        host = record.name.split(".", 2)[2]
        if not (await resolver.tlsa(host)).usable_for_dane:
            return Finding(False, what, "published, but not DNSSEC-signed: DANE ignores it")
    return finding


def _compare(record: Expected, found: Sequence[str], what: str) -> Finding:
    if record.rtype == "TXT":
        prefix = record.text.split(";", 1)[0].split(" ", 1)[0]  # v=spf1, v=DKIM1, ...
        same = [t for t in found if t.startswith(prefix)]
        if record.text in same:
            return Finding(True, what)
        if not same:
            return Finding(False, what, f"missing: publish {record.text[:60]}...")
        if prefix == "v=DKIM1":
            return Finding(False, what, "another key is published: publish this gateway's")
        if prefix == "v=STSv1":  # the id is the operator's to change
            return Finding(True, what, f"published with another id: {same[0]}")
        return Finding(True, what, f"differs from the suggestion: {same[0]}")
    wanted = _normal(record.rtype, record.strings[0])
    if wanted in {_normal(record.rtype, value) for value in found}:
        return Finding(True, what)
    return Finding(False, what, f"expected {record.strings[0]}, found {list(found) or 'none'}")


def _normal(rtype: str, value: str) -> str:
    """A record's data as compared: lower case, no final dot, a TLSA's hex in one piece."""
    parts = value.lower().rstrip(".").split()
    if rtype == "TLSA":
        parts = parts[:3] + ["".join(parts[3:])]
    return " ".join(parts)
