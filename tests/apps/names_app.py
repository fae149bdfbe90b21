"""An app whose handlers are named after given attribute names (a JSON
file: {'worker': [...], 'handler': [...], 'dispatcher': [...]}): @api
methods on a Worker and on an ApiHandler, @sync methods on a Dispatcher.
Every handler answers which handler it is, after using the library's own
members (log, kwargs, keep_alive, the pending table), so a shadowed
internal shows as a failure."""

import json
import os
import sys

import uhttp.workers as _workers
from uhttp.workers import namespace


def worker_route(name):
    def handler(self, request):
        self.keep_alive()
        self.log.info('handler %s', name)
        return {'handler': name, 'kind': 'worker', 'pid': os.getpid(),
                'kwargs': self.kwargs, 'accepting': self._accepting}
    handler.__name__ = name
    return _workers.api(f'/w/{name}', 'GET')(handler)


def handler_route(name):
    def handler(self, request):
        self.worker.keep_alive()
        return {'handler': name, 'kind': 'api-handler',
                'params': request.path_params}
    handler.__name__ = name
    return _workers.api(f'/{name}/{{n:int}}', 'GET')(handler)


def sync_route(name):
    def handler(self, client, path_params):
        client.respond({'handler': name, 'kind': 'sync',
                        'pending': len(self._pending),
                        'pools': [pool.name for pool in self._pools]})
    handler.__name__ = name
    return _workers.sync(f'/d/{name}', 'GET')(handler)


def build(names):
    worker_names = [n for n in names['worker'] if namespace.WORKER.what(n) is None]
    handler_names = [n for n in names['handler']
                     if namespace.API_HANDLER.what(n) is None]
    sync_names = [n for n in names['dispatcher']
                  if namespace.DISPATCHER.what(n) is None]
    handler_class = type('NamedHandler', (_workers.ApiHandler,), dict(
        {name: handler_route(name) for name in handler_names}, PATTERN='/h'))

    def setup(self):
        # ordinary attributes a user sets, named like the library's own
        for name in ('status', 'name', 'items'):
            setattr(self, name, name)

    worker_class = type('NamedWorker', (_workers.Worker,), dict(
        {name: worker_route(name) for name in worker_names},
        HANDLERS=[handler_class], setup=setup))

    def on_request_accepted(self, request_id, client, pool):
        return {'accepted': request_id}

    dispatcher_class = type('NamedDispatcher', (_workers.Dispatcher,), dict(
        {name: sync_route(name) for name in sync_names},
        on_request_accepted=on_request_accepted))
    return dispatcher_class, worker_class


if __name__ == '__main__':
    with open(sys.argv[1], encoding='utf-8') as file:
        given = json.load(file)
    dispatcher_class, worker_class = build(given)
    dispatcher_class(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(worker_class, num_workers=2, log_level=_workers.LOG_INFO,
                            colour='blue')]).run()
