"""The DATA phase read in large chunks: the end-of-data marker found without per-line work.

aiosmtpd 1.4 reads DATA one line at a time (``readuntil(b"\\r\\n")`` and
Python-level bookkeeping per line, since its smuggling fix in 1.4.5); a
100 KB message is some 1,300 awaits, and the box's servers spent more time
there than Postfix spends on the whole message. :func:`read_data` reads up to
64 KiB at a time and finds the terminator with one ``bytes.find`` over the
buffer, then undoes dot-stuffing with one ``replace``.

It accepts, refuses and stores exactly what aiosmtpd's line reader does
(``tests/test_smtp_data.py`` checks that against a line-by-line reference
with generated input), so the smuggling analysis of the line reader holds:

* lines end with CRLF only; a bare LF or CR is data inside a line, so
  ``<LF>.<LF>``, ``<LF>.<CR><LF>`` and ``<CR><LF>.<LF>`` end nothing;
* the data ends at the first line that is exactly ``.<CRLF>``: the first
  ``<CRLF>.<CRLF>`` in the stream, counting a CRLF just before the first
  line (the one that ended the ``DATA`` command);
* a line (with its CRLF, before dot-stuffing is undone) longer than
  ``line_limit`` fails the message with ``500``, and more than
  ``size_limit`` bytes of data with ``552``; both only once the terminator
  has arrived (RFC 5321 4.2.5), the data past the failure being discarded as
  it comes, so memory stays bounded (a message that is both too large and
  has a too-long line may get either reply);
* whatever the client sent after the terminator (pipelined commands) is
  returned, for the command reader to see first.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

CHUNK = 64 * 1024
TERMINATOR = b"\r\n.\r\n"
_CRLF = b"\r\n"


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


async def read_data(
    reader: asyncio.StreamReader,
    pending: bytes,
    *,
    line_limit: int,
    size_limit: int | None,
) -> DataBlock | None:
    """Read one DATA block; ``pending`` is what was received before but not yet read.

    Returns None when the stream ends before the terminator (the peer hung up).
    """
    # buf[:2] is the CRLF that ended the DATA command: "." alone on the first
    # line ends the data like any other, and a leading dot is unstuffed too.
    buf = bytearray(_CRLF)
    buf += pending
    outcome = DataOutcome.OK
    discarded = 0  # message bytes dropped after a failure, for the size count
    checked = 2  # buf[:checked] holds complete lines already measured
    search = 0
    while True:
        end = buf.find(TERMINATOR, search)
        upto = end + 2 if end >= 0 else buf.rfind(_CRLF) + 2  # complete lines end here
        if outcome is DataOutcome.OK:
            outcome = _measure(buf, checked, upto, line_limit, partial=end < 0)
            checked = max(upto, checked)
            if outcome is DataOutcome.OK and size_limit and discarded + upto - 2 > size_limit:
                outcome = DataOutcome.TOO_MUCH
        if end >= 0:
            break
        if outcome is not DataOutcome.OK and len(buf) >= len(TERMINATOR):
            # Keep only what could begin the terminator.
            keep = len(TERMINATOR) - 1
            discarded += len(buf) - keep
            del buf[:-keep]
            checked = len(buf)
        search = max(0, len(buf) - len(TERMINATOR) + 1)
        chunk = await reader.read(CHUNK)
        if not chunk:
            return None
        buf += chunk
    rest = bytes(buf[end + len(TERMINATOR) :])
    if outcome is not DataOutcome.OK:
        return DataBlock(outcome, b"", rest)
    del buf[end + 2 :]
    content = bytes(buf).replace(b"\r\n.", _CRLF)[2:]
    return DataBlock(outcome, content, rest)


def _measure(
    buf: bytearray, start: int, upto: int, line_limit: int, *, partial: bool
) -> DataOutcome:
    """TOO_LONG if a complete line in ``buf[start:upto]`` is too long.

    With ``partial``, also if the unfinished line after ``upto`` is already
    longer than any line may be (its CRLF still to come).
    """
    if upto > start:
        lines = bytes(buf[start : upto - 2]).split(_CRLF)
        if max(map(len, lines)) + 2 > line_limit:
            return DataOutcome.TOO_LONG
    if partial and len(buf) - max(upto, start) > line_limit:
        return DataOutcome.TOO_LONG
    return DataOutcome.OK
