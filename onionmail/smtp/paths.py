"""MAIL and RCPT arguments: RFC 5321 paths and ESMTP parameters."""

from __future__ import annotations

import re


def after_keyword(keyword: str, arg: str | None) -> str | None:
    """``arg`` without its leading ``FROM:``/``TO:`` (any case), or None when it lacks it."""
    if arg is None or arg[: len(keyword)].upper() != keyword:
        return None
    return arg[len(keyword) :].strip()


# RFC 5321 4.1.2 paths. Only the structure is checked here; the characters are the
# handlers' to judge (control bytes, non-ASCII without SMTPUTF8), with their own replies.
_ATOM = r'[^ \t"(),.:;<>@\[\\\]]+'
_DOT_STRING = rf"{_ATOM}(?:\.{_ATOM})*"
_QUOTED_STRING = r'"(?:[^"\\]|\\.)*"'
_DOMAIN = rf"(?:{_DOT_STRING}|\[[^\[\\\]]*\])"  # a name, or an address literal
_LOCAL_PART = rf"(?:{_DOT_STRING}|{_QUOTED_STRING})"
_ROUTE = rf"@{_DOMAIN}(?:,@{_DOMAIN})*:"  # a source route: accepted and ignored (RFC 5321 C)
_ANGLE_PATH = re.compile(rf"[ \t]*<[ \t]*(?:{_ROUTE})?({_LOCAL_PART}(?:@{_DOMAIN})?)?[ \t]*>")
_BARE_PATH = re.compile(rf"[ \t]*({_LOCAL_PART}(?:@{_DOMAIN})?)(?=[ \t]|$)")


def split_path(arg: str) -> tuple[str | None, str | None]:
    """(address, the parameters after it) of a MAIL/RCPT argument; (None, None) if malformed.

    RFC 5321's ``Path``: ``<local@domain>`` (the null path ``<>`` is returned
    as ``"<>"``, a local part alone as itself, for ``<Postmaster>``), a source
    route before it ignored, blanks inside the brackets tolerated, and
    aiosmtpd's bare ``local@domain``. Unlike aiosmtpd, which parsed paths as
    RFC 5322 addresses, comments and obsolete forms (``a..b``) are refused.
    """
    if not arg:
        return "", ""
    match = _ANGLE_PATH.match(arg) or _BARE_PATH.match(arg)
    if match is None:
        return None, None
    address = match.group(1)
    return (address if address is not None else "<>"), arg[match.end() :].lstrip()


def parse_parameters(options: list[str]) -> dict[str, str | bool] | None:
    """ESMTP parameters as a dict (``KEY`` alone: True); None if one is malformed (RFC 1869)."""
    result: dict[str, str | bool] = {}
    for option in options:
        key, eq, value = option.partition("=")
        if not key.isalnum() or (eq and not value):
            return None
        result[key] = value if eq else True
    return result
