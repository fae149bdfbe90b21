"""A handler that runs a multiprocessing pool (forked children) per
request; the children must end the way they would outside a worker."""

import multiprocessing

import uhttp.workers as _workers
from status_app import StatusDispatcher


def square(number):
    return number * number


class ComputeWorker(_workers.Worker):
    @_workers.api('/api/squares', 'GET')
    def squares(self, request):
        with multiprocessing.get_context('fork').Pool(2) as pool:
            return {'squares': pool.map(square, range(8))}


if __name__ == '__main__':
    StatusDispatcher(port=0, address='127.0.0.1', pools=[_workers.WorkerPool(
        ComputeWorker, num_workers=1, routes=['/api/**'])]).run()
