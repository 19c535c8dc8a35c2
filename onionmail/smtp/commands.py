"""The bodies of the SMTP commands, mixed into :class:`~onionmail.smtp.protocol.SMTPProtocol`.

Each ``smtp_<VERB>`` answers with aiosmtpd's replies, except where the design
says otherwise (docs/design.md, "The SMTP engine"); the connection, buffering
and limits are the protocol's.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import AuthResult, LoginPassword

from onionmail.smtp.data import ChunkReader, DataOutcome, DataReader
from onionmail.smtp.paths import after_keyword, parse_parameters, split_path
from onionmail.smtp.replies import (
    AUTH_INVALID,
    AUTH_OK,
    BAD_BASE64,
    BDAT_SYNTAX,
    OVERLONG,
    PARAMETERS,
    SYNTAX,
)
from onionmail.smtp.session import Envelope, Listener, Session

log = logging.getLogger(__name__)


class Commands(asyncio.BufferedProtocol):
    """The ``smtp_*`` verbs and their helpers; the connection and its I/O are the protocol's.

    The slots here are the state the commands set; the protocol holds the rest.
    """

    __slots__ = (
        "_transport",
        "_session",
        "_discarding",
        "_data",
        "_data_began",
        "_data_deadline",
        "_tls",
        "_chunks",
        "_chunk_last",
        "_chunk_refusal",
    )

    if TYPE_CHECKING:  # provided by SMTPProtocol
        _listener: Listener
        _loop: asyncio.AbstractEventLoop
        _transport: asyncio.Transport | None
        _session: Session | None
        _envelope: Envelope
        _buf: bytearray
        _discarding: bool
        _data: DataReader | ChunkReader | None
        _closing: bool
        _tls: bool
        _data_began: float
        _data_deadline: asyncio.TimerHandle | None
        _chunks: list[bytes] | None
        _chunk_bytes: int
        _chunk_last: bool
        _chunk_refusal: str | None

        def _push(self, status: str | bytes) -> None: ...
        def _flush(self) -> None: ...
        def _close(self, last_words: bytes = b"") -> None: ...
        async def _hook(self, name: str, *args: Any) -> Any: ...
        def _new_envelope(self) -> None: ...
        def _read_line(self) -> asyncio.Future[bytes]: ...
        def _data_timed_out(self) -> None: ...

    def _need_helo(self, verb: str = "HELO") -> bool:
        assert self._session is not None
        if not self._session.host_name:
            self._push(f"503 Error: send {verb} first")
            return True
        return False

    def _need_auth(self) -> bool:
        assert self._session is not None
        if self._listener.auth_required and not self._session.authenticated:
            self._push("530 5.7.0 Authentication required")
            return True
        return False

    async def smtp_HELO(self, arg: str | None) -> None:
        if not arg:
            self._push("501 Syntax: HELO hostname")
            return
        session = self._session
        assert session is not None
        self._new_envelope()
        session.extended_smtp = False
        if "HELO" in self._listener.hooks:
            status = await self._hook("HELO", arg)
        else:
            session.host_name = arg
            status = f"250 {self._listener.hostname}"
        self._push(status)

    async def smtp_EHLO(self, arg: str | None) -> None:
        if not arg:
            self._push("501 Syntax: EHLO hostname")
            return
        session = self._session
        assert session is not None
        listener = self._listener
        self._new_envelope()
        session.extended_smtp = True
        lines = [*(listener.ehlo_tls if self._tls else listener.ehlo_plain), "250 HELP"]
        if "EHLO" in listener.hooks:
            lines = await self._hook("EHLO", arg, lines)
        else:
            session.host_name = arg
        for reply in lines:
            self._push(reply)

    async def smtp_NOOP(self, arg: str | None) -> None:
        status = await self._hook("NOOP", arg) if "NOOP" in self._listener.hooks else "250 OK"
        self._push(status)

    async def smtp_RSET(self, arg: str | None) -> None:
        if arg:
            self._push("501 Syntax: RSET")
            return
        self._new_envelope()
        status = await self._hook("RSET") if "RSET" in self._listener.hooks else "250 OK"
        self._push(status)

    async def smtp_QUIT(self, arg: str | None) -> None:
        if arg:
            self._push("501 Syntax: QUIT")
            return
        status = await self._hook("QUIT") if "QUIT" in self._listener.hooks else "221 Bye"
        self._push(status)
        self._close()

    async def smtp_HELP(self, arg: str | None) -> None:
        if self._need_auth():
            return
        listener = self._listener
        code = 250
        if arg:
            verb = arg.upper()
            if verb in listener.help_verbs:
                text = SYNTAX[verb]
                assert self._session is not None
                if self._session.extended_smtp and verb in ("MAIL", "RCPT"):
                    text += PARAMETERS
                self._push("250 Syntax: " + text)
                return
            code = 501
        self._push(f"{code} Supported commands: {' '.join(listener.help_verbs)}")

    async def smtp_VRFY(self, arg: str | None) -> None:
        if self._need_auth():
            return
        if not arg:
            self._push("501 Syntax: VRFY <address>")
            return
        address, _ = split_path(arg)
        if address is None:
            self._push("502 Could not VRFY " + arg)
            return
        if "VRFY" in self._listener.hooks:
            status = await self._hook("VRFY", address)
        else:
            status = "252 Cannot VRFY user, but will accept message and attempt delivery"
        self._push(status)

    async def smtp_EXPN(self, arg: str | None) -> None:
        self._push("502 EXPN not implemented")

    def _path(self, keyword: str, arg: str | None, syntax: str) -> tuple[str, str] | None:
        """The address after ``FROM:``/``TO:`` and the parameters' text; None once answered."""
        session = self._session
        assert session is not None
        arg = after_keyword(keyword, arg)
        if arg is None:
            self._push(syntax)
            return None
        address, rest = split_path(arg)
        if address is None or rest is None:
            self._push("553 5.1.3 Error: malformed address")
            return None
        if not address or (rest and not session.extended_smtp):
            self._push(syntax)
            return None
        return address, rest

    async def smtp_MAIL(self, arg: str | None) -> None:
        if self._need_helo() or self._need_auth():
            return
        session, envelope, listener = self._session, self._envelope, self._listener
        assert session is not None
        syntax = "501 Syntax: MAIL FROM: <address>"
        if session.extended_smtp:
            syntax += PARAMETERS
        path = self._path("FROM:", arg, syntax)
        if path is None:
            return
        address, rest = path
        if envelope.mail_from:
            self._push("503 Error: nested MAIL command")
            return
        options = rest.upper().split()
        params = parse_parameters(options)
        if params is None:
            self._push(syntax)
            return
        if params.pop("BODY", "7BIT") not in ("7BIT", "8BITMIME"):
            self._push("501 Error: BODY can only be one of 7BIT, 8BITMIME")
            return
        smtputf8 = params.pop("SMTPUTF8", False)
        if not isinstance(smtputf8, bool):
            self._push("501 Error: SMTPUTF8 takes no arguments")
            return
        if smtputf8 and not listener.smtputf8:
            self._push("501 Error: SMTPUTF8 disabled")
            return
        envelope.smtp_utf8 = smtputf8
        size = params.pop("SIZE", None)
        if size:
            if isinstance(size, bool) or not (size.isascii() and size.isdigit()):
                self._push(syntax)
                return
            if listener.data_size_limit and int(size) > listener.data_size_limit:
                self._push("552 Error: message size exceeds fixed maximum message size")
                return
        if params:
            self._push("555 MAIL FROM parameters not recognized or not implemented")
            return
        if "MAIL" in listener.hooks:
            status = await self._hook("MAIL", address, options)
        else:
            envelope.mail_from = address
            envelope.mail_options.extend(options)
            status = "250 OK"
        self._push(status)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if self._need_helo() or self._need_auth():
            return
        session, envelope = self._session, self._envelope
        assert session is not None
        if not envelope.mail_from:
            self._push("503 Error: need MAIL command")
            return
        syntax = "501 Syntax: RCPT TO: <address>"
        if session.extended_smtp:
            syntax += PARAMETERS
        path = self._path("TO:", arg, syntax)
        if path is None:
            return
        address, rest = path
        options = rest.upper().split()
        params = parse_parameters(options)
        if params is None:
            self._push(syntax)
            return
        if set(params) - self._listener.rcpt_parameters:
            self._push("555 RCPT TO parameters not recognized or not implemented")
            return
        if "RCPT" in self._listener.hooks:
            status = await self._hook("RCPT", address, options)
        else:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            status = "250 OK"
        self._push(status)

    async def smtp_BDAT(self, arg: str | None) -> None:
        """RFC 3030: ``BDAT <size> [LAST]``, exactly ``size`` octets follow, no dot-stuffing.

        Once the size is known the chunk is read whatever happens: a refused
        one is read and dropped, then answered, so its bytes are never taken
        for commands and never held. The size limit is checked against the
        declared size, before a byte of the chunk is kept.
        """
        if not self._listener.chunking:
            self._push('500 Error: command "BDAT" not recognized')
            return
        words = (arg or "").split()
        if not words or not words[0].isdigit() or len(words[0]) > 10:
            self._push(BDAT_SYNTAX)  # no size: nothing to read
            return
        size = int(words[0])
        refusal = self._chunk_refused(words, size)
        if refusal is None:
            if self._chunks is None:
                self._chunks = []
            self._chunk_last = len(words) == 2
            self._data = ChunkReader(size)
        else:
            self._chunk_refusal = refusal
            self._data = ChunkReader(size, keep=False)
        listener = self._listener
        self._data_began = self._loop.time()
        self._data_deadline = self._loop.call_later(listener.data_timeout, self._data_timed_out)
        # As for DATA, _process feeds what is buffered behind this line to the reader.

    def _chunk_refused(self, words: list[str], size: int) -> str | None:
        """Why this BDAT is refused (the reply, sent after its chunk), or None."""
        session = self._session
        assert session is not None
        if len(words) > 2 or (len(words) == 2 and words[1].upper() != "LAST"):
            return BDAT_SYNTAX
        if not session.host_name:
            return "503 Error: send HELO first"
        if self._listener.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        if not self._envelope.rcpt_tos:
            return "503 5.5.1 Error: need RCPT command"
        limit = self._listener.data_size_limit
        if limit and self._chunk_bytes + size > limit:
            self._new_envelope()  # the transaction ends with its 552
            return DataOutcome.TOO_MUCH.value
        return None

    async def smtp_DATA(self, arg: str | None) -> None:
        if self._need_helo() or self._need_auth():
            return
        if self._chunks is not None:
            self._push("503 5.5.1 Error: DATA after BDAT")
            return
        if not self._envelope.rcpt_tos:
            self._push("503 Error: need RCPT command")
            return
        if arg:
            self._push("501 Syntax: DATA")
            return
        self._push("354 End data with <CR><LF>.<CR><LF>")
        listener = self._listener
        self._data = DataReader(line_limit=listener.line_limit, size_limit=listener.data_size_limit)
        self._data_began = self._loop.time()
        self._data_deadline = self._loop.call_later(listener.data_timeout, self._data_timed_out)
        # The bytes already buffered behind this line are the data's beginning:
        # _process feeds them to the parser when this command returns.

    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if arg:
            self._push("501 Syntax: STARTTLS")
            return
        context = self._listener.tls_context
        if context is None:
            self._push("454 TLS not available")
            return
        if self._tls:
            self._push("554 5.5.1 Error: TLS already active")
            return
        self._push("220 Ready to start TLS")
        self._flush()
        self._buf.clear()  # plaintext pipelined behind STARTTLS must not count (RFC 3207 4.2)
        self._discarding = False
        transport = self._transport
        assert transport is not None
        try:
            tls = await self._loop.start_tls(
                transport,
                self,
                context,
                server_side=True,
                ssl_handshake_timeout=self._listener.timeout,  # silence, as between commands
            )
        except OSError as error:  # SSLError, a reset, the handshake timeout
            log.info("STARTTLS handshake failed: %s", type(error).__name__)
            self._close()
            return
        if tls is None or self._closing:
            return
        assert isinstance(tls, asyncio.Transport)
        # A new session (RFC 3207 4.2): the client says EHLO again.
        # (What arrived meanwhile came through TLS: start_tls took the stream at once.)
        self._transport = tls
        self._tls = True
        old = self._session
        assert old is not None
        self._session = Session(self._loop, old.peer)
        self._session.ssl = {
            key: tls.get_extra_info(key)
            for key in ("sslcontext", "peercert", "cipher", "compression", "ssl_object")
        }
        self._new_envelope()

    async def smtp_AUTH(self, arg: str | None) -> None:
        if self._need_helo("EHLO"):
            return
        session, listener = self._session, self._listener
        assert session is not None
        if not session.extended_smtp:
            self._push("500 Error: command 'AUTH' not recognized")
            return
        if listener.auth_require_tls and not self._tls:
            self._push("538 5.7.11 Encryption required for requested authentication mechanism")
            return
        if session.authenticated:
            self._push("503 Already authenticated")
            return
        if not arg:
            self._push("501 Not enough value")
            return
        args = arg.split()
        if len(args) > 2:
            self._push("501 Too many values")
            return
        mechanism = args[0]
        if mechanism not in listener.auth_mechanisms:
            self._push("504 5.5.4 Unrecognized authentication type")
            return
        if mechanism == "PLAIN":
            credentials = await self._auth_plain(args[1:])
        else:
            credentials = await self._auth_login(args[1:])
        if credentials is None:
            return  # the reason has been answered
        assert listener.authenticator is not None
        result = listener.authenticator(self, session, self._envelope, mechanism, credentials)
        if asyncio.iscoroutine(result):
            result = await result
        if not isinstance(result, AuthResult):
            raise TypeError("an authenticator must return an AuthResult")
        if result.success:
            session.authenticated = True
            session.auth_data = result.auth_data
            self._push(result.message or AUTH_OK)
        elif not result.handled:
            self._push(result.message or AUTH_INVALID)

    async def _auth_plain(self, initial: list[str]) -> LoginPassword | None:
        if initial:
            blob = self._decode_initial(initial[0])
        else:
            blob = await self._challenge(b"")
        if blob is None:
            return None
        try:
            _, login, password = blob.split(b"\x00")  # authzid, authcid, password (RFC 4616)
        except ValueError:
            self._push("501 5.5.2 Can't split auth value")
            return None
        return LoginPassword(login, password)

    async def _auth_login(self, initial: list[str]) -> LoginPassword | None:
        if initial:
            login = self._decode_initial(initial[0])
        else:
            login = await self._challenge(b"User Name\x00")
        if login is None:
            return None
        password = await self._challenge(b"Password\x00")
        if password is None:
            return None
        return LoginPassword(login, password)

    def _decode_initial(self, text: str) -> bytes | None:
        try:
            return base64.b64decode(text.encode(), validate=True)
        except ValueError:  # binascii.Error, or surrogates from non-UTF-8 bytes
            self._push(BAD_BASE64)
            return None

    async def _challenge(self, challenge: bytes) -> bytes | None:
        """Send a ``334`` challenge; the decoded response, or None when refused (answered)."""
        self._push(b"334 " + base64.b64encode(challenge))
        line = await self._read_line()
        blob = b"" if line == OVERLONG else line.strip()
        if blob == b"*":
            self._push("501 5.7.0 Auth aborted")
            return None
        try:
            if line == OVERLONG:
                raise ValueError("overlong")
            return base64.b64decode(blob, validate=True)
        except ValueError:
            self._push(BAD_BASE64)
            return None
