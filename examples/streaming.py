"""Deferred answers, Server-Sent Events and NDJSON.

    python3 examples/streaming.py
    curl -N http://127.0.0.1:8080/events            # stays open
    curl -d '{"msg": "hi"}' -H 'Content-Type: application/json' \\
         http://127.0.0.1:8080/publish               # reaches every subscriber
    curl http://127.0.0.1:8080/later                # answered 1 s later
    curl http://127.0.0.1:8080/count?n=5            # an NDJSON stream
"""

import os
import time

import uhttp.workers as _workers


class EventWorker(_workers.Worker):
    def setup(self):
        self.subscribers = {}
        self.waiting = []     # (when, request) answered from on_idle
        self.counters = []    # NDJSON streams still counting

    @_workers.api('/events', 'GET')
    def events(self, request):
        request.response_stream()
        request.send_event(data={'subscribers': len(self.subscribers) + 1},
                           event='hello', retry=3000)
        self.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/publish', 'POST')
    def publish(self, request):
        for subscriber in self.subscribers.values():
            subscriber.send_event(data=request.data, event='update')
        return {'sent': len(self.subscribers)}

    @_workers.api('/later', 'GET')
    def later(self, request):
        self.waiting.append((time.monotonic() + 1.0, request))
        return _workers.DEFERRED

    @_workers.api('/count', 'GET')
    def count(self, request):
        n = int((request.query or {}).get('n', 3))
        request.response_ndjson()
        self.counters.append([request, 0, n])
        return _workers.DEFERRED

    def on_idle(self):   # every heartbeat_interval
        now = time.monotonic()
        for when, request in list(self.waiting):
            if when <= now:
                self.waiting.remove((when, request))
                request.respond(data={'waited': True})
        for counter in list(self.counters):
            request, value, last = counter
            request.send_ndjson({'value': value})
            counter[1] += 1
            if counter[1] > last:
                request.response_stream_end()
                self.counters.remove(counter)

    def on_disconnect(self, request_id):
        self.subscribers.pop(request_id, None)


def main():
    _workers.Dispatcher(
        port=int(os.environ.get('PORT', '8080')),
        address=os.environ.get('ADDRESS', '127.0.0.1'),
        pools=[_workers.WorkerPool(EventWorker, num_workers=1,
                                   heartbeat_interval=0.2)],
    ).run()


if __name__ == '__main__':
    main()
