"""One worker class in two pools: shelves 'a' and 'b' of ItemWorker, each
with its own routes and kwargs, and the dispatcher's /monitor and /metrics."""
import os

import uhttp.workers as _workers


class ItemWorker(_workers.Worker):
    @_workers.api('/a/{name}', 'GET')
    @_workers.api('/b/{name}', 'GET')
    def item(self, request):
        return {'shelf': self.kwargs['shelf'], 'pid': os.getpid(),
                'name': request.path_params['name']}


class ShelfDispatcher(_workers.Dispatcher):
    @_workers.sync('/monitor')
    def monitor(self, client, path_params):
        client.respond({'pools': [pool.status() for pool in self._pools]})


def main():
    ShelfDispatcher(
        port=0, address='127.0.0.1', metrics_path='/metrics',
        pools=[
            _workers.WorkerPool(ItemWorker, routes=['/a/**'], shelf='a'),
            _workers.WorkerPool(ItemWorker, routes=['/b/**'], shelf='b',
                                timeout=5),
        ],
    ).run()


if __name__ == '__main__':
    main()
