"""Demo: a notes service with a live feed and a CPU-heavy endpoint.

    python3 examples/demo.py            # then open http://127.0.0.1:8080/

- static files: the page in examples/static/, served by the dispatcher
- sync handlers: /health and /status, answered inside the dispatcher
- authentication: writes (POST/DELETE) need the header X-API-Key
- pools: NotesWorker (1 process: the notes and their live feed) and
  ComputeWorker (2 processes: prime counting, which burns CPU)
- Server-Sent Events: /api/notes/events streams every change
- operations: Prometheus metrics at /metrics (with the workers' own
  metrics: notes held, primes computed), a live dashboard at /_dashboard
- WebSocket: /api/notes/ws pushes every change too, and echoes what the
  page sends (the dispatcher speaks the protocol, the worker gets messages)
"""

import hashlib
import json
import os
import sys
import time

import uhttp.workers as _workers

HERE = os.path.dirname(os.path.abspath(__file__))
API_KEY = os.environ.get('DEMO_API_KEY', 'demo-key')
PORT = int(os.environ.get('PORT', '8080'))


class NotesHandler(_workers.ApiHandler):
    """CRUD for notes: /api/notes and /api/notes/{id}."""

    PATTERN = '/api/notes'

    @_workers.api('', 'GET')
    def list_notes(self, request):
        return {'notes': list(self.worker.notes.values())}

    @_workers.api('', 'POST')
    def create(self, request):
        data = request.data
        if not isinstance(data, dict) or not str(data.get('text', '')).strip():
            return {'error': "send JSON like {\"text\": \"...\"}"}, 400
        note = self.worker.add(str(data['text'])[:500])
        return note, 201

    @_workers.api('/{id:int}', 'GET')
    def get(self, request):
        note = self.worker.notes.get(request.path_params['id'])
        if note is None:
            return {'error': 'no such note'}, 404
        return note

    @_workers.api('/{id:int}', 'DELETE')
    def delete(self, request):
        note = self.worker.notes.pop(request.path_params['id'], None)
        if note is None:
            return {'error': 'no such note'}, 404
        self.worker.metrics['demo_notes'].set(len(self.worker.notes))
        self.worker.publish('deleted', {'id': note['id']})
        return {'deleted': note['id']}

    @_workers.api('/events', 'GET')
    def events(self, request):
        """Live feed: every change as a Server-Sent Event."""
        request.response_stream()
        request.send_event(data={'notes': len(self.worker.notes)},
                           event='hello', retry=2000)
        self.worker.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.websocket('/ws')
    def socket(self, ws):
        """Live feed and echo over a WebSocket."""
        ws.accept()
        ws.send(json.dumps({'event': 'hello', 'notes': len(self.worker.notes),
                            'pid': os.getpid()}))
        self.worker.sockets[ws.request_id] = ws


class NotesWorker(_workers.Worker):
    """Holds the notes in memory; one process, so every subscriber sees
    every change."""

    HANDLERS = [NotesHandler]

    def setup(self):
        self.notes = {}
        self.next_id = 1
        self.subscribers = {}
        self.sockets = {}        # request_id -> WebSocket
        self.add('Welcome! This note lives in a worker process.')

    def add(self, text):
        note = {'id': self.next_id, 'text': text, 'created': time.time()}
        self.notes[note['id']] = note
        self.metrics['demo_notes'].set(len(self.notes))
        self.next_id += 1
        self.publish('created', note)
        self.log.info("note {id} created", id=note['id'])
        return note

    def publish(self, event, data):
        for request in list(self.subscribers.values()):
            request.send_event(data=data, event=event)
        for ws in list(self.sockets.values()):
            ws.send(json.dumps({'event': event, 'data': data}))

    def on_ws_message(self, ws, message):
        if isinstance(message, bytes):
            message = message.decode('utf-8', 'replace')
        ws.send(json.dumps({'event': 'echo', 'text': message[:1000],
                            'pid': os.getpid()}))

    def on_ws_close(self, ws, code, reason):
        self.sockets.pop(ws.request_id, None)

    def on_idle(self):
        for request in list(self.subscribers.values()):
            request.send_event(data={'time': time.time()}, event='tick')

    def on_disconnect(self, request_id):
        self.subscribers.pop(request_id, None)


