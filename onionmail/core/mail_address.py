"""A strict parser for the mail addresses the box handles.

The box accepts a deliberately small subset of RFC 5321/5322 addresses:

* ``local@domain`` or ``<local@domain>`` (an SMTP path without source route),
  nothing around it: no display name, no comments, no spaces;
* the local part is a dot-atom (RFC 5322 ``atext`` separated by single dots),
  at most 64 octets; quoted strings are refused, since they let one mailbox
  hide behind many spellings;
* the domain is a host name (labels of letters, digits and inner hyphens, at
  most 63 octets each, 255 in all); address literals such as ``[127.0.0.1]``
  are refused;
* ASCII only, at most 254 octets in all; both parts are lowercased.

Anything else raises :class:`~onionmail.core.errors.AddressError`. Its message
names the part that is wrong but never repeats the address: it may be logged
or returned to an SMTP peer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from onionmail.core.errors import AddressError
from onionmail.core.onion_address import ONION_SUFFIX, decode_onion_address

MAX_ADDRESS_LENGTH = 254  # RFC 5321 path (256) minus the angle brackets
MAX_LOCAL_PART_LENGTH = 64
MAX_DOMAIN_LENGTH = 255
MAX_LABEL_LENGTH = 63

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True)
class MailAddress:
    """A parsed, lowercased mail address; build one with :func:`parse_mail_address`.

    Constructing it directly validates both parts the same way, and requires
    them already lowercase, so every ``MailAddress`` is one the box accepts.
    """

    local_part: str
    domain: str

    def __post_init__(self) -> None:
        _check_local_part(self.local_part)
        _check_domain(self.domain)
        if self.local_part != self.local_part.lower() or self.domain != self.domain.lower():
            raise AddressError("a mail address must be lowercased before use")
        if len(str(self)) > MAX_ADDRESS_LENGTH:
            raise AddressError(f"the mail address is longer than {MAX_ADDRESS_LENGTH} characters")

    def __str__(self) -> str:
        return f"{self.local_part}@{self.domain}"

    @property
    def is_onion(self) -> bool:
        """Whether the domain is under ``.onion`` (valid or not; see :meth:`onion_public_key`)."""
        return self.domain.endswith(ONION_SUFFIX)

    def onion_public_key(self) -> bytes:
        """The ed25519 key of a v3 onion domain; :class:`AddressError` for any other domain."""
        if not self.is_onion:
            raise AddressError("the mail address is not at a .onion domain")
        return decode_onion_address(self.domain)


def _check_local_part(local_part: str) -> None:
    if not local_part.isascii():
        raise AddressError("the local part (before the @) contains non-ASCII characters")
    if not local_part:
        raise AddressError("the local part (before the @) of the mail address is empty")
    if len(local_part) > MAX_LOCAL_PART_LENGTH:
        raise AddressError(
            f"the local part (before the @) is longer than {MAX_LOCAL_PART_LENGTH} characters"
        )
    if not _DOT_ATOM.fullmatch(local_part.lower()):
        raise AddressError(
            "the local part (before the @) may hold only letters, digits and "
            "!#$%&'*+/=?^_`{|}~- separated by single dots, with no dot at either end"
        )


def _check_domain(domain: str) -> None:
    if not domain.isascii():
        raise AddressError("the domain (after the @) contains non-ASCII characters")
    if not domain:
        raise AddressError("the domain (after the @) of the mail address is empty")
    if len(domain) > MAX_DOMAIN_LENGTH:
        raise AddressError(
            f"the domain (after the @) is longer than {MAX_DOMAIN_LENGTH} characters"
        )
    for label in domain.lower().split("."):
        if not label:
            raise AddressError("the domain (after the @) has an empty label (a stray dot)")
        if len(label) > MAX_LABEL_LENGTH:
            raise AddressError(
                f"the domain (after the @) has a label longer than {MAX_LABEL_LENGTH} characters"
            )
        if not _LABEL.fullmatch(label):
            raise AddressError(
                "the domain (after the @) may hold only letters, digits and inner hyphens "
                "between dots; address literals are not accepted"
            )


def _strip_angle_brackets(text: str) -> str:
    opens, closes = text.startswith("<"), text.endswith(">")
    if opens and closes and len(text) >= 2:
        return text[1:-1]
    if opens or closes:
        raise AddressError("the mail address has an unbalanced angle bracket")
    return text


def parse_mail_address(text: str) -> MailAddress:
    """Parse ``local@domain`` or ``<local@domain>`` strictly; both parts lowercased."""
    if not isinstance(text, str):
        raise AddressError("a mail address must be text")
    if not text.isascii():
        raise AddressError("the mail address contains non-ASCII characters")
    if _SPACE_OR_CONTROL.search(text):
        raise AddressError("the mail address contains a space or a control character")
    bare = _strip_angle_brackets(text)
    if not bare:
        raise AddressError("the mail address is empty")
    if len(bare) > MAX_ADDRESS_LENGTH:
        raise AddressError(f"the mail address is longer than {MAX_ADDRESS_LENGTH} characters")
    if bare.count("@") != 1:
        problem = "has no @" if "@" not in bare else "has more than one @ (quoting is not accepted)"
        raise AddressError(f"the mail address {problem}")
    local_part, domain = bare.split("@")
    return MailAddress(local_part.lower(), domain.lower())


def parse_onion_mail_address(text: str) -> MailAddress:
    """Like :func:`parse_mail_address`, and the domain must be a valid v3 onion address."""
    address = parse_mail_address(text)
    address.onion_public_key()
    return address


def is_valid_local_part(text: str) -> bool:
    """Whether ``text`` is a local part the box accepts (in any case)."""
    if not isinstance(text, str) or not text.isascii():
        return False
    try:
        _check_local_part(text)
    except AddressError:
        return False
    return True
