"""A dispatcher whose descriptor limit can be cut to what it holds (as
when a box runs out of them), then given back: a worker's restart or
replacement that cannot make its pipes must be tried again, not lost,
and leak nothing."""
import os
import resource

import uhttp.workers as _workers
from status_app import StatusDispatcher

SAVED = resource.getrlimit(resource.RLIMIT_NOFILE)


class ItemWorker(_workers.Worker):
    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}


class App(StatusDispatcher):
    @_workers.sync('/fds/starve', 'POST')
    def starve(self, client, path_params):
        # descriptors are numbered lowest first: room for one more
        highest = max(int(fd) for fd in os.listdir('/proc/self/fd'))
        resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 2, SAVED[1]))
        client.respond({'limit': highest + 2})

    @_workers.sync('/fds/restore', 'POST')
    def restore(self, client, path_params):
        resource.setrlimit(resource.RLIMIT_NOFILE, SAVED)
        client.respond({'limit': SAVED[0]})

    @_workers.sync('/fds/count', 'GET')
    def count(self, client, path_params):
        client.respond({'open': len(os.listdir('/proc/self/fd'))})


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(ItemWorker, num_workers=1, routes=['/api/**']),
    ]).run()
