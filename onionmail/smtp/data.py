"""DATA and BDAT payloads parsed as they arrive: the end-of-data marker found in bulk.

:class:`DataReader` is fed whatever bytes a segment brought. One ``find``
pass for ``<CRLF>.`` finds both the terminator and any dot-stuffed line;
line lengths are checked a window of ``line_limit`` bytes at a time, never
one object per line. It accepts, refuses and stores exactly what aiosmtpd's
line reader does (``tests/test_smtp_data.py`` checks that against a
line-by-line reference with generated input), so its smuggling analysis holds:

* lines end with CRLF only; a bare LF or CR is data inside a line, so
  ``<LF>.<LF>``, ``<LF>.<CR><LF>`` and ``<CR><LF>.<LF>`` end nothing;
* the data ends at the first line that is exactly ``.<CRLF>``, counting the
  CRLF that ended the ``DATA`` command;
* a line longer than ``line_limit`` fails the message with ``500``, more
  than ``size_limit`` bytes with ``552``; both only once the terminator has
  arrived (RFC 5321 4.2.5), the data past the failure discarded as it comes;
* whatever followed the terminator (pipelined commands) is handed back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TERMINATOR = b"\r\n.\r\n"
_CRLF = b"\r\n"
_DOT_LINE = b"\r\n."
"""A line that starts with a dot: the terminator, or a dot-stuffed line."""


class DataOutcome(enum.Enum):
    OK = "ok"
    TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"
    TOO_MUCH = "552 Error: Too much mail data"


@dataclass
class DataBlock:
    outcome: DataOutcome
    content: bytes
    """The message with dot-stuffing undone (empty unless ``outcome`` is OK)."""
    rest: bytes
    """Bytes received after the terminator."""


class DataReader:
    """The DATA block as a pure incremental parser: :meth:`feed` it bytes as they arrive.

    Holds no stream: the server's protocol core (:mod:`onionmail.smtp.protocol`)
    feeds it from ``data_received``, and :func:`read_data` from a StreamReader;
    both therefore accept, refuse and store the same.
    """

    def __init__(self, *, line_limit: int, size_limit: int | None) -> None:
        self.line_limit = line_limit
        self.size_limit = size_limit
        # buf[:2] is the CRLF that ended the DATA command: "." alone on the first
        # line ends the data like any other, and a leading dot is unstuffed too.
        self._buf = bytearray(_CRLF)
        self._outcome = DataOutcome.OK
        self._discarded = 0  # message bytes dropped after a failure, for the size count
        self._checked = 2  # buf[:checked] holds complete lines already measured
        self._search = 0  # where the next line starting with a dot may begin
        self._stuffed = False  # a dot-stuffed line was seen: undo the stuffing at the end

    waiting = True
    """More bytes are always needed, up to the terminator (as :attr:`ChunkReader.waiting`)."""

    def feed(self, chunk: bytes | bytearray | memoryview) -> DataBlock | None:
        """Take the next bytes; the block once its terminator has arrived, else None."""
        buf = self._buf
        buf += chunk
        end = self._find_end()
        upto = end + 2 if end >= 0 else buf.rfind(_CRLF) + 2  # complete lines end here
        if self._outcome is DataOutcome.OK:
            self._outcome = _measure(buf, self._checked, upto, self.line_limit, partial=end < 0)
            self._checked = max(upto, self._checked)
            size_limit = self.size_limit
            if (
                self._outcome is DataOutcome.OK
                and size_limit
                and self._discarded + upto - 2 > size_limit
            ):
                self._outcome = DataOutcome.TOO_MUCH
        if end >= 0:
            return self._block(end)
        if self._outcome is not DataOutcome.OK and len(buf) >= len(TERMINATOR):
            # Keep only what could begin the terminator.
            keep = len(TERMINATOR) - 1
            self._discarded += len(buf) - keep
            del buf[:-keep]
            self._checked = len(buf)
            self._search = 0
        return None

    def _find_end(self) -> int:
        """Where the terminator starts in the buffer, or -1; notes a dot-stuffed line on the way.

        Until the first dot-stuffed line, each line starting with a dot is
        looked at (the terminator, or stuffing to undo); after it, only the
        terminator is searched for, so a message of stuffed lines costs one
        C-level pass, not a Python step per line.
        """
        buf = self._buf
        at = self._search
        while not self._stuffed:
            found = buf.find(_DOT_LINE, at)
            if found < 0:
                self._search = max(at, len(buf) - len(_DOT_LINE) + 1)  # may begin in the tail
                return -1
            if len(buf) < found + len(TERMINATOR):
                self._search = found  # the terminator or a stuffed line: the next bytes tell
                return -1
            if buf.startswith(_CRLF, found + len(_DOT_LINE)):
                return found
            self._stuffed = True
            at = found + len(_DOT_LINE)
        found = buf.find(TERMINATOR, at)
        if found < 0:
            self._search = max(at, len(buf) - len(TERMINATOR) + 1)
        return found

    def _block(self, end: int) -> DataBlock:
        buf = self._buf
        rest = bytes(buf[end + len(TERMINATOR) :])
        if self._outcome is not DataOutcome.OK:
            return DataBlock(self._outcome, b"", rest)
        del buf[end + 2 :]
        if self._stuffed:
            content = bytes(buf.replace(b"\r\n.", _CRLF)[2:])
        else:  # no dot-stuffing to undo: one copy, not three
            with memoryview(buf) as view:
                content = bytes(view[2:])
        return DataBlock(self._outcome, content, rest)


def _measure(
    buf: bytearray, start: int, upto: int, line_limit: int, *, partial: bool
) -> DataOutcome:
    """TOO_LONG if a complete line in ``buf[start:upto]`` is too long.

    With ``partial``, also if the unfinished line after ``upto`` is already
    longer than any line may be (its CRLF still to come).
    """
    # Every window of line_limit bytes from a line's start must hold a CRLF; the
    # last one in it starts the next window. Lines are counted with their CRLF.
    at = start
    while upto - at > line_limit:
        crlf = buf.rfind(_CRLF, at, at + line_limit)
        if crlf < 0:
            return DataOutcome.TOO_LONG
        at = crlf + len(_CRLF)
    if partial and len(buf) - max(upto, start) > line_limit:
        return DataOutcome.TOO_LONG
    return DataOutcome.OK


class ChunkReader:
    """One BDAT chunk (RFC 3030): exactly ``size`` octets, taken as they are.

    No terminator to find and no dot-stuffing: the length says where the chunk
    ends, so nothing inside it can end it early. Same :meth:`feed` contract
    as :class:`DataReader`; the outcome is always OK (the size limit applies
    to the whole message, in the protocol core). A chunk the server refuses
    is still read to its end (``keep=False``), counted but never stored, so
    its bytes can be neither held in memory nor taken for commands.
    """

    def __init__(self, size: int, *, keep: bool = True) -> None:
        self._left = size
        self._keep = keep
        self._parts: list[bytes] = []

    @property
    def waiting(self) -> bool:
        """Whether more bytes are needed (``BDAT 0`` needs none)."""
        return self._left > 0

    def feed(self, chunk: bytes | bytearray | memoryview) -> DataBlock | None:
        take = len(chunk) if len(chunk) < self._left else self._left
        if self._keep:
            self._parts.append(bytes(chunk[:take]))
        self._left -= take
        if self._left:
            return None
        return DataBlock(DataOutcome.OK, b"".join(self._parts), bytes(chunk[take:]))
