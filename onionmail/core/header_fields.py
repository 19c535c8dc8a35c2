"""Classes of header fields, by what they tell about a message's path and its author.

Submission's scrubber (:mod:`onionmail.message.scrub`) applies them and the
config loader checks ``[scrub]`` against them, so they live below both.
"""

from __future__ import annotations

TRACE_FIELDS = frozenset(
    {
        "received",
        "x-received",
        "return-path",
        "delivered-to",
        "x-original-to",
        "authentication-results",
        "received-spf",
        "dkim-signature",
        "x-originating-ip",
    }
)
"""Removed always: trace and server fields (hosts, addresses, other servers' verdicts)."""
TRACE_PREFIXES = ("arc-", "x-spam-", "x-virus-", "x-google-", "x-gm-")

CLIENT_FIELDS = frozenset(
    {
        "user-agent",
        "x-mailer",
        "x-newsreader",
        "x-mimeole",
        "x-identity-key",
        "x-account-key",
        "x-uidl",
        "thread-index",
        "x-universally-unique-identifier",
        "x-uniform-type-identifier",
    }
)
"""Removed by default, ``keep_headers`` may keep them: they name the client or the machine."""
CLIENT_PREFIXES = ("x-mozilla-", "x-ms-", "x-kmail-", "x-evolution-", "x-apple-")

REWRITTEN_FIELDS = frozenset({"from", "date", "message-id"})
"""Always rewritten; neither removable nor keepable as the client wrote them."""
STRUCTURAL_FIELDS = REWRITTEN_FIELDS | {
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}
"""Fields ``extra_remove_headers`` may not match: without them the message breaks."""
CONTENT_LANGUAGE = "content-language"


def pattern_matches(pattern: str, name: str) -> bool:
    """``X-Foo`` matches that field; ``X-Foo-*`` every field starting ``X-Foo-`` (any case)."""
    pattern, name = pattern.lower(), name.lower()
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def is_trace_field(name: str) -> bool:
    lower = name.lower()
    return lower in TRACE_FIELDS or lower.startswith(TRACE_PREFIXES)


def is_client_field(name: str) -> bool:
    lower = name.lower()
    return lower in CLIENT_FIELDS or lower.startswith(CLIENT_PREFIXES)
