"""A handler that runs a multiprocessing pool (forked children) per
request; the children must end the way they would outside a worker.
/api/torn forks a child that logs a 64 MiB record and kills it halfway
through sending it. /api/forked-returns forks a child that, like the
worker, returns from the handler (no os._exit()); /api/forked-exits one
that ends with sys.exit(), /api/forked-raises one that raises; both are
waited for, and the worker logs how they ended."""

import multiprocessing
import os
import signal
import sys
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


def square(number):
    return number * number


class ComputeWorker(_workers.Worker):
    @_workers.api('/api/squares', 'GET')
    def squares(self, request):
        with multiprocessing.get_context('fork').Pool(2) as pool:
            return {'squares': pool.map(square, range(8))}

    @_workers.api('/api/forked-returns', 'GET')
    def forked_returns(self, request):
        child = os.fork()
        return {'pid': os.getpid(), 'child': child}

    @_workers.api('/api/forked-exits', 'GET')
    def forked_exits(self, request):
        child = os.fork()
        if child == 0:
            sys.exit(3)
        return self.waited(child)

    @_workers.api('/api/forked-raises', 'GET')
    def forked_raises(self, request):
        child = os.fork()
        if child == 0:
            raise RuntimeError('failed in the child')
        return self.waited(child)

    def waited(self, child):
        _, status = os.waitpid(child, 0)
        code = os.waitstatus_to_exitcode(status)
        self.log.warning('child %d ended with %d', child, code)
        return {'pid': os.getpid(), 'child': child, 'code': code}

    def teardown(self):
        self.log.warning('teardown in pid %d', os.getpid())

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}

    @_workers.api('/api/torn', 'GET')
    def torn(self, request):
        pid = os.fork()
        if pid == 0:
            self.log.warning('huge %s', 'q' * (64 << 20))
            os._exit(0)
        deadline = time.monotonic() + 10
        while not _writing(pid) and time.monotonic() < deadline:
            time.sleep(0.0005)  # until its record is on its way
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        return {'torn': True}


def _writing(pid):
    """True while `pid` waits in a write to a full pipe."""
    with open(f'/proc/{pid}/wchan', encoding='ascii') as file:
        return file.read().strip().endswith('pipe_write')


if __name__ == '__main__':
    StatusDispatcher(port=0, address='127.0.0.1', pools=[_workers.WorkerPool(
        ComputeWorker, num_workers=1, routes=['/api/**'])]).run()
