"""A private Postfix on 127.0.0.1 for tests: a real MTA as an OnionMX-style plain peer.

Its own config and queue directories under a temporary directory (the
system Postfix is never configured or started), no chroot, mail for one
domain delivered by virtual(8) into a Maildir the test reads.

Optionally (keyword arguments, off by default): STARTTLS with a trustme
certificate (logged, and recorded in the ``Received`` header), a list of
known users (others get Postfix's own 550 "User unknown"), and a recipient
access table (e.g. ``{"busy@dom": "451 4.2.1 try later"}``) for 4xx/5xx tests.

With ``onion_socks_port`` it is also an OnionMX-style sender: mail for any
``.onion`` domain goes through the transport ``onion``, which is Postfix's own
smtp(8) run under torsocks (private ``torsocks.conf`` naming that tor SOCKS
port), without DNS: the onion name is handed to tor. Retries come after
seconds, not minutes, so a first rendezvous that fails is retried within a test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Postfix:
    port: int
    maildir: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def postfix_for_domain(
    domain: str,
    *,
    tls: trustme.LeafCert | None = None,
    known_users: Sequence[str] | None = None,
    recipient_access: Mapping[str, str] | None = None,
    onion_socks_port: int | None = None,
    extra_settings: Mapping[str, str] | None = None,
) -> Iterator[Postfix]:
    """Postfix accepting mail for ``domain`` into a Maildir; all removed afterwards.

    ``extra_settings`` go to main.cf last (e.g. ``relayhost`` for mail to other domains).

    Its directory is a fresh one under /tmp, not pytest's: the postfix user
    must be able to reach its queue, and pytest's base directory is 0700.
    """
    if shutil.which("postfix") is None:
        raise AssertionError("Debian's postfix is not installed (make test installs it)")
    root = Path(tempfile.mkdtemp(prefix="onionmail-postfix-"))
    try:
        yield from _run(
            root, domain, tls, known_users, recipient_access, onion_socks_port, extra_settings
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _optional_settings(
    config: Path,
    domain: str,
    tls: trustme.LeafCert | None,
    known_users: Sequence[str] | None,
    recipient_access: Mapping[str, str] | None,
) -> dict[str, str]:
    settings: dict[str, str] = {}
    if tls is not None:
        key, chain = config / "tls-key.pem", config / "tls-chain.pem"
        tls.private_key_pem.write_to_path(str(key))
        key.chmod(0o600)
        tls.private_key_and_cert_chain_pem.write_to_path(str(chain))
        settings |= {
            "smtpd_tls_cert_file": str(chain),
            "smtpd_tls_key_file": str(key),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
        }
    if known_users is not None:
        entries = ", ".join(f"{user}@{domain}=postmaster/" for user in known_users)
        settings["virtual_mailbox_maps"] = f"inline:{{ {entries} }}"
    if recipient_access:
        table = config / "recipient_access"
        table.write_text("".join(f"{key} {value}\n" for key, value in recipient_access.items()))
        settings["smtpd_recipient_restrictions"] = f"check_recipient_access texthash:{table}"
    return settings


def _onion_transport(config: Path, socks_port: int) -> tuple[dict[str, str], str]:
    """main.cf settings and the master.cf line of the ``onion`` transport.

    master(8) resolves a service's command inside ``daemon_directory``, so the
    wrapper (torsocks, then the stock smtp(8) with the arguments master gives
    it) is named by a path relative to that directory. smtp(8) starts as root
    and drops to the postfix user itself, so the preloaded library stays.
    """
    if shutil.which("torsocks") is None:
        raise AssertionError("Debian's torsocks is not installed (make test installs it)")
    daemons = subprocess.run(
        ["postconf", "-d", "-h", "daemon_directory"], capture_output=True, text=True, check=True
    ).stdout.strip()
    torsocks_conf = config / "torsocks.conf"
    torsocks_conf.write_text(
        f"TorAddress 127.0.0.1\nTorPort {socks_port}\nOnionAddrRange 127.42.42.0/24\n"
    )
    wrapper = config / "smtp-through-tor"
    wrapper.write_text(
        f'#!/bin/sh\nTORSOCKS_CONF_FILE={torsocks_conf} exec torsocks {daemons}/smtp "$@"\n'
    )
    wrapper.chmod(0o755)
    service = (
        f"onion unix - - n - - {os.path.relpath(wrapper, daemons)}"
        " -o smtp_dns_support_level=disabled -o smtp_host_lookup=native"
    )
    settings = {
        "transport_maps": "inline:{ .onion=onion: }",
        "queue_run_delay": "1s",
        "minimal_backoff_time": "1s",
        "maximal_backoff_time": "2s",
    }
    return settings, service


def _run(
    root: Path,
    domain: str,
    tls: trustme.LeafCert | None = None,
    known_users: Sequence[str] | None = None,
    recipient_access: Mapping[str, str] | None = None,
    onion_socks_port: int | None = None,
    extra_settings: Mapping[str, str] | None = None,
) -> Iterator[Postfix]:
    config, mail = root / "postfix", root / "mail"
    for sub in (config, root / "queue", root / "data", mail):
        sub.mkdir(parents=True)
    user = pwd.getpwnam("postfix")
    root.chmod(0o755)
    for owned in (root / "data", mail):
        shutil.chown(owned, "postfix", user.pw_gid)
    port = _free_port()
    settings = {
        "compatibility_level": "3.6",
        "queue_directory": str(root / "queue"),
        "data_directory": str(root / "data"),
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "myhostname": "peer.test",
        "mydestination": "",
        "virtual_mailbox_domains": domain,
        "virtual_mailbox_base": str(mail),
        "virtual_mailbox_maps": "static:postmaster/",
        "virtual_uid_maps": f"static:{user.pw_uid}",
        "virtual_gid_maps": f"static:{user.pw_gid}",
        "virtual_minimum_uid": "1",
        "maillog_file": str(root / "postfix.log"),
        "maillog_file_prefixes": str(root),
    }
    settings |= _optional_settings(config, domain, tls, known_users, recipient_access)
    lines = [f"127.0.0.1:{port} inet n - n - - smtpd"]
    for line in Path("/etc/postfix/master.cf").read_text().splitlines():
        fields = line.split()
        if line.startswith("smtp      inet"):
            continue
        if line[:1].isalpha() and len(fields) >= 8:
            fields[4] = "n"  # no chroot: the private queue holds no copy of /etc
            line = " ".join(fields)
        lines.append(line)
    if onion_socks_port is not None:
        onion_settings, onion_service = _onion_transport(config, onion_socks_port)
        settings |= onion_settings
        lines.append(onion_service)
    settings |= dict(extra_settings or {})
    (config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    (config / "master.cf").write_text("\n".join(lines) + "\n")
    command = ["postfix", "-c", str(config)]
    log = root / "postfix.log"
    for step in ("check", "start"):
        if subprocess.run([*command, step], capture_output=True, check=False).returncode:
            raise AssertionError(
                f"postfix {step} failed: {log.read_text() if log.exists() else ''}"
            )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("postfix did not listen") from None
                time.sleep(0.1)
        yield Postfix(port, mail / "postmaster", log)
    finally:
        subprocess.run([*command, "stop"], capture_output=True, check=False)
