"""Backpressure: holding the clients back while the workers are full.

When `max_pending` requests wait for the workers, reading more requests
would only produce 503s at full speed, and a loop busy writing them starves
the workers it is waiting for. So the clients' side of the loop is paused
instead: their requests wait in the kernel's socket buffers (TCP
backpressure) while the workers catch up, and reading resumes as soon as
the pending requests fall below RESUME_AT of the limit. Only when the
workers make no room for SHED_AFTER seconds (slow handlers) does the loop
read again and answer what does not fit 503 with Retry-After, promptly,
until there is room again.

Waiting in the kernel is only worth it while it is brief. When the workers
do make room, but slowly for the crowd behind (a small limit, slow
handlers), the clients' wait is estimated from the saturated spell: the
connections with a request waiting unread in the kernel (idle keep-alive
connections ask nothing), over the rate requests were taken in.
Past HELD_AT_MOST seconds of that, the excess is read and answered 503 as
well, so `max_pending=1` in front of a 200 ms handler sheds the other
clients at once instead of serving them one by one for a minute.

Requests pipelined behind one another wait the same way, in their
connections' buffers (`pipelined`), rather than being answered 503 as
soon as the one before them is answered.

Near the limit a request read may have waited unread long enough for its
client to give up and close: the dispatcher then looks behind it
(may_have_waited) and ends it as the client's departure (499) instead of
giving the workers a request nobody waits for.
"""

import time as _time

from .loop import CLIENT_EVENTS as _CLIENT_EVENTS

RESUME_AT = 0.9
SHED_AFTER = 0.5
HELD_AT_MOST = 1.0  # the longest wait in the kernel worth it (estimated)

_monotonic = _time.monotonic


class Backpressure:
    """The clients' side of one dispatcher's loop, held back or not."""

    def __init__(self, core):
        self.core = core
        self.limit = core.settings.max_pending
        # reading resumes at RESUME_AT of the limit: 900 of 1000, 4 of 5
        # (so a small limit needs one request done, not two)
        self.resume_below = int(self.limit * RESUME_AT) + 1
        self.paused_at = None
        self.shedding = False
        self.pauses = 0
        # the saturated spell: (since, requests opened by then), None once
        # a turn found fewer clients ready than it could take
        self.spell = None
        self.crowd_turns = 0  # turns left of reading a crowd (see check)
        # connections whose next request, read with an earlier one, waits
        # in their buffer for room (pipelining): held back like the others
        self.pipelined = []

    def full(self):
        """True when no more requests should be read now: the pending
        requests are at the limit and 503s are not due yet."""
        if self.shedding or self.core.stopping:
            return False
        if self.core.pending.waiting < self.limit:
            return False
        self.pause()
        return True

    def hold_pipelined(self, connections):
        self.pipelined = connections

    def take_pipelined(self, scheduled):
        """The connections held back with a pipelined request, then those
        `scheduled` now, in that order (the oldest first)."""
        held = self.pipelined
        if not held:
            return scheduled
        self.pipelined = []
        return held + scheduled

    def may_have_waited(self):
        """True when the request just admitted may have waited unread in
        its socket while the clients were held back: the pending requests
        (it included) are at the level reading resumes at, or above."""
        return self.core.pending.waiting >= self.resume_below

    def pause(self):
        loop = self.core.loop
        if loop.clients is not None and not loop.clients.paused:
            loop.pause(loop.clients)
            self.paused_at = now = _monotonic()
            self.pauses += 1
            if self.spell is None:
                self.spell = (now, self.core.pending.opened)
            loop.call_at(now + SHED_AFTER, self.check)  # the loop may sleep

    def check(self, now):
        """Each turn: resume when there is room again, or shed when the
        workers made none for SHED_AFTER seconds (until there is room), or
        too little for the clients held back to wait briefly (the excess,
        once a spell)."""
        loop = self.core.loop
        waiting = self.core.pending.waiting
        if self.shedding and waiting < self.resume_below:
            self.stop_shedding()
        if loop.clients is None or not loop.clients.paused:
            return
        if self.core.stopping:
            self.resume()
            return
        if (waiting >= self.resume_below
                and now - self.paused_at >= SHED_AFTER):
            self.shed()  # no room made: until there is some
            return
        excess = self.held_excess(now)
        if excess:
            # a crowd: read it for as many turns as `excess` of it takes
            # (CLIENT_EVENTS a turn), then hold the rest back again, so
            # that clients asking again at once (benchmark tools, impatient
            # retries) get one 503 a spell, not one per turn, and the 503s
            # do not take the dispatcher from the work it can do
            self.shed(crowd_turns=-(-excess // _CLIENT_EVENTS))
        elif waiting < self.resume_below:
            self.resume()

    def shed(self, crowd_turns=0):
        """Read the clients again, answering 503 what does not fit: until
        there is room, or for `crowd_turns` turns (see polled())."""
        self.shedding = True
        self.crowd_turns = crowd_turns
        self.spell = None
        self.resume()

    def stop_shedding(self):
        self.shedding = False
        self.crowd_turns = 0

    def polled(self, events, asked):
        """A turn read `events` ready clients of the `asked` it could take.
        Fewer than asked: nothing more was ready, so nobody is held back
        (the saturated spell ends, and so does shedding a crowd); a crowd
        is also shed for its turns only."""
        if events < asked:
            self.spell = None
        if self.crowd_turns:
            self.crowd_turns -= 1
            if self.crowd_turns <= 0 or events < asked:
                self.stop_shedding()

    def resume(self):
        self.core.loop.resume(self.core.loop.clients)
        self.paused_at = None

    def held_excess(self, now):
        """How many of the clients held back would wait more than
        HELD_AT_MOST at the rate requests were taken in this spell (0 when
        they all wait briefly, or the spell is too short to tell)."""
        if self.spell is None:
            return 0
        since, opened = self.spell
        elapsed = now - since
        if elapsed < SHED_AFTER:
            return 0
        table = self.core.pending
        taken = table.opened - opened
        if elapsed > 4 * SHED_AFTER:  # the recent rate counts: keep half
            self.spell = (since + elapsed / 2, opened + taken // 2)
        reached = int(taken / elapsed * HELD_AT_MOST)
        # the connections with no request read are an upper bound only:
        # idle keep-alive connections ask nothing, so only those with
        # bytes waiting in the kernel are held back
        held = len(self.core.server.connections) - len(table.requests)
        if held <= reached:
            return 0
        held = self.core.loop.clients.readable(held) + len(self.pipelined)
        return max(0, held - reached)
