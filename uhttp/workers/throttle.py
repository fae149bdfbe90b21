"""A WARNING that can come thousands of times a second (work dropped under
overload, one line per dropped item) would bury everything else in the log
just when it matters. Such a warning is logged at most once per key and
interval; the ones held back meanwhile are counted, and the count is
logged (with the latest of them) by `flush()` once the interval is over."""

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
