"""Conversations: which messages of a folder answer which, from their headers alone.

A reply names what it answers: ``In-Reply-To`` (the message it answers) and
``References`` (the whole chain, oldest first). A message's parent is the
last message it names that is in the folder; a message whose chain leads to
none of the folder's messages starts a thread. Headers are written by
senders, so a chain that loops (A names B, B names A) is cut where it closes,
and a message naming itself is not its own parent.

A folder lists newest first; a thread stands where its newest message would,
and inside it messages read as a conversation: oldest first, each reply under
what it answers. A collapsed thread shows only its first message, with the
number of the others.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_MESSAGE_ID = re.compile(r"<([^<>\s]+)>")


def referenced_ids(references: str, in_reply_to: str) -> tuple[str, ...]:
    """The message ids a message names, oldest first: its ``References``, then its
    ``In-Reply-To`` when that is not already the last of them."""
    ids = _MESSAGE_ID.findall(references or "")
    for found in _MESSAGE_ID.findall(in_reply_to or "")[:1]:
        if not ids or ids[-1] != found:
            ids.append(found)
    return tuple(ids)


@dataclass(frozen=True)
class Threadable:
    """What threading needs of a message: its row, its own id and the ids it names."""

    row: str
    message_id: str
    references: tuple[str, ...]


@dataclass(frozen=True)
class Line:
    """One visible line of a threaded folder."""

    row: str
    thread: str
    """The thread's id: its first message's row."""
    depth: int
    """0 for a thread's first message, 1 for a reply to it, and so on."""
    hidden: int = 0
    """In a collapsed thread's line, how many messages it stands for besides its own."""
    size: int = 1
    """How many messages the thread has."""


def thread_lines(messages: Sequence[Threadable], *, threaded: bool = True) -> list[Line]:
    """Every message of ``messages`` (in folder order, newest first) as a line, threads
    together. With ``threaded`` false each message is its own line, in folder order."""
    if not threaded:
        return [Line(m.row, m.row, 0) for m in messages]
    order = {m.row: i for i, m in enumerate(messages)}
    by_id: dict[str, str] = {}
    for m in reversed(messages):  # a duplicated id names the newest copy's row
        if m.message_id:
            by_id[m.message_id] = m.row
    parent: dict[str, str] = {}
    for m in messages:
        for ref in reversed(m.references):
            found = by_id.get(ref)
            if found is not None and found != m.row:
                parent[m.row] = found
                break
    _cut_loops(parent)
    children: dict[str, list[str]] = {}
    roots: list[str] = []
    for m in messages:
        up = parent.get(m.row)
        if up is None:
            roots.append(m.row)
        else:
            children.setdefault(up, []).append(m.row)
    threads = [_walk(root, children, order) for root in roots]
    threads.sort(key=lambda members: min(order[row] for row, _ in members))
    return [
        Line(row, members[0][0], depth, size=len(members))
        for members in threads
        for row, depth in members
    ]


def collapse(lines: Iterable[Line], collapsed: Iterable[str]) -> list[Line]:
    """``lines`` with each thread named in ``collapsed`` (by its first message's row) as
    one line: its first message, counting the others."""
    shut = set(collapsed)
    return [
        Line(line.row, line.thread, 0, hidden=line.size - 1, size=line.size)
        if line.thread in shut and line.size > 1
        else line
        for line in lines
        if line.thread not in shut or line.depth == 0 or line.size == 1
    ]


def _cut_loops(parent: dict[str, str]) -> None:
    """Make ``parent`` a forest: where following parents comes back to a message, the
    link that closes the loop is dropped."""
    done: set[str] = set()
    for start in list(parent):
        path: list[str] = []
        on_path: set[str] = set()
        row: str | None = start
        while row is not None and row not in done:
            if row in on_path:
                del parent[path[-1]]  # the last step returned into the path
                break
            path.append(row)
            on_path.add(row)
            row = parent.get(row)
        done.update(path)


def _walk(
    root: str, children: dict[str, list[str]], order: dict[str, int]
) -> list[tuple[str, int]]:
    """The thread under ``root`` as (row, depth), each message before its replies, the
    replies oldest first."""
    out: list[tuple[str, int]] = []
    stack = [(root, 0)]
    while stack:
        row, depth = stack.pop()
        out.append((row, depth))
        # oldest first means the largest folder position first; the stack reverses it
        for child in sorted(children.get(row, ()), key=lambda r: order[r]):
            stack.append((child, depth + 1))
    return out
