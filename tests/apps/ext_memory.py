"""WorkerPool(worker_memory_limit_mb=N): a runaway allocation ends only the
worker that made it.

The limit is this process's address space at start plus 200 MB (a freshly
forked worker maps about as much as the dispatcher that forked it), or
$EXT_MEM_LIMIT_MB when set. GET /_status reports it.
"""
import os

import uhttp.workers as _workers


def address_space_mb():
    with open('/proc/self/status', encoding='ascii') as status:
        for line in status:
            if line.startswith('VmSize:'):
                return int(line.split()[1]) // 1024
    raise RuntimeError('no VmSize in /proc/self/status')


LIMIT_MB = int(os.environ.get('EXT_MEM_LIMIT_MB') or address_space_mb() + 200)


class MemWorker(_workers.Worker):
    def setup(self):
        self.hoard = []
    @_workers.api('/m/ping', 'GET')
    def ping(self, request):
        return {'pid': os.getpid(), 'worker': self.worker_id}

    @_workers.api('/m/huge', 'GET')
    def huge(self, request):
        block = bytearray(10 ** 10)
        return {'allocated': len(block)}

    @_workers.api('/m/answer', 'GET')
    def answer(self, request):
        # the handler returns; encoding its JSON (over 300 MB) runs out
        return ['x' * 100] * 3_000_000

    @_workers.api('/m/leak', 'GET')
    def leak(self, request):
        # a leak: small blocks kept by the worker, still held as it fails
        while True:
            self.hoard.append(bytearray(1000))

    @_workers.api('/m/grow', 'GET')
    def grow(self, request):
        hoard = []
        while True:
            hoard.append(bytearray(16 * 1024 * 1024))


class OtherWorker(_workers.Worker):
    @_workers.api('/o/ping', 'GET')
    def ping(self, request):
        return {'pid': os.getpid()}


class MemDispatcher(_workers.Dispatcher):
    @_workers.sync('/_status')
    def status(self, client, path_params):
        client.respond({'limit_mb': LIMIT_MB,
                        'pools': [pool.status() for pool in self._pools]})


if __name__ == '__main__':
    MemDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(MemWorker, num_workers=2, routes=['/m/**'],
                            worker_memory_limit_mb=LIMIT_MB, max_restarts=50),
        _workers.WorkerPool(OtherWorker, num_workers=1, routes=['/o/**']),
    ]).run()
