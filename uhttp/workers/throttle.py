"""Log lines that come in floods, counted instead of repeated.

A WARNING that can come thousands of times a second (work dropped under
overload, one line per dropped item) would bury everything else in the log
just when it matters. Such a warning is logged at most once per key and
interval; the ones held back meanwhile are counted, and the count is
logged (with the latest of them) by `flush()` once the interval is over.
The same goes for a timed hook's failure that comes again every time
(`RepeatedFailure`)."""

import time as _time

INTERVAL = 10.0

_monotonic = _time.monotonic


class Throttle:
    """Warnings through `log`, each `key` at most every `interval` seconds."""

    def __init__(self, log, interval=INTERVAL):
        self.log = log
        self.interval = interval
        self.held = {}   # key -> [when logged, count held back, message, args]

    def warning(self, key, message, *args):
        now = _monotonic()
        entry = self.held.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            entry[2], entry[3] = message, args  # the latest, for flush()
            return
        if entry is not None and entry[1]:
            self._say_held(entry, now)
        self.held[key] = [now, 0, message, args]
        self.log.warning(message + " (more like it within %.0f s are "
                         "counted, not logged one by one)",
                         *args, self.interval)

    def flush(self):
        """Log the counts held back once their interval is over."""
        if not self.held:
            return
        now = _monotonic()
        for key, entry in list(self.held.items()):
            if now - entry[0] >= self.interval:
                del self.held[key]
                if entry[1]:
                    self._say_held(entry, now)

    def _say_held(self, entry, now):
        self.log.warning("%d more like this in the last %.0f s: " + entry[2],
                         entry[1], now - entry[0], *entry[3])


class RepeatedFailure:
    """A hook called on a timer (`on_idle()`, every second by default)
    that fails each time, say while its database is down, would log the
    same traceback every second for as long as that lasts. The first
    failure is logged whole; the same one again (same type and message)
    within `interval` seconds is counted, and the count is logged when the
    failure changes, the hook works again, or the interval is over (then
    with the traceback once more)."""

    def __init__(self, log, what, interval=60.0):
        self.log = log
        self.what = what        # "on_idle()"
        self.interval = interval
        self.key = None         # (type, message) of the failure held
        self.since = 0.0        # when it was last logged whole
        self.count = 0          # how often it came again since

    def failed(self, err, traceback_text):
        try:
            key = (type(err), str(err))
        except Exception:  # pylint: disable=broad-except
            key = (type(err), '')   # (its own __str__ raised)
        now = _monotonic()
        if key == self.key and now - self.since < self.interval:
            self.count += 1
            return
        self._say_count(now)
        self.key, self.since = key, now
        self.log.error("%s failed: %r (the same failure again within %.0f s "
                       "is counted, not logged each time)\n%s", self.what,
                       err, self.interval, traceback_text)

    def worked(self):
        """The hook returned: a failure held is over."""
        if self.key is not None:
            self._say_count(_monotonic())
            self.key = None

    def _say_count(self, now):
        if self.count:
            self.log.error("%s failed %d more time(s) in the last %.0f s "
                           "with %s: %s", self.what, self.count,
                           now - self.since, self.key[0].__name__,
                           self.key[1])
            self.count = 0
