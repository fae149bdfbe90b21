"""An app started with descriptors 0, 1 and 2 closed
(tests/hardening/test_hard_faults.py). argv[1] is the port (its log goes
nowhere the test could read it from). /fds shows what the dispatcher's
descriptors 0..2 are; /api/fail logs an ERROR with a traceback."""
import os
import sys

import uhttp.workers as _workers


class FailWorker(_workers.Worker):
    @_workers.api('/api/fail', 'GET')
    def fail(self, request):
        raise ValueError('a traceback for the log')

    @_workers.api('/api/ok', 'GET')
    def ok(self, request):
        return {'ok': True}


class App(_workers.Dispatcher):
    @_workers.sync('/fds')
    def fds(self, client, path_params):
        client.respond({str(fd): os.readlink(f'/proc/self/fd/{fd}')
                        for fd in (0, 1, 2)})


if __name__ == '__main__':
    App(port=int(sys.argv[1]), address='127.0.0.1', pools=[
        _workers.WorkerPool(FailWorker, num_workers=1, routes=['/api/**']),
    ]).run()
