"""on_idle() that fails every time (its database is down), in a worker and
in the dispatcher, until a request says the database is back."""
import uhttp.workers as _workers
from status_app import StatusDispatcher


class ItemWorker(_workers.Worker):
    def setup(self):
        self.db_up = False

    def on_idle(self):
        if not self.db_up:
            raise ConnectionError('db down in the worker')

    @_workers.api('/api/db/up', 'POST')
    def up(self, request):
        self.db_up = True
        return {'db_up': True}


class App(StatusDispatcher):
    SELECT_TIMEOUT = 0.05
    db_up = False

    def on_idle(self):
        if not self.db_up:
            raise ConnectionError('db down in the dispatcher')

    @_workers.sync('/db/up', 'POST')
    def up(self, client, path_params):
        self.db_up = True
        client.respond({'db_up': True})


if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(ItemWorker, num_workers=1, routes=['/api/**'],
                            heartbeat_interval=0.05),
    ]).run()