class ComputeWorker(_workers.Worker):
    """CPU-heavy work, in parallel processes: the dispatcher stays free."""

    def setup(self):
        self.limit = self.kwargs.get('limit', 2_000_000)

    @_workers.api('/api/compute/primes', 'GET')
    def primes(self, request):
        try:
            n = int((request.query or {}).get('n', 100000))
        except ValueError:
            return {'error': 'n must be an integer'}, 400
        if not 2 <= n <= self.limit:
            return {'error': f'n must be between 2 and {self.limit}'}, 400
        started = time.perf_counter()
        sieve = bytearray([1]) * (n + 1)
        sieve[0:2] = b'\0\0'
        for i in range(2, int(n ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i::i] = bytes(len(range(i * i, n + 1, i)))
        seconds = time.perf_counter() - started
        self.metrics['demo_computations_total'].inc(kind='primes')
        self.metrics['demo_compute_seconds'].observe(seconds)
        return {'n': n, 'primes': sum(sieve), 'worker': self.worker_id,
                'ms': round(seconds * 1000, 2)}

    @_workers.api('/api/compute/sha256', 'POST')
    def sha256(self, request):
        body = request.data
        if isinstance(body, (dict, list)):
            body = repr(body).encode()
        self.metrics['demo_computations_total'].inc(kind='sha256')
        return {'sha256': hashlib.sha256(body or b'').hexdigest(),
                'worker': self.worker_id}


class DemoDispatcher(_workers.Dispatcher):

    def do_check(self, client):
        """Reads are open; writes need the API key."""
        if client.method in ('POST', 'PUT', 'DELETE', 'PATCH') and (
                client.headers.get('x-api-key') != API_KEY):
            client.respond({'error': 'unauthorized: send X-API-Key'}, status=401)
            raise _workers.RejectRequest()

    @_workers.sync('/health')
    def health(self, client, path_params):
        client.respond({'status': 'ok'})

    @_workers.sync('/status')
    def status(self, client, path_params):
        client.respond({'pools': [pool.status() for pool in self._pools],
                        'pending': len(self._pending)})


def make():
    """The demo's dispatcher: `uhttp-workers demo:make` runs it too."""
    return DemoDispatcher(
        port=PORT,
        address=os.environ.get('ADDRESS', '127.0.0.1'),
        static_routes={'/': os.path.join(HERE, 'static')},
        metrics_path='/metrics',
        dashboard_path='/_dashboard',
        pools=[
            _workers.WorkerPool(NotesWorker, num_workers=1,
                                routes=['/api/notes/**'],
                                log_level=_workers.LOG_INFO,
                                heartbeat_interval=5, metrics=[
                                    _workers.Gauge('demo_notes',
                                                   'Notes held')]),
            _workers.WorkerPool(ComputeWorker, num_workers=2,
                                routes=['/api/compute/**'], timeout=10,
                                limit=5_000_000, metrics=[
                                    _workers.Counter(
                                        'demo_computations_total',
                                        'Computations done', labels=['kind']),
                                    _workers.Histogram(
                                        'demo_compute_seconds',
                                        'Time spent counting primes',
                                        buckets=(0.001, 0.01, 0.1, 1))]),
        ],
    )


def main():
    dispatcher = make()
    print(f"demo: http://127.0.0.1:{PORT}/  (API key for writes: {API_KEY}; "
          f"dashboard at /_dashboard, metrics at /metrics)", file=sys.stderr)
    dispatcher.run()


if __name__ == '__main__':
    main()
