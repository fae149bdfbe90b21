"""Many concurrent connections: one pool that echoes a number, with
max_pending high enough that none is refused."""
import uhttp.workers as _workers


class ManyWorker(_workers.Worker):
    @_workers.api('/many/{n:int}', 'GET')
    def many(self, request):
        return {'n': request.path_params['n']}


class ManyDispatcher(_workers.Dispatcher):
    @_workers.sync('/_count')
    def count(self, client, path_params):
        client.respond({'pending': len(self._pending)})


def main():
    ManyDispatcher(
        port=0, address='127.0.0.1', max_pending=8000,
        max_waiting_clients=8000,
        pools=[_workers.WorkerPool(ManyWorker, num_workers=2,
                                   routes=['/many/**'])],
    ).run()


if __name__ == '__main__':
    main()
