"""What many test apps share: a Dispatcher with the sync routes the tests
read, /probe (is the dispatcher serving?) and /_status (pools, pending
requests, open streams and connections, queued requests)."""

import uhttp.workers as _workers


class StatusDispatcher(_workers.Dispatcher):
    @_workers.sync('/probe')
    def probe(self, client, path_params):
        client.respond({'ok': True})

    @_workers.sync('/_status')
    def status(self, client, path_params):
        client.respond({
            'pools': [pool.status() for pool in self._pools],
            'pending': len(self._pending),
            'streams': self._streams,
            'connections': len(self._server.connections),
            'queued': sum(len(pool._queue) for pool in self._pools),
        })
