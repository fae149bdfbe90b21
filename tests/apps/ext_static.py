"""Static mounts given as dicts: extra headers, authoritative mounts, and
the on_static_served() hook.

Environment:
  EXT_STATIC_ROOT  a directory holding 'hard/' and 'soft/' (and files
                   outside them, which must never be served)

'/hard/' is authoritative, '/soft/' is not; a pool owns both prefixes and a
sync handler sits under each, so a test sees what a miss falls through to.
GET /_ctl?raise=1 makes on_static_served() raise (raise=0 stops it).
GET /_exhaust opens files in the dispatcher up to its open-file limit;
GET /_restore closes them.
EXT_HARD_SOFT=1 makes '/hard/' non-authoritative too (same paths, other
outcome).
"""
import os
import resource

import uhttp.workers as _workers


class MountWorker(_workers.Worker):
    @_workers.api('/hard/{rest:path}')
    def hard(self, request):
        return {'pool': 'hard', 'path': request.path}

    @_workers.api('/soft/{rest:path}')
    def soft(self, request):
        return {'pool': 'soft', 'path': request.path}


class StaticDispatcher(_workers.Dispatcher):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.served = []
        self.hook_raises = False

    def on_static_served(self, client, file_path, status):
        self.served.append({'path': client.path, 'file': file_path,
                            'status': status})
        if self.hook_raises:
            raise RuntimeError('static hook exploded')

    @_workers.sync('/hard/sync-route')
    def hard_sync(self, client, path_params):
        client.respond({'sync': 'hard'})

    @_workers.sync('/soft/sync-route')
    def soft_sync(self, client, path_params):
        client.respond({'sync': 'soft'})

    @_workers.sync('/_served')
    def served_calls(self, client, path_params):
        client.respond({'served': self.served})

    @_workers.sync('/_ctl')
    def control(self, client, path_params):
        self.hook_raises = (client.query or {}).get('raise') == '1'
        client.respond({'raise': self.hook_raises})

    @_workers.sync('/_exhaust')
    def exhaust(self, client, path_params):
        self.limits = resource.getrlimit(resource.RLIMIT_NOFILE)
        highest = max(int(name) for name in os.listdir('/proc/self/fd'))
        low, hard = highest + 64, self.limits[1]
        if hard != resource.RLIM_INFINITY:
            low = min(low, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        self.exhausted = []
        try:
            while True:
                self.exhausted.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        client.respond({'opened': len(self.exhausted)})

    @_workers.sync('/_restore')
    def restore(self, client, path_params):
        for fd in self.exhausted:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, self.limits)
        client.respond({'restored': True})


if __name__ == '__main__':
    root = os.environ['EXT_STATIC_ROOT']
    StaticDispatcher(
        port=0, address='127.0.0.1',
        static_routes={
            '/hard/': {'path': os.path.join(root, 'hard'),
                       'headers': {'X-Mount': 'hard',
                                   'Cache-Control': 'max-age=60'},
                       'authoritative': os.environ.get('EXT_HARD_SOFT') != '1'},
            '/soft/': {'path': os.path.join(root, 'soft'),
                       'headers': {'X-Mount': 'soft'}},
        },
        pools=[_workers.WorkerPool(MountWorker, num_workers=1,
                                   routes=['/hard/**', '/soft/**'])],
    ).run()
