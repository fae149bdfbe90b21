"""A dispatcher with a remote pool (ItemWorker, served through Redis by
`uhttp-workers worker remote_app:ItemWorker`) beside a local pool.

Usage: remote_app.py REDIS_URL [stuck_timeout] [timeout] [local workers]
[max_content_length] [heartbeat_interval] [db, a keyword argument]
"""
import hashlib
import json
import os
import socket
import tempfile
import sys
import threading
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class ItemWorker(_workers.Worker):
    def setup(self):
        self.items = {}
        self.subscribers = {}
        self.config = None

    def on_config(self, config):
        self.config = config

    def on_idle(self):
        if not self._accepting and time.monotonic() >= self.resume_at:
            self.resume()

    @_workers.api('/api/pause/{seconds:float}', 'GET')
    def pause_for(self, request):
        self.resume_at = time.monotonic() + request.path_params['seconds']
        self.pause()
        return {'paused': True, 'pid': os.getpid()}

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid(), 'host': socket.gethostname(),
                'kwargs': self.kwargs}

    @_workers.api('/api/items', 'POST')
    def add(self, request):
        item_id = len(self.items) + 1
        self.items[item_id] = request.data
        return {'id': item_id, 'item': request.data, 'pid': os.getpid()}

    @_workers.api('/api/items', 'GET')
    def items_now(self, request):
        return {'items': list(self.items.values()), 'pid': os.getpid()}

    @_workers.api('/api/config', 'GET')
    def config_now(self, request):
        return {'config': self.config}

    @_workers.api('/api/sleep/{seconds:float}', 'GET')
    def sleep(self, request):
        seconds = request.path_params['seconds']
        time.sleep(seconds)
        return {'slept': seconds, 'pid': os.getpid(),
                'tag': (request.query or {}).get('tag')}

    @_workers.api('/api/long/{seconds:float}', 'GET')
    def long(self, request):
        until = time.monotonic() + request.path_params['seconds']
        while time.monotonic() < until:
            time.sleep(0.1)
            self.keep_alive()
        return {'done': True, 'tag': (request.query or {}).get('tag')}

    @_workers.api('/api/log', 'GET')
    def log_line(self, request):
        self.log.warning("remote hello from %d", os.getpid())
        return {'logged': True}

    @_workers.api('/api/later', 'GET')
    def later(self, request):
        def answer():
            time.sleep(0.2)
            request.respond(data={'later': True, 'pid': os.getpid()})
        threading.Thread(target=answer, daemon=True).start()
        return _workers.DEFERRED

    @_workers.api('/api/events', 'GET')
    def events(self, request):
        request.response_stream()
        for number in range(3):
            request.send_event(data={'n': number}, event='tick')
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/api/subscribe', 'GET')
    def subscribe(self, request):
        request.response_stream()
        self.subscribers[request.request_id] = request
        return _workers.DEFERRED

    @_workers.api('/api/subscribers', 'GET')
    def subscriber_count(self, request):
        return {'count': len(self.subscribers)}

    def on_disconnect(self, request_id):
        if self.subscribers.pop(request_id, None) is not None:
            self.log.info("subscriber %s gone", request_id)

    @_workers.api('/api/items/stream/{count:int}', 'GET')
    def items_stream(self, request):
        request.response_stream('application/x-ndjson')
        for number in range(request.path_params['count']):
            request.send_chunk(json.dumps({'n': number, 'pid': os.getpid()})
                               + '\n')
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/api/digest', 'POST')
    def digest(self, request):
        body = request.data
        return {'sha256': hashlib.sha256(body).hexdigest(), 'size': len(body),
                'type': type(body).__name__}

    @_workers.api('/api/blob/{size:int}', 'GET')
    def blob(self, request):
        return bytes(range(256)) * (request.path_params['size'] // 256)

    @_workers.api('/api/export/{size:int}', 'GET')
    def export(self, request):
        with tempfile.NamedTemporaryFile('wb', suffix='.bin',
                                         delete=False) as file:
            file.write(bytes(range(256)) * (request.path_params['size'] // 256))
        opened = open(file.name, 'rb')  # the answer takes it over
        os.unlink(file.name)
        return _workers.FileResponse(opened, download_name='export.bin')

    @_workers.api('/api/fail', 'GET')
    def fail(self, request):
        raise RuntimeError('boom')

    @_workers.api('/api/exit/{code:int}', 'GET')
    def exit_now(self, request):
        os._exit(request.path_params['code'])


class LocalWorker(_workers.Worker):
    @_workers.api('/local/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid(), 'local': True}


class App(StatusDispatcher):
    """Serves /_status (status_app.py)."""

    def on_worker_died(self, pool, worker_id, reason, exitcode, victims):
        self.log.warning("on_worker_died(%s, %s, %r, exitcode=%r, %d victim(s))",
                         pool.name, worker_id, reason, exitcode, len(victims))
        super().on_worker_died(pool, worker_id, reason, exitcode, victims)

    @_workers.sync('/_fire')
    def fire(self, client, path_params):
        pool = self._find_pool('/api/items')
        pool.request_queue.put(_workers.Request(
            request_id=-1, method='POST', path='/api/items',
            data={'fired': True}))
        client.respond({'queued': True})

    @_workers.sync('/_config')
    def push_config(self, client, path_params):
        for pool in self._pools:
            pool.send_config({'version': client.query.get('v') if client.query else None})
        client.respond({'sent': True})


if __name__ == '__main__':
    url = sys.argv[1]
    stuck = float(sys.argv[2]) if len(sys.argv) > 2 else 3
    timeout = float(sys.argv[3]) if len(sys.argv) > 3 else 10
    local = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    limits = ({'max_content_length': int(sys.argv[5])} if len(sys.argv) > 5
              and sys.argv[5] != '-' else {})
    interval = float(sys.argv[6]) if len(sys.argv) > 6 else 0.25
    db = sys.argv[7] if len(sys.argv) > 7 else 'items.db'
    App(port=0, address='127.0.0.1', metrics_path='/metrics', **limits,
        dashboard_path='/_dashboard', pools=[
        _workers.WorkerPool(ItemWorker, broker=url, num_workers=local,
                            routes=['/api/**'], stuck_timeout=stuck,
                            timeout=timeout, heartbeat_interval=interval,
                            log_level=_workers.LOG_INFO, db=db),
        _workers.WorkerPool(LocalWorker, num_workers=1, routes=['/local/**']),
    ]).run()
