"""Dispatcher hooks: on_response() forwarding to a storage pool with
request_id=-1, and on_idle() every SELECT_TIMEOUT seconds."""
import threading
import time

import uhttp.workers as _workers


class LprWorker(_workers.Worker):
    @_workers.api('/lpr/recognize', 'POST')
    def recognize(self, request):
        image = request.data.get('image') if isinstance(request.data, dict) else None
        if not isinstance(image, str):
            return {'error': 'no image'}, 422
        return {'plate': image[::-1].upper()}


class TextWorker(_workers.Worker):
    @_workers.api('/text/plain', 'GET')
    def text(self, request):
        return 'just text'


class StorageWorker(_workers.Worker):
    def setup(self):
        self.saved = []
        self.request_ids = []

    @_workers.api('/internal/storage/save', 'POST')
    def save(self, request):
        self.saved.append(request.data)
        self.request_ids.append(request.request_id)
        return {'saved': len(self.saved)}

    @_workers.api('/internal/storage/meta', 'POST')
    def meta(self, request):
        self.saved.append({'headers': request.headers,
                           'content_type': request.content_type,
                           'cookies': request.cookies})
        self.request_ids.append(request.request_id)
        return {'saved': len(self.saved)}

    @_workers.api('/storage/list', 'GET')
    def list_saved(self, request):
        return {'saved': self.saved, 'request_ids': self.request_ids}


class HookDispatcher(_workers.Dispatcher):
    SELECT_TIMEOUT = 0.2

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.idle_calls = 0
        self.idle_times = []
        self.seen = []

    def on_idle(self):
        self.idle_calls += 1
        self.idle_times.append(time.monotonic())
        del self.idle_times[:-50]

    def on_response(self, response, pending):
        self.seen.append({
            'status': response.status,
            'data': response.data,
            'pool': pending.pool.name,
            'client_path': pending.client.path,
            'client_method': pending.client.method,
            # the type the spec names, reachable from the one module
            'is_pending_request': isinstance(pending, _workers._PendingRequest),
        })
        if response.status == 200 and pending.pool.name == 'LprWorker':
            storage_pool = self._find_pool('/internal/storage')
            storage_pool.request_queue.put(_workers.Request(
                request_id=-1,
                method='POST',
                path='/internal/storage/save',
                data={
                    'image': pending.client.data,
                    'result': response.data,
                }))

    @_workers.sync('/_forward/{path:path}')
    def forward_to(self, client, path_params):
        # a fire-and-forget request to any path of the storage pool
        self._find_pool('/internal/storage').request_queue.put(_workers.Request(
            request_id=-1, method='POST', path='/' + path_params['path'],
            data={'forwarded': True}))
        client.respond({'queued': path_params['path']})

    @_workers.sync('/_forward_thread/{count:int}')
    def forward_from_thread(self, client, path_params):
        # a thread of the user's own (a device poller, a timer) queuing work
        queue = self._find_pool('/internal/storage').request_queue

        def run():
            for index in range(path_params['count']):
                queue.put(_workers.Request(
                    request_id=-1, method='POST',
                    path='/internal/storage/save',
                    data={'thread': index}))
        threading.Thread(target=run, daemon=True).start()
        client.respond({'queued': path_params['count']})

    @_workers.sync('/_forward_meta/{tag}')
    def forward_meta(self, client, path_params):
        # headers named as people write them, and a content_type given apart
        queue = self._find_pool('/internal/storage').request_queue
        queue.put(_workers.Request(
            request_id=-1, method='POST', path='/internal/storage/meta',
            data=b'x', headers={'X-Tag': path_params['tag'],
                                'Content-Type': 'application/json',
                                'Cookie': 'sid=s1'}))
        queue.put(_workers.Request(
            request_id=-1, method='POST', path='/internal/storage/meta',
            data=b'x', headers={'X-Tag': path_params['tag'] + '-2'},
            content_type='text/csv'))
        client.respond({'queued': 2})

    @_workers.sync('/_seen')
    def seen_responses(self, client, path_params):
        client.respond({'seen': self.seen, 'pending': len(self._pending)})

    @_workers.sync('/_idle')
    def idle(self, client, path_params):
        client.respond({'idle_calls': self.idle_calls,
                        'now': time.monotonic(),
                        'times': self.idle_times})


def main():
    HookDispatcher(
        port=0, address='127.0.0.1',
        pools=[
            _workers.WorkerPool(LprWorker, num_workers=2, routes=['/lpr/**']),
            _workers.WorkerPool(TextWorker, num_workers=1, routes=['/text/**']),
            _workers.WorkerPool(StorageWorker, num_workers=1,
                                routes=['/internal/storage/**',
                                        '/storage/**']),
        ],
    ).run()


if __name__ == '__main__':
    main()
