"""Cover traffic: dummy envelopes to chosen onionmail boxes at random times.

With ``[timing] cover_rate`` above 0, the box makes a dummy for each of
``[timing] cover_contacts`` at Poisson times (``cover_rate`` per hour on
average, see :mod:`onionmail.box.timing`) and puts it in the outbound queue with
the contact's timing policy. From there it takes the path of real mail: the
same delivery agent, tor circuit, SMTP dialogue (``MAIL FROM`` the box's
first local part, ``RCPT TO`` the contact), sealing and padding. Its message
is empty, so its sealed envelope is exactly the size of any message under
about 4 KiB (the padding floor). Only the flags byte inside the seal says
"cover" (:mod:`onionmail.seal.envelope`); the receiving box answers ``250``
like for mail, records the envelope id against replays, and stores nothing.

What the sender does with dummies:

* they never bounce: a dummy refused or past ``[delivery] max_lifetime`` is
  dropped (refusals are logged: a contact that refuses dummies is a
  configuration error worth seeing);
* they are never sent to a plain (non-onionmail) peer, which would store
  them as mail: the delivery agent drops a dummy when the peer does not
  announce sealing, before ``MAIL FROM``;
* ``onionmail queue`` and ``status`` leave them out;
* while a dummy to a contact waits for a retry (the contact is unreachable),
  no new dummy is made for it, so an offline contact does not fill the queue.

What it costs: bandwidth (about 5.7 KB on the wire per dummy, plus tor's
circuits), the contact's inbound capacity, and a replay-cache row at the
contact for a week per dummy. What it does not hide: see README, "Metadata".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from onionmail.box.timing import TimingPolicy
from onionmail.core.errors import OnionMailError
from onionmail.core.mail_address import MailAddress

log = logging.getLogger(__name__)

SendCover = Callable[[MailAddress], Awaitable[object]]


class CoverTraffic:
    """Runs as one task of the box: a Poisson stream of dummies per contact."""

    def __init__(
        self,
        *,
        contacts: Sequence[MailAddress],
        policy: TimingPolicy,
        send: SendCover,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.contacts = tuple(contacts)
        self.policy = policy
        self.send = send
        self.sleep = sleep
        self.made = 0
        """Dummies handed to ``send`` so far (all contacts)."""

    async def run(self) -> None:
        """Make dummies until cancelled."""
        async with asyncio.TaskGroup() as group:
            for contact in self.contacts:
                group.create_task(self._contact_loop(contact))

    async def _contact_loop(self, contact: MailAddress) -> None:
        while True:
            await self.sleep(self.policy.cover_gap())
            try:
                await self.send(contact)
            except (OnionMailError, OSError) as exc:
                # A full disk must not end cover traffic for good: try at the next time.
                log.warning("cover traffic: could not queue a dummy (%s)", exc)
                continue
            self.made += 1
