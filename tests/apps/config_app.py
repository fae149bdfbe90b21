"""Runtime configuration updates, for tests/e2e/test_config.py.

POST /admin/config sends the JSON body to every pool with send_config();
GET /<area>/config answers with the serving worker's id, pid, current
config and every config it received (on_config calls, in order).
"""
import os
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class ConfigWorker(_workers.Worker):
    def setup(self):
        self.config = None
        self.history = []

    def on_config(self, config):
        self.config = config
        self.history.append(config)

    @_workers.api('/{area}/config', 'GET')
    def current(self, request):
        hold = float((request.query or {}).get('hold') or 0)
        if hold:
            time.sleep(hold)
        return {'pool': type(self).__name__, 'worker': self.worker_id,
                'pid': os.getpid(), 'config': self.config,
                'history': self.history}


class CfgWorker(ConfigWorker):
    pass


class OtherWorker(ConfigWorker):
    pass


class ConfigApp(StatusDispatcher):
    @_workers.sync('/admin/config', 'POST')
    def admin_config(self, client, path_params):
        config = client.data
        for pool in self._pools:
            pool.send_config(config)
        client.respond({'sent': len(self._pools)})



if __name__ == '__main__':
    ConfigApp(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(CfgWorker, num_workers=3, routes=['/api/**']),
        _workers.WorkerPool(OtherWorker, num_workers=1, routes=['/other/**']),
    ]).run()
