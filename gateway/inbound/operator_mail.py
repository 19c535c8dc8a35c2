"""Mail for the gateway's operator: postmaster@, abuse@, hostmaster@, security@ its domain.

RFC 5321 (4.5.1) requires every mail domain to take mail for ``postmaster``
(also written without a domain, ``RCPT TO:<Postmaster>``); RFC 2142 adds
``abuse`` and the others for whoever runs the service. These addresses
belong to the operator, never to a box (a box cannot register them), and
are where other mail operators report spam or trouble with the gateway.

Such mail is kept in ``GWDIR/operator``, a Maildir the operator reads with
any client (``neomutt -f GWDIR/operator``), or, with ``[gateway]
operator_forward``, sent on to that address attached (``message/rfc822``)
to a note from ``postmaster@`` the domain, DKIM-signed by the gateway:
forwarding the message as it is would fail its author's DMARC at the
operator's provider. The note goes with a null reverse path, so a failed
forward is never bounced back to whoever wrote to the operator.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import secrets
from email.message import EmailMessage

OPERATOR_LOCAL_PARTS = frozenset({"postmaster", "abuse", "hostmaster", "security"})
"""Local parts at the gateway's domain that reach its operator."""


def operator_address(address: str, domain: str) -> str | None:
    """``postmaster@domain`` for ``Postmaster`` (any case, no domain), the address itself
    for an operator local part at ``domain``, else None."""
    bare = address.strip().strip("<>").strip()
    local, at, where = bare.rpartition("@")
    if not at:
        return f"postmaster@{domain}" if bare.lower() == "postmaster" else None
    if where.lower() == domain and local.lower() in OPERATOR_LOCAL_PARTS:
        return f"{local.lower()}@{domain}"
    return None


def forward_note(message: bytes, *, domain: str, to: str, recipients: list[str]) -> bytes:
    """The note that carries ``message`` (for ``recipients``) to the operator at ``to``."""
    note = EmailMessage()
    note["From"] = f"Gateway postmaster <postmaster@{domain}>"
    note["To"] = to
    note["Subject"] = f"[{domain}] mail for {', '.join(recipients)}"
    note["Date"] = email.utils.formatdate(usegmt=True)
    note["Message-ID"] = f"<{secrets.token_hex(16)}@{domain}>"
    note["Auto-Submitted"] = "auto-forwarded"
    note.set_content(
        f"A message for {', '.join(recipients)} reached the gateway of {domain}.\n"
        "It is attached as it arrived, with the gateway's SPF/DKIM/DMARC verdict on top.\n"
    )
    note.add_attachment(email.message_from_bytes(message, policy=email.policy.default))
    return note.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
