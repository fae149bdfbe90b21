"""Whether the dispatchers of a remote worker's open requests are still there.

A dispatcher that stops as asked tells its workers of each open request
(a disconnect on their control streams). One that is killed, or whose
host is lost, tells nobody: a remote worker would keep its deferred
requests and streams (an SSE subscriber list, say) for ever, writing
into an answer stream nobody reads. So each dispatcher renews a key of
its own, `<answer stream>:alive`, every heartbeat interval, with a short
lifetime; a worker looks at the keys of the dispatchers it holds requests
of, and once one has been missing for GRACE seconds (longer than a
dispatcher takes to renew it after a Redis restart emptied Redis), the
worker's requests of that dispatcher end as if their clients had left
(`on_disconnect`). A key never seen (a dispatcher that does not renew
one) ends nothing.
"""

import time as _time

CHECK_EVERY = 1.0     # seconds between two looks
GRACE = 10.0          # seconds a key may be missing (at least)


def alive_key(reply_stream):
    """The key a dispatcher renews while it reads `reply_stream`."""
    return reply_stream + ':alive'


def alive_ms(interval):
    """The lifetime of the key, renewed every `interval` seconds."""
    return int(max(5.0, 3 * interval) * 1000)


class DispatcherWatch:
    def __init__(self, interval):
        self.grace = max(GRACE, 3 * interval + alive_ms(interval) / 1000)
        self.seen = set()       # answer streams whose key was there once
        self.missing = {}       # answer stream -> since when its key is not
        self._next = 0.0

    def gone(self, client, replies):
        """The ids of the requests in `replies` (request_id -> answer
        stream) whose dispatcher is gone; `client` asks Redis."""
        now = _time.monotonic()
        if now < self._next:
            return []
        self._next = now + CHECK_EVERY
        held = {}
        for request_id, stream in list(replies.items()):
            held.setdefault(stream, []).append(request_id)
        for stream in list(self.missing):
            if stream not in held:
                del self.missing[stream]
        self.seen &= set(held)
        ended = []
        for stream, request_ids in held.items():
            if client.exists(alive_key(stream)):
                self.seen.add(stream)
                self.missing.pop(stream, None)
            elif stream in self.seen:
                since = self.missing.setdefault(stream, now)
                if now - since >= self.grace:
                    del self.missing[stream]
                    ended.extend(request_ids)
        return ended
