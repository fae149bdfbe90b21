"""The Quick Start: one pool of item workers, an API key, a health check.

    python3 examples/quickstart.py
    curl -H 'X-API-Key: secret' http://127.0.0.1:8080/api/items
    curl -H 'X-API-Key: secret' -d '{"name": "pen"}' -H 'Content-Type: application/json' \\
         http://127.0.0.1:8080/api/items
    curl -H 'X-API-Key: secret' http://127.0.0.1:8080/api/item/1
    curl http://127.0.0.1:8080/health
"""

import os

import uhttp.workers as _workers

VALID_KEYS = {'secret'}


class ItemWorker(_workers.Worker):
    def setup(self):
        self.items = {}
        self.next_id = 1

    @_workers.api('/api/items', 'GET')
    def list_items(self, request):
        return {'items': list(self.items.values())}

    @_workers.api('/api/items', 'POST')
    def add_item(self, request):
        if not isinstance(request.data, dict) or 'name' not in request.data:
            return {'error': 'send {"name": ...}'}, 400
        item = {'id': self.next_id, 'name': str(request.data['name'])}
        self.items[item['id']] = item
        self.next_id += 1
        return item, 201

    @_workers.api('/api/item/{id:int}', 'GET')
    def get_item(self, request):
        item = self.items.get(request.path_params['id'])
        if not item:
            return {'error': 'Not found'}, 404
        return item


class MyDispatcher(_workers.Dispatcher):
    def do_check(self, client):
        if client.headers.get('x-api-key') not in VALID_KEYS:
            client.respond({'error': 'unauthorized'}, status=401)
            raise _workers.RejectRequest()

    @_workers.sync('/health')
    def health(self, client, path_params):
        client.respond({'status': 'ok'})


def main():
    MyDispatcher(
        port=int(os.environ.get('PORT', '8080')),
        address=os.environ.get('ADDRESS', '127.0.0.1'),
        pools=[_workers.WorkerPool(ItemWorker, num_workers=1,
                                   routes=['/api/**'], timeout=30)],
    ).run()


if __name__ == '__main__':
    main()
