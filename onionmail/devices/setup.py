"""What a new device's owner types in: tor's client-authorization line and the mail settings.

Shown once by ``onionmail device add`` (and the TUI's status screen), never
stored: the private half of the client key and the password exist only in
this text. The QR code holds the client-authorization line, for a phone to
scan off the terminal.
"""

from __future__ import annotations

import io

from onionmail.devices.registry import NewDevice

IMAP_PORT = 143
SUBMISSION_PORT = 587
"""The device onion's virtual ports (onionmail.devices.access publishes them)."""


def qr_lines(data: str) -> str:
    """``data`` as a QR code in half blocks (dark modules drawn light-on-dark terminals
    read as a negative; phones scan both)."""
    import segno  # only when a code is drawn: the TUI's start need not load it

    out = io.StringIO()
    segno.make(data, error="l", micro=False).terminal(out=out, compact=True, border=2)
    return out.getvalue()


def setup_text(new: NewDevice, device_onion: str, box_onion: str, *, qr: bool = True) -> str:
    """The whole sheet: authorization line (and its QR code), then the mail settings."""
    auth = new.auth_line(device_onion)
    name = new.device.name
    user = new.device.local_part
    parts = [
        f'Device "{name}" may now reach the box. This is shown once: set the device up now.',
        "",
        "1. Tor client authorization for the device onion",
        f"   {auth}",
        "   - Orbot (Android): Onion services > Client authorization > add; paste the line",
        "     (or scan the QR code below).",
        f"   - tor (laptop): save the line as {name}.auth_private in the directory named by",
        "     ClientOnionAuthDir in torrc, then reload tor.",
        "   - Tor Browser asks for the key (the part after 'x25519:') on first visit.",
        "",
    ]
    if qr:
        parts += [qr_lines(auth), ""]
    parts += [
        "2. Mail client (Thunderbird; Thunderbird for Android or K-9 Mail with Orbot's VPN mode)",
        f"   Address:   {user}@{box_onion}",
        f"   Incoming:  IMAP, server {device_onion}, port {IMAP_PORT}",
        f"   Outgoing:  SMTP, server {device_onion}, port {SUBMISSION_PORT}",
        "   Security:  none (STARTTLS off): the onion itself encrypts and authenticates",
        "   Auth:      normal password",
        f"   Username:  {user}",
        f"   Password:  {new.password}",
        "   Thunderbird on a laptop reaches onions through tor's SOCKS proxy: Settings >",
        "   Network > Manual proxy: SOCKS v5, 127.0.0.1, 9050 (9150 with Tor Browser), and",
        '   tick "Proxy DNS when using SOCKS v5".',
    ]
    return "\n".join(parts) + "\n"
