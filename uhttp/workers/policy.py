"""Restart policy: what happens to a worker slot after its process ended.

Pure logic, no processes: the supervisor reports a death with what it
knows (exit code, whether the worker got ready and served, how long it
lived) and acts on the `Decision` it gets back: park the slot, or restart
it after a delay; and whether the pool just became degraded.

- A worker that got ready and served (or lived STABLE_AFTER seconds) is
  restarted at once, every time: its death was the request's fault or an
  accident, not a start-up that cannot succeed.
- A slot that dies before it is ready again and again (a crash-looping
  setup()) backs off exponentially, from BACKOFF_FIRST up to BACKOFF_CAP,
  so the dispatcher never spins.
- `max_restarts` restarts within `window` seconds degrade the pool; a
  degraded pool recovers after `recovery_interval` seconds when one is set.
- An exit with `permanent_exitcode` parks the slot: no restart, no count.
"""

import collections as _collections

BACKOFF_FIRST = 0.5
BACKOFF_CAP = 30.0
# a worker that got ready and lived this long resets its slot's failure
# streak even without serving: its next death restarts at once
STABLE_AFTER = 1.0

PARK = 'park'
RESTART = 'restart'

Decision = _collections.namedtuple('Decision', 'action delay degrade')


class SlotRecord:
    """A slot's failure history: restarts so far, failures in a row."""

    __slots__ = ('restarts', 'streak')

    def __init__(self):
        self.restarts = 0
        self.streak = 0


def backoff(failures, first, cap):
    """Seconds to wait after `failures` (1 or more) failures in a row:
    `first`, doubling each time, at most `cap`."""
    exponent = min(failures - 1, 64)  # the cap is reached long before
    return min(cap, first * (2 ** exponent))


class RestartPolicy:
    """Counts restarts in a sliding window and spaces out failing slots.

    `record(now)` notes a restart and tells whether the pool reached
    `max_restarts` within `window` seconds; `delay(streak)` is the wait
    before restarting a slot that failed `streak` times in a row;
    `decide(...)` puts them together for one death.
    """

    def __init__(self, max_restarts, window, first=BACKOFF_FIRST,
                 cap=BACKOFF_CAP, permanent_exitcode=None):
        self.max_restarts = max_restarts
        self.window = window
        self.first = first
        self.cap = cap
        self.permanent_exitcode = permanent_exitcode
        self._times = _collections.deque()

    def _trim(self, now):
        times = self._times
        while times and now - times[0] > self.window:
            times.popleft()

    def record(self, now):
        """Count a restart; True when the limit is reached."""
        self._trim(now)
        self._times.append(now)
        return len(self._times) >= self.max_restarts

    def count(self, now):
        self._trim(now)
        return len(self._times)

    def reset(self):
        self._times.clear()

    def delay(self, streak):
        """Seconds to wait before the next start of a slot that failed
        `streak` times in a row (0 for the first failure)."""
        if streak <= 1:
            return 0.0
        return backoff(streak - 1, self.first, self.cap)

    def decide(self, record, now, exitcode, was_ready, served, lived,
               degraded):
        """The decision for one death of the slot whose SlotRecord is
        `record` (updated here). `degraded` is the pool's state before it."""
        if (self.permanent_exitcode is not None
                and exitcode == self.permanent_exitcode):
            return Decision(PARK, None, False)
        if was_ready and (served or lived >= STABLE_AFTER):
            record.streak = 0
        record.streak += 1
        record.restarts += 1
        degrade = self.record(now) and not degraded
        return Decision(RESTART, self.delay(record.streak), degrade)
