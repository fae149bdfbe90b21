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

Near the limit a request read may have waited unread long enough for its
client to give up and close: the dispatcher then looks behind it
(may_have_waited) and ends it as the client's departure (499) instead of
giving the workers a request nobody waits for.
"""

import time as _time

RESUME_AT = 0.9
SHED_AFTER = 0.5

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

    def full(self):
        """True when no more requests should be read now: the pending
        requests are at the limit and 503s are not due yet."""
        if self.shedding or self.core.stopping:
            return False
        if self.core.pending.waiting < self.limit:
            return False
        self.pause()
        return True

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
            loop.call_at(now + SHED_AFTER, self.check)  # the loop may sleep

    def check(self, now):
        """Each turn: resume when there is room again, or shed when the
        workers made none for SHED_AFTER seconds."""
        loop = self.core.loop
        waiting = self.core.pending.waiting
        if self.shedding and waiting < self.resume_below:
            self.shedding = False
        if loop.clients is None or not loop.clients.paused:
            return
        if waiting < self.resume_below or self.core.stopping:
            loop.resume(loop.clients)
            self.paused_at = None
        elif now - self.paused_at >= SHED_AFTER:
            self.shedding = True
            loop.resume(loop.clients)
            self.paused_at = None
