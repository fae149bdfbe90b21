"""The README's Quick Start: one item pool, an x-api-key check, /health.

No fallback pool, so a path outside '/api/**' that is neither static nor
sync answers 404 from the dispatcher.
"""
import uhttp.workers as _workers

VALID_KEYS = {'key-alpha', 'key-beta'}


class ItemWorker(_workers.Worker):
    def setup(self):
        self.items = {}
        self.next_id = 1
        for name in ('first', 'second'):
            self.items[self.next_id] = {'id': self.next_id, 'name': name}
            self.next_id += 1

    @_workers.api('/api/items', 'GET')
    def list_items(self, request):
        return {'items': list(self.items.values())}

    @_workers.api('/api/item/{id:int}', 'GET')
    def get_item(self, request):
        item = self.items.get(request.path_params['id'])
        if not item:
            return {'error': 'Not found'}, 404
        return item


class MyDispatcher(_workers.Dispatcher):
    def do_check(self, client):
        api_key = client.headers.get('x-api-key')
        if api_key not in VALID_KEYS:
            client.respond({'error': 'unauthorized'}, status=401)
            raise _workers.RejectRequest()

    @_workers.sync('/health')
    def health(self, client, path_params):
        client.respond({'status': 'ok'})


def main():
    dispatcher = MyDispatcher(
        port=0, address='127.0.0.1',
        pools=[
            _workers.WorkerPool(
                ItemWorker, num_workers=2,
                routes=['/api/**'],
                timeout=30,
            ),
        ],
    )
    dispatcher.run()


if __name__ == '__main__':
    main()
