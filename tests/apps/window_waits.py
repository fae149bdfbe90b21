"""Requests that wait in a worker's window, not started.

OneWorker (/one/**): one worker, timeout=2; /one/export/{s} runs s seconds
calling keep_alive(), /one/fast answers at once.
TwoWorkers (/two/**): two workers, stuck_timeout=1.5; /two/gil/{n} holds
the GIL in C for a long while (the worker's threads cannot give back the
requests waiting behind it), /two/sleep/{s} sleeps, /two/fast answers.
While the file $WINDOW_SLOW_SETUP exists, a starting worker's setup()
takes 4 s (a restart that is slow to come back).
"""
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class OneWorker(_workers.Worker):
    @_workers.api('/one/export/{s:float}', 'GET')
    def export(self, request):
        end = time.monotonic() + request.path_params['s']
        while time.monotonic() < end:
            time.sleep(0.05)
            self.keep_alive()
        return {'pid': os.getpid()}

    @_workers.api('/one/fast', 'GET')
    def fast(self, request):
        return {'pid': os.getpid()}


class TwoWorkers(_workers.Worker):
    def setup(self):
        if os.path.exists(os.environ['WINDOW_SLOW_SETUP']):
            time.sleep(4)

    @_workers.api('/two/gil/{n:int}', 'GET')
    def gil(self, request):
        return {'sum': sum(range(request.path_params['n']))}

    @_workers.api('/two/sleep/{s:float}', 'GET')
    def sleep(self, request):
        time.sleep(request.path_params['s'])
        return {'pid': os.getpid()}

    @_workers.api('/two/fast', 'GET')
    def fast(self, request):
        return {'pid': os.getpid()}


if __name__ == '__main__':
    App = StatusDispatcher
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(OneWorker, num_workers=1, routes=['/one/**'],
                            timeout=2),
        _workers.WorkerPool(TwoWorkers, num_workers=2, routes=['/two/**'],
                            timeout=20, stuck_timeout=1.5),
    ]).run()
