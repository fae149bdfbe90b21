"""Dispatcher hooks: forwarding results to another pool, monitoring,
configuration updates.

    python3 examples/hooks.py
    curl -H 'Content-Type: application/octet-stream' --data-binary 'ABC123' \
        http://127.0.0.1:8080/lpr/recognize                 # a plate image
    curl http://127.0.0.1:8080/internal/storage/list        # what was stored
    curl -X POST http://127.0.0.1:8080/config?rate=5        # to every worker
    curl http://127.0.0.1:8080/lpr/config
    curl http://127.0.0.1:8080/monitor
"""

import os

import uhttp.workers as _workers


class LprWorker(_workers.Worker):
    def setup(self):
        self.rate_limit = None

    def on_config(self, config):
        self.rate_limit = config.get('rate_limit')

    @_workers.api('/lpr/recognize', 'POST')
    def recognize(self, request):
        image = request.data or b''
        return {'plate': bytes(image).decode('ascii', 'replace')[::-1]}

    @_workers.api('/lpr/config', 'GET')
    def config(self, request):
        return {'rate_limit': self.rate_limit, 'worker': self.worker_id}


class StorageWorker(_workers.Worker):
    def setup(self):
        self.saved = []

    @_workers.api('/internal/storage/save', 'POST')
    def save(self, request):
        self.saved.append(request.data)      # request_id is -1: nobody waits
        return None

    @_workers.api('/internal/storage/list', 'GET')
    def list_saved(self, request):
        return {'saved': self.saved}


class MyDispatcher(_workers.Dispatcher):
    def on_response(self, response, pending):
        if response.status == 200 and pending.pool.name == 'LprWorker':
            storage = self._find_pool('/internal/storage')
            storage.request_queue.put(_workers.Request(
                request_id=-1, method='POST', path='/internal/storage/save',
                data={'image': bytes(pending.client.data or b'').decode('ascii', 'replace'),
                      'result': response.data}))

    @_workers.sync('/config', 'POST')
    def set_config(self, client, path_params):
        rate = int((client.query or {}).get('rate', 100))
        for pool in self._pools:
            pool.send_config({'rate_limit': rate})
        client.respond({'sent': rate})

    @_workers.sync('/monitor')
    def monitor(self, client, path_params):
        client.respond({'pools': [pool.status() for pool in self._pools],
                        'pending': len(self._pending)})

    def on_idle(self):
        for pool in self._pools:
            if pool.is_degraded:
                self.log.warning("pool %s is degraded", pool.name)


def main():
    MyDispatcher(
        port=int(os.environ.get('PORT', '8080')),
        address=os.environ.get('ADDRESS', '127.0.0.1'),
        pools=[
            _workers.WorkerPool(LprWorker, num_workers=2, routes=['/lpr/**']),
            _workers.WorkerPool(StorageWorker, routes=['/internal/**']),
        ],
    ).run()


if __name__ == '__main__':
    main()
