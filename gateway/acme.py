"""The MX's certificate from an ACME CA (Let's Encrypt, or any RFC 8555 server), with certbot.

``onionmail-gateway certificate --dir GWDIR --email YOU`` runs Debian's
``certbot`` (``certonly --standalone``: certbot answers the ``http-01``
challenge on port 80 itself, for the MX host name and any ``--name``),
with its state in ``GWDIR/acme`` rather than ``/etc/letsencrypt``. Its
deploy hook, ``onionmail-gateway install-certificate``, copies the new
chain and key to ``GWDIR/tls`` (0600, owned like ``GWDIR``, so a gateway
running as its own user can read them), writes them into ``[smtp]
tls_cert``/``tls_key`` the first time, and sends the running gateway
``SIGHUP``: it loads the new certificate into the TLS context it already
serves, so sessions in progress go on and the next ``STARTTLS`` gets the
new one; no connection is dropped and no mail waits.
``onionmail-gateway certificate --dir GWDIR --renew`` renews what is due
(run it daily from a timer, like certbot's own).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

from gateway.config import CONFIG_NAME, GatewayConfig, load_gateway_config
from gateway.errors import GatewayConfigError
from onionmail.core.files import ensure_private_dir

CERT_NAME = "onionmail-gateway"
LETS_ENCRYPT = "https://acme-v02.api.letsencrypt.org/directory"


def acme_dirs(gateway_dir: Path) -> list[str]:
    root = gateway_dir / "acme"
    return [
        "--config-dir", str(root),
        "--work-dir", str(root / "work"),
        "--logs-dir", str(root / "logs"),
    ]  # fmt: skip


def certbot_command(
    config: GatewayConfig,
    *,
    email: str,
    server: str,
    http_port: int,
    names: list[str],
    deploy_hook: list[str],
) -> list[str]:
    """``certbot certonly`` for the MX host (and ``names``), its state under GWDIR/acme."""
    host = config.gateway.mx_host or f"mail.{config.gateway.domain}"
    domains = [argument for name in [host, *names] for argument in ("-d", name)]
    return [
        _certbot(), "certonly", "--non-interactive", "--agree-tos",
        "--email", email, "--server", server,
        "--standalone", "--http-01-port", str(http_port),
        "--cert-name", CERT_NAME, "--keep-until-expiring",
        *domains, *acme_dirs(config.gateway_dir),
        "--deploy-hook", shlex.join(deploy_hook),
    ]  # fmt: skip


def renew_command(config: GatewayConfig, *, force: bool = False) -> list[str]:
    """``certbot renew`` of the gateway's certificate (the server, port and hook as issued).

    From a timer (no terminal) certbot first sleeps a random while, up to 8 minutes, so
    that renewals do not all hit the CA at once; a forced renewal is the operator's own
    request and goes at once."""
    extra = ["--force-renewal", "--no-random-sleep-on-renew"] if force else []
    return [
        _certbot(), "renew", "--non-interactive", "--cert-name", CERT_NAME,
        *extra, *acme_dirs(config.gateway_dir),
    ]  # fmt: skip


def _certbot() -> str:
    found = shutil.which("certbot")
    if found is None:
        raise GatewayConfigError("certbot is not installed: apt-get install certbot")
    return found


def install(gateway_dir: Path, lineage: Path) -> tuple[Path, Path]:
    """Copy ``lineage``'s chain and key (certbot's ``live/<name>``) to ``GWDIR/tls``, 0600,
    owned like GWDIR; write them into ``[smtp]`` when it names none yet."""
    target = gateway_dir / "tls"
    ensure_private_dir(target)
    owner = gateway_dir.stat()
    written = []
    for source, name in (("fullchain.pem", "chain.pem"), ("privkey.pem", "key.pem")):
        data = (lineage / source).read_bytes()
        tmp = target / f".{name}.new"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chown(tmp, owner.st_uid, owner.st_gid)
        os.replace(tmp, target / name)
        written.append(target / name)
    os.chown(target, owner.st_uid, owner.st_gid)
    config = load_gateway_config(gateway_dir)
    if not config.smtp.tls_cert:
        _name_in_config(gateway_dir / CONFIG_NAME, *written)
    return written[0], written[1]


def _name_in_config(path: Path, cert: Path, key: Path) -> None:
    """Set ``[smtp] tls_cert`` and ``tls_key`` in ``gateway.toml`` (commented defaults
    replaced); validated, or the old file kept."""
    old = path.read_text(encoding="utf-8")
    lines = [
        line for line in old.splitlines() if not re.match(r"^\s*#?\s*tls_(cert|key)\s*=", line)
    ]
    settings = [f'tls_cert = "{cert}"', f'tls_key = "{key}"']
    for n, line in enumerate(lines):
        if re.match(r"^\s*\[smtp\]", line):
            lines[n + 1 : n + 1] = settings
            break
    else:
        lines += ["", "[smtp]", *settings]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        load_gateway_config(path.parent)
    except GatewayConfigError:
        path.write_text(old, encoding="utf-8")
        raise
