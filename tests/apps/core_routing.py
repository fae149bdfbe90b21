"""Several pools, static files, sync handlers and a dispatcher do_check.

Every pool answers with its own name so a test can see who served a path.
The static directory comes from the CORE_STATIC_DIR environment variable.

Dispatcher.do_check looks at the 'x-block' header:
  'custom'  -> raise RejectRequest({'error': 'blocked'}, 429) (no respond)
  'default' -> raise RejectRequest() (no respond: {'error': 'Rejected'}, 403)
and counts its calls; GET /_checks reports the count.

The sync route /sync-reject/{how} raises RejectRequest itself, as a worker
handler may: 'custom' -> RejectRequest({'error': 'no token'}, 401),
'default' -> RejectRequest(), 'after' -> respond first, then raise.
"""
import os

import uhttp.workers as _workers


def _who(pool, request):
    return {'pool': pool, 'path': request.path, 'method': request.method}


def _catch_all(class_name, label, prefixes, depth=3):
    """A Worker class answering each prefix and up to `depth` segments below."""
    namespace = {'__module__': __name__}
    for number, prefix in enumerate(prefixes):
        for count in range(depth + 1):
            pattern = prefix + ''.join(f'/{{p{i}}}' for i in range(count))
            if not pattern:
                continue

            def handler(self, request):
                return _who(label, request)
            namespace[f'route_{number}_{count}'] = _workers.api(pattern)(handler)
    return type(class_name, (_workers.Worker,), namespace)


ComputeWorker = _catch_all('ComputeWorker', 'compute', ['/api/compute'])
StatusWorker = _catch_all('StatusWorker', 'status', ['/api/status'], depth=0)
StorageWorker = _catch_all('StorageWorker', 'storage',
                           ['/api/items', '/api/item'])
# '/api/**' is listed after the narrower pools: it gets the rest of /api
ApiWorker = _catch_all('ApiWorker', 'api', ['/api'])
GeneralWorker = _catch_all('GeneralWorker', 'general', [''])


class RoutingDispatcher(_workers.Dispatcher):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.checks = 0

    def do_check(self, client):
        self.checks += 1
        block = client.headers.get('x-block')
        if block == 'custom':
            raise _workers.RejectRequest({'error': 'blocked'}, 429)
        if block == 'default':
            raise _workers.RejectRequest()

    @_workers.sync('/_checks')
    def count_checks(self, client, path_params):
        client.respond({'checks': self.checks})

    @_workers.sync('/static/both.txt')
    def static_shadowed(self, client, path_params):
        client.respond({'served_by': 'sync'})

    @_workers.sync('/static/only-sync')
    def static_miss(self, client, path_params):
        client.respond({'served_by': 'sync'})

    @_workers.sync('/api/compute/sync')
    def compute_sync(self, client, path_params):
        client.respond({'served_by': 'sync'})

    @_workers.sync('/sync-reject/{how}')
    def sync_reject(self, client, path_params):
        how = path_params['how']
        if how == 'custom':
            raise _workers.RejectRequest({'error': 'no token'}, 401)
        if how == 'after':
            client.respond({'answered': 'first'}, status=202)
        raise _workers.RejectRequest()

    @_workers.sync('/sync/{name}')
    def named(self, client, path_params):
        client.respond({'served_by': 'sync', 'name': path_params['name']})


def main():
    RoutingDispatcher(
        port=0, address='127.0.0.1',
        static_routes={'/static/': os.environ['CORE_STATIC_DIR']},
        pools=[
            _workers.WorkerPool(ComputeWorker, num_workers=1,
                                routes=['/api/compute/**'], timeout=60),
            _workers.WorkerPool(StatusWorker, num_workers=1,
                                routes=['/api/status']),
            _workers.WorkerPool(StorageWorker, num_workers=1,
                                routes=['/api/items/**', '/api/item/**'],
                                timeout=10),
            _workers.WorkerPool(ApiWorker, num_workers=1, routes=['/api/**']),
            _workers.WorkerPool(GeneralWorker, num_workers=1),
        ],
    ).run()


if __name__ == '__main__':
    main()
