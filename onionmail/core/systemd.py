"""Running under systemd: readiness notification and a hardened unit for a box or gateway.

``notify`` speaks the ``sd_notify`` protocol (one datagram to the socket
systemd names in ``$NOTIFY_SOCKET``; no library needed): ``onionmail run``
and ``onionmail-gateway run`` send ``READY=1`` once they accept mail (tor
bootstrapped, the onion published, every listener open), so a unit with
``Type=notify`` is "started" exactly then, and ``STOPPING=1`` on the way out.

``service_unit`` writes the unit ``onionmail systemd-unit`` and
``onionmail-gateway systemd-unit`` print: a dedicated user, the whole file
system read-only but the box's or gateway's directory, no new privileges,
no capabilities but binding port 25 (the gateway's MX only), a private
``/tmp`` and ``/dev``, kernel and control groups out of reach, the system
calls of an ordinary service, umask 077. ``MemoryDenyWriteExecute`` is left
out: the Python extensions and the tor the service launches are not
checked against it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_claimed: str | None = None


def claim_notify_socket() -> None:
    """Take ``$NOTIFY_SOCKET`` out of the environment, for :func:`notify` alone: the tor a
    box or gateway launches would inherit it and tell systemd things of its own."""
    global _claimed
    if _claimed is None:
        _claimed = os.environ.pop("NOTIFY_SOCKET", "")


def notify(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``STATUS=...``) to systemd; False when
    not started by systemd with ``Type=notify`` (no ``$NOTIFY_SOCKET``) or on failure."""
    address = _claimed if _claimed is not None else os.environ.get("NOTIFY_SOCKET", "")
    if not address or address[0] not in "/@":
        return False
    target = "\0" + address[1:] if address[0] == "@" else address
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), target)
    except OSError:
        return False
    return True


def service_unit(
    *,
    description: str,
    exec_start: list[str],
    directory: Path,
    user: str,
    bind_port_25: bool,
    reloads: bool = False,
    allow_setuid: bool = False,
) -> str:
    """The text of a hardened ``Type=notify`` service for ``exec_start``, which writes only
    in ``directory``."""
    capabilities = "CAP_NET_BIND_SERVICE" if bind_port_25 else ""
    home = "read-only" if str(directory).startswith(("/home/", "/root/")) else "yes"
    command = " ".join(_quoted(part) for part in exec_start)
    reload = "ExecReload=/bin/kill -HUP $MAINPID\n" if reloads else ""
    allowed = (
        "# Dovecot (the box's devices) checks it cannot regain root: setuid() to its own uid\n"
        "# must succeed. Without capabilities no other uid can be taken.\n"
        "SystemCallFilter=setuid\n"
        if allow_setuid
        else ""
    )
    return f"""[Unit]
Description={description}
Documentation=man:systemd.exec(5)
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={command}
{reload}User={user}
Group={user}
Restart=on-failure
RestartSec=10
# tor's first bootstrap and the onion's publication can take minutes
TimeoutStartSec=600
TimeoutStopSec=60
UMask=0077
ReadWritePaths={_quoted(str(directory))}
ProtectSystem=strict
ProtectHome={home}
PrivateTmp=yes
PrivateDevices=yes
NoNewPrivileges=yes
CapabilityBoundingSet={capabilities}
AmbientCapabilities={capabilities}
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
ProcSubset=pid
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
PrivateMounts=yes
PrivateUsers={"no" if bind_port_25 else "yes"}
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged
{allowed}SystemCallErrorNumber=EPERM
DevicePolicy=closed
KeyringMode=private

[Install]
WantedBy=multi-user.target
"""


def unit_command(base: list[str], directory: Path, passphrase_file: Path | None) -> list[str]:
    """``base run --dir DIRECTORY [--passphrase-file FILE]``, paths absolute."""
    command = [*base, "run", "--dir", str(directory.absolute())]
    if passphrase_file is not None:
        command += ["--passphrase-file", str(passphrase_file.absolute())]
    return command


def _quoted(part: str) -> str:
    if part and all(c.isalnum() or c in "/._-=:@+" for c in part):
        return part
    return '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
