"""What a listener and its sessions share: the handler's session and envelope, the listener.

The :class:`Session` and :class:`Envelope` attributes are aiosmtpd's, so
handlers written for aiosmtpd run unchanged; :class:`Listener` holds what is
computed once per listener (hooks, banner, EHLO lines, the read buffer).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from onionmail.smtp.replies import (
    COMMAND_SIZE_LIMIT,
    DEFAULT_DATA_SIZE_LIMIT,
    DEFAULT_DATA_TIMEOUT,
    DEFAULT_EVICT_AFTER,
    DEFAULT_HOSTNAME,
    DEFAULT_MAX_BAD_COMMANDS,
    DEFAULT_MAX_COMMANDS,
    DEFAULT_MAX_LINE_LENGTH,
    DEFAULT_MAX_SESSION_TIME,
    DEFAULT_TIMEOUT,
    DEFAULT_TRANSACTION_TIMEOUT,
    HOOKS,
    IDENT,
    RECEIVE_BYTES,
    SYNTAX,
    UNSUPPORTED_HOOKS,
)

if TYPE_CHECKING:
    from onionmail.smtp.protocol import SMTPProtocol


class Slot(Protocol):
    """A connection limit (:class:`onionmail.smtp.server.ConnectionLimit`)."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class Session:
    """What one connection knows, passed to every hook (aiosmtpd's ``Session`` attributes).

    Handlers add their own attributes (``onionmail_user``, ``onionmail_challenge``).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, peer: Any) -> None:
        self.peer = peer
        self.ssl: dict[str, Any] | None = None
        self.host_name: str | None = None
        self.extended_smtp = False
        self.loop = loop
        self.proxy_data: Any = None
        self.auth_data: Any = None
        self.authenticated: bool | None = None


class Envelope:
    """One mail transaction (aiosmtpd's ``Envelope`` attributes).

    Renewed by HELO, EHLO, RSET and the end of DATA.
    """

    def __init__(self) -> None:
        self.mail_from: str | None = None
        self.mail_options: list[str] = []
        self.smtp_utf8 = False
        self.content: bytes | None = None
        self.original_content: bytes | None = None
        self.rcpt_tos: list[str] = []
        self.rcpt_options: list[str] = []


Authenticator = Callable[[Any, Session, Envelope, str, Any], Any]


class Listener:
    """Everything the sessions of one listener share, computed once when it starts."""

    def __init__(
        self,
        handler: Any,
        *,
        hostname: str | None = None,
        ident: str = IDENT,
        data_size_limit: int | None = DEFAULT_DATA_SIZE_LIMIT,
        enable_SMTPUTF8: bool = True,  # aiosmtpd's keyword
        decode_data: bool = False,
        timeout: float = DEFAULT_TIMEOUT,
        data_timeout: float = DEFAULT_DATA_TIMEOUT,
        max_line_length: int = DEFAULT_MAX_LINE_LENGTH,
        max_bad_commands: int = DEFAULT_MAX_BAD_COMMANDS,
        transaction_timeout: float = DEFAULT_TRANSACTION_TIMEOUT,
        max_session_time: float = DEFAULT_MAX_SESSION_TIME,
        max_commands: int = DEFAULT_MAX_COMMANDS,
        evict_after: float = DEFAULT_EVICT_AFTER,
        auth_required: bool = False,
        auth_require_tls: bool = True,
        auth_exclude_mechanism: Sequence[str] = (),
        authenticator: Authenticator | None = None,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        connection_limits: Sequence[Slot] = (),
        chunking: bool = False,
    ) -> None:
        if decode_data:
            raise ValueError("decode_data=True is not supported: handlers get the bytes")
        for name in UNSUPPORTED_HOOKS:
            if hasattr(handler, name):
                raise TypeError(f"the SMTP core does not support the handler hook {name}")
        if any(name.startswith("auth_") for name in dir(type(handler))):
            raise TypeError("the SMTP core does not support handler auth_* mechanisms")
        self.handler = handler
        self.chunking = chunking
        """Announce CHUNKING and take BDAT (RFC 3030); opt-in, aiosmtpd had neither."""
        self.rcpt_parameters: frozenset[str] = frozenset(getattr(handler, "RCPT_PARAMETERS", ()))
        """RCPT TO parameters the handler takes (``POW``, a stamp); others get ``555``."""
        self.greeting: Callable[[Session], str] | None = getattr(handler, "greeting", None)
        """The handler's words after the banner's ident, per session (the seal challenge)."""
        self.hooks: dict[str, Callable[..., Any]] = {
            name: getattr(handler, "handle_" + name)
            for name in HOOKS
            if hasattr(handler, "handle_" + name)
        }
        self.handle_exception: Callable[[Exception], Any] | None = getattr(
            handler, "handle_exception", None
        )
        self.hostname = hostname or DEFAULT_HOSTNAME
        self.banner = f"220 {self.hostname} {ident}\r\n".encode()
        self.data_size_limit = data_size_limit
        self.smtputf8 = enable_SMTPUTF8
        self.timeout = timeout
        self.data_timeout = data_timeout
        self.transaction_timeout = transaction_timeout
        self.max_session_time = max_session_time
        self.max_commands = max_commands
        self.evict_after = evict_after
        # One octet more than the longest line lets through the dot that
        # transparency (RFC 5321 4.5.2) adds to a longest line beginning with one.
        self.line_limit = max_line_length + 1
        self.max_bad_commands = max_bad_commands
        self.auth_required = auth_required
        self.auth_require_tls = auth_require_tls
        self.authenticator = authenticator
        mechanisms = ("LOGIN", "PLAIN") if authenticator is not None else ()
        self.auth_mechanisms = tuple(m for m in mechanisms if m not in auth_exclude_mechanism)
        self.tls_context = tls_context
        self.require_starttls = tls_context is not None and require_starttls
        self.connection_limits = tuple(connection_limits)
        self.mail_limit = (
            COMMAND_SIZE_LIMIT + (26 if data_size_limit else 0) + (10 if enable_SMTPUTF8 else 0)
        )
        self.sessions: set[SMTPProtocol] = set()
        """The open sessions, closed with the listener (:func:`serve`)."""
        self.receive_buffer = memoryview(bytearray(RECEIVE_BYTES))
        """Where every session of this listener reads into (see :meth:`SMTPProtocol.get_buffer`)."""
        self.ehlo_plain = self._ehlo_lines(tls=False)
        self.ehlo_tls = self._ehlo_lines(tls=True)
        self.help_verbs = sorted(v for v in SYNTAX if v != "STARTTLS" or tls_context is not None)

    def _ehlo_lines(self, *, tls: bool) -> tuple[str, ...]:
        lines = [f"250-{self.hostname}"]
        if self.data_size_limit:
            lines.append(f"250-SIZE {self.data_size_limit}")
        lines.append("250-8BITMIME")
        if self.smtputf8:
            lines.append("250-SMTPUTF8")
        if self.tls_context is not None and not tls:
            lines.append("250-STARTTLS")
        if self.auth_mechanisms and (tls or not self.auth_require_tls):
            lines.append("250-AUTH " + " ".join(self.auth_mechanisms))
        if self.chunking:
            lines.append("250-CHUNKING")
        return tuple(lines)
