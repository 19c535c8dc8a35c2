"""The delivery agent's open SMTP sessions, by destination: kept, shared, pipelined.

A message to a peer takes a session from here and gives it back
(:meth:`PeerSessions.take`, :meth:`PeerSessions.release`). Over tor a round
trip is the cost that counts (:mod:`onionmail.smtp.client`), so:

* an idle session (kept :data:`KEEP_IDLE` seconds after its last message) is
  taken first: no stream, greeting or EHLO to wait for;
* else a new session is opened, while fewer than
  :data:`SESSIONS_BEFORE_SHARING` are open to that peer;
* else the least busy session that pipelines whole transactions (an
  onionmail box, or a peer with PIPELINING and CHUNKING) takes one more,
  up to :data:`PIPELINE_DEPTH` at a time: many messages per round trip;
* else a new session, up to :data:`MAX_SESSIONS` (below a box's
  ``[tor] max_streams_per_circuit``: more streams on one circuit would make
  the peer's tor close it);
* else the message waits for one of these.

A session that has carried :data:`SESSION_MESSAGES` takes no more and is
closed once idle, before the peer's own limit (``[inbound] max_commands``)
would end it with transactions in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from onionmail.smtp.client import PeerSession

KEEP_IDLE = 20.0
"""Seconds a session stays open after its last message, for the next one to the same
peer (:mod:`onionmail.smtp.client`); under the peers' idle timeout (the box's is 300 s)."""
SESSIONS_BEFORE_SHARING = 4
"""Sessions opened to one peer before a new message shares a busy one."""
MAX_SESSIONS = 8
"""Sessions open to one peer at most."""
PIPELINE_DEPTH = 8
"""Transactions one session carries at a time, when it pipelines them."""
SESSION_MESSAGES = 100
"""Messages after which a session takes no more: under the box's ``[inbound]
max_commands`` (1,000; six commands for a 5 KB message)."""


class PeerSessions:
    """Open sessions by destination, each with the number of messages using it."""

    def __init__(self, open_session: Callable[[str], Awaitable[PeerSession]]) -> None:
        self._open_session = open_session
        self._sessions: dict[str, list[PeerSession]] = {}
        self._users: dict[PeerSession, int] = {}
        self._opening: dict[str, int] = {}
        self._freed = asyncio.Event()
        """Set when a message is done with a session or one failed to open: look again."""
        self._expiry: dict[PeerSession, asyncio.TimerHandle] = {}
        self._quitting: set[asyncio.Task[None]] = set()
        self.closing = False
        """Stopping: sessions given back are closed, not kept."""

    async def take(self, destination: str) -> tuple[PeerSession, bool]:
        """A session for one transaction to ``destination``, and whether it was open already
        (the module's order); give it back with :meth:`release`."""
        while True:
            sessions = [s for s in self._sessions.get(destination, []) if self._takes_more(s)]
            idle = [s for s in sessions if not self._users[s]]
            if idle:
                session = idle[-1]  # the most recently used
                self._cancel_expiry(session)
                self._users[session] = 1
                return session, True
            opened = len(self._sessions.get(destination, [])) + self._opening.get(destination, 0)
            if opened >= SESSIONS_BEFORE_SHARING:
                shared = [s for s in sessions if s.pipelines and self._users[s] < PIPELINE_DEPTH]
                if shared:
                    session = min(shared, key=self._users.__getitem__)
                    self._users[session] += 1
                    return session, True
            if opened < MAX_SESSIONS:
                return await self.open(destination), False
            self._freed.clear()
            await self._freed.wait()

    async def open(self, destination: str) -> PeerSession:
        """A new session to ``destination``, taken (give it back with :meth:`release`)."""
        self._opening[destination] = self._opening.get(destination, 0) + 1
        try:
            session = await self._open_session(destination)
        except BaseException:
            self._freed.set()
            raise
        finally:
            self._opening[destination] -= 1
        self._sessions.setdefault(destination, []).append(session)
        self._users[session] = 1
        return session

    def release(self, destination: str, session: PeerSession) -> None:
        """One message is done with ``session``: kept for KEEP_IDLE seconds once idle,
        unless it is broken, used up, forgotten or the agent is stopping."""
        users = self._users.get(session, 0) - 1
        kept = self._sessions.get(destination, [])
        if users > 0:
            self._users[session] = users
        elif self.closing or session not in kept or not self._takes_more(session):
            self._users.pop(session, None)
            if session in kept:
                kept.remove(session)
            self._end(session)
        else:
            self._users[session] = 0
            loop = asyncio.get_running_loop()
            self._expiry[session] = loop.call_later(KEEP_IDLE, self._expire, destination, session)
        self._freed.set()

    def forget(self, destination: str) -> None:
        """Close the idle sessions to ``destination``; those in use close when given back."""
        for session in self._sessions.pop(destination, []):
            if not self._users.get(session):
                self._users.pop(session, None)
                self._cancel_expiry(session)
                session.close()

    async def close_all(self) -> None:
        """Say QUIT on every idle session and wait (briefly) for the answers."""
        self.closing = True
        for destination in list(self._sessions):
            for session in self._sessions.pop(destination):
                self._users.pop(session, None)
                self._end(session)
        await asyncio.gather(*self._quitting, return_exceptions=True)

    def _takes_more(self, session: PeerSession) -> bool:
        return session.usable and session.messages + self._users[session] < SESSION_MESSAGES

    def _expire(self, destination: str, session: PeerSession) -> None:
        self._expiry.pop(session, None)
        kept = self._sessions.get(destination, [])
        if session in kept and not self._users.get(session):
            kept.remove(session)
            self._users.pop(session, None)
            self._end(session)

    def _cancel_expiry(self, session: PeerSession) -> None:
        handle = self._expiry.pop(session, None)
        if handle is not None:
            handle.cancel()

    def _end(self, session: PeerSession) -> None:
        """QUIT a session in step with nothing in flight; close any other."""
        self._cancel_expiry(session)
        if session.usable and not session.pending:
            task = asyncio.create_task(session.quit())
            self._quitting.add(task)
            task.add_done_callback(self._quitting.discard)
        else:
            session.close()
