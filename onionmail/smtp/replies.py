"""The SMTP engine's defaults and reply texts: aiosmtpd's words, where it had them."""

from __future__ import annotations

IDENT = "ESMTP"
DEFAULT_HOSTNAME = "localhost"
DEFAULT_TIMEOUT = 300.0
"""Idle seconds allowed between commands, between two chunks of DATA, and for a TLS handshake."""
DEFAULT_DATA_TIMEOUT = 1800.0
"""Seconds a whole DATA transfer may take, however steadily it flows."""
DEFAULT_DATA_SIZE_LIMIT = 2**25
DEFAULT_MAX_LINE_LENGTH = 1000
"""RFC 5321 4.5.3.1.6: a text line is at most 1000 octets including CRLF."""
DEFAULT_MAX_BAD_COMMANDS = 20
DEFAULT_TRANSACTION_TIMEOUT = 300.0
"""Seconds a session may go without completing a mail transaction (DATA transfers and the
server's own work not counted): commands that make no progress (NOOP, RSET, EHLO, VRFY)
cannot hold a connection slot for longer."""
DEFAULT_MAX_SESSION_TIME = 3600.0
"""Seconds a session may last in all, however much mail it carries."""
DEFAULT_MAX_COMMANDS = 1000
"""Commands a session may send in all (AUTH responses and data are not commands)."""
DEFAULT_EVICT_AFTER = 10.0
"""Seconds a session is safe from being closed to make room: when every slot is taken, a
new connection closes the session that has gone longest without completing a
transaction (never one in DATA or whose command the server is working on), so peers
holding slots with talk cannot keep mail out."""

COMMAND_SIZE_LIMIT = 512
"""RFC 5321 4.5.3.1.4; MAIL may be longer by its ESMTP parameters (SIZE, SMTPUTF8)."""
BOGUS_LIMIT = 5
"""Unknown verbs before ``502 ... goodbye`` (aiosmtpd's figure)."""
BACKLOG = 64 * 1024
"""Bytes buffered behind a command that is still running before reading pauses."""
RECEIVE_BYTES = 256 * 1024
"""The most one read takes from a socket (asyncio's own figure for ``recv``)."""

TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections, try again later\r\n"
BARE_LINE_END = "500 5.5.2 Bare CR or LF in a command line; lines end with CRLF"
TOO_MANY_ERRORS = b"421 4.7.0 Too many errors; closing the connection\r\n"
IDLE_TIMEOUT = b"421 4.4.2 Idle timeout; closing the connection\r\n"
DATA_TIMEOUT = b"421 4.4.2 DATA took too long; closing the connection\r\n"
NO_PROGRESS = b"421 4.4.2 No mail transaction completed in time; closing the connection\r\n"
SESSION_TOO_LONG = b"421 4.4.2 Session time limit reached; closing the connection\r\n"
TOO_MANY_COMMANDS = b"421 4.7.0 Too many commands; closing the connection\r\n"
SLOT_NEEDED = b"421 4.7.0 Idle session closed to make room; closing the connection\r\n"
BDAT_SYNTAX = "501 5.5.4 Syntax: BDAT <size> [LAST]"
EMPTY_MESSAGE = "554 5.6.0 Error: an empty message is not accepted"
SERVER_ERROR = "451 4.3.0 Temporary server error; please try again later"
AUTH_OK = "235 2.7.0 Authentication successful"
AUTH_INVALID = "535 5.7.8 Authentication credentials invalid"
BAD_BASE64 = "501 5.5.2 Can't decode base64"

# Replies that refuse a message or an address on its merits; a peer that gets
# them did nothing wrong as a client, so they do not count as bad commands.
NOT_BAD = frozenset((b"550", b"552", b"553", b"554"))
CRLF = b"\r\n"
OVERLONG = b"\r\n"
""":meth:`SMTPProtocol._next_line` for a line over the limit (never a line: lines exclude CRLF)."""
BEFORE_STARTTLS = frozenset(("NOOP", "EHLO", "STARTTLS", "QUIT"))
SYNTAX = {
    "AUTH": "AUTH <mechanism>",
    "DATA": "DATA",
    "EHLO": "EHLO hostname",
    "HELO": "HELO hostname",
    "HELP": "HELP [command]",
    "MAIL": "MAIL FROM: <address>",
    "NOOP": "NOOP [ignored]",
    "QUIT": "QUIT",
    "RCPT": "RCPT TO: <address>",
    "RSET": "RSET",
    "STARTTLS": "STARTTLS",
    "VRFY": "VRFY <address>",
}
PARAMETERS = " [SP <mail-parameters>]"
UNSUPPORTED_HOOKS = ("handle_AUTH", "handle_STARTTLS", "handle_PROXY", "process_message")
HOOKS = ("EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "VRFY")
