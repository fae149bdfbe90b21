"""Server-Sent Events and NDJSON streams from workers.

Two pools with the same worker code, /a/** and /b/** (timeout 2 s,
heartbeat 0.25 s), so a test can show that only the owner of a stream is
told about its client leaving. Every stream a worker started is kept in
`self.streams` (also after its client left) so that sends to a gone client
can be tried.
"""
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class StreamWorker(_workers.Worker):
    def setup(self):
        self.streams = {}        # request_id -> request, never forgotten
        self.subscribers = {}    # request_id -> request, until disconnect
        self.tickers = {}        # request_id -> [request, next tick number]
        self.disconnected = []   # request ids, in on_disconnect() order
        self.late_sends = []     # send_event() results after a disconnect
        self.deferred_later = None

    def _hello(self, request):
        request.send_event(
            data={'worker': self.worker_id, 'pool': self.pool_name,
                  'request_id': request.request_id},
            event='hello', event_id='0')

    @_workers.api('/{pool}/events', 'GET')
    def events(self, request):
        request.response_stream(
            headers={'X-Stream': 'events', 'X-Pool': self.pool_name},
            cookies={'session': 'xyz', 'pool': request.path_params['pool']})
        self.streams[request.request_id] = request
        self.subscribers[request.request_id] = request
        self._hello(request)
        return _workers.DEFERRED

    @_workers.api('/{pool}/publish', 'POST')
    def publish(self, request):
        data = request.data or {}
        results = {}
        for request_id, subscriber in list(self.subscribers.items()):
            results[request_id] = subscriber.send_event(
                data=data.get('data'), event=data.get('event'),
                event_id=data.get('id'))
        return {'sent': results}

    @_workers.api('/{pool}/send/{id:int}', 'POST')
    def send_to(self, request):
        """send_event() to one stream, known or gone."""
        target = self.streams.get(request.path_params['id'])
        if target is None:
            return {'error': 'unknown stream'}, 404
        result = target.send_event(data='late', event='late')
        chunk = target.send_chunk(b'data: late chunk\n\n')
        self.late_sends.append([result, chunk])
        return {'send_event': result, 'send_chunk': chunk,
                'is_open': target.is_open}

    @_workers.api('/{pool}/later', 'GET')
    def later(self, request):
        """Deferred now; turned into a stream by /{pool}/start-later."""
        self.streams[request.request_id] = request
        self.deferred_later = request
        return _workers.DEFERRED

    @_workers.api('/{pool}/start-later', 'POST')
    def start_later(self, request):
        target = self.deferred_later
        self.deferred_later = None
        if target is None:
            return {'error': 'nothing deferred'}, 404
        target.response_stream(headers={'X-Stream': 'later'})
        self.subscribers[target.request_id] = target
        target.send_event(data={'request_id': target.request_id},
                          event='started-later')
        return {'request_id': target.request_id}

    @_workers.api('/{pool}/info', 'GET')
    def info(self, request):
        return {'worker': self.worker_id, 'pool': self.pool_name,
                'subscribers': sorted(self.subscribers),
                'tickers': sorted(self.tickers),
                'disconnected': self.disconnected,
                'late_sends': self.late_sends}

    @_workers.api('/{pool}/script', 'GET')
    def script(self, request):
        """A fixed sequence of events, then the end of the stream."""
        request.response_stream(headers={'X-Stream': 'script'},
                                cookies={'flavour': 'mint'})
        request.send_event(data='plain text')
        request.send_event(data={'a': 1, 'b': [1, 2], 'c': 'ü'}, event='json',
                           event_id='7')
        request.send_event(data=[1, 'two', None], event='list', event_id=8)
        request.send_event(data='line one\nline two\nline three',
                           event='multi', event_id='9', retry=2500)
        request.send_event(data='', event='empty-data')
        request.send_event(data='grüße 🌍', event='utf8')
        request.send_event(retry=1000)
        request.send_chunk(b'event: raw\ndata: from chunk\n\n')
        request.send_chunk(b'data: split ')
        request.send_chunk(b'across chunks\n\n')
        request.send_event(data='bye', event='end', event_id='10')
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/{pool}/plain-stream', 'GET')
    def plain_stream(self, request):
        request.response_stream('text/plain; charset=utf-8',
                                headers={'X-Stream': 'plain'})
        for index in range(5):
            request.send_chunk(f'line {index}\n')
        for index in range(10):  # 160 KiB still buffered when the end comes
            request.send_chunk(bytes([97 + index]) * 16384)
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/{pool}/own-headers', 'GET')
    def own_headers(self, request):
        """Headers given in mixed case replace the stream's defaults."""
        request.response_stream(headers={
            'Cache-Control': 'no-store',
            'Content-Type': 'text/event-stream; charset=utf-8',
            'X-Accel-Buffering': 'no'})
        request.send_event(data='own headers', event='done')
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/{pool}/ndjson', 'GET')
    def ndjson(self, request):
        request.response_ndjson(headers={'X-Stream': 'ndjson'},
                                cookies={'format': 'ndjson'})
        for value in ({'i': 0}, [1, 2, 3], 'text\nwith newline', 42, 2.5,
                      None, True, {'nested': {'k': ['v', {'x': None}]}}):
            request.send_ndjson(value)
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/{pool}/ticker', 'GET')
    def ticker(self, request):
        """Ticks from on_idle() for as long as the client stays."""
        request.response_stream()
        self.streams[request.request_id] = request
        self.tickers[request.request_id] = [request, 0]
        self._hello(request)
        return _workers.DEFERRED

    def on_idle(self):
        for request_id, entry in list(self.tickers.items()):
            request, number = entry
            entry[1] = number + 1
            request.send_event(data={'tick': number, 'at': time.time()},
                               event='tick', event_id=str(number))

    def on_disconnect(self, request_id):
        self.disconnected.append(request_id)
        self.subscribers.pop(request_id, None)
        self.tickers.pop(request_id, None)


class PoolA(StreamWorker):
    pass


class PoolB(StreamWorker):
    pass


class App(StatusDispatcher):
    """Serves /probe and /_status (status_app.py)."""


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(PoolA, num_workers=1, routes=['/a/**'],
                            timeout=2, heartbeat_interval=0.25),
        _workers.WorkerPool(PoolB, num_workers=1, routes=['/b/**'],
                            timeout=2, heartbeat_interval=0.25),
    ]).run()
