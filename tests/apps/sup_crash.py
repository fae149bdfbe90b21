"""Supervision app: workers that die in every way, get stuck, or serve
slowly; sync routes expose pool status, the pending table and send_config().

Environment: SUP_WORKERS (default 2), SUP_MARKER_DIR (on_config() writes
cfg-<pid>.jsonl lines there).
"""
import ctypes
import json
import os
import resource
import sys
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


class CrashWorker(_workers.Worker):
    def setup(self):
        self.config = None
        self.marker_dir = os.environ.get('SUP_MARKER_DIR')

    def on_config(self, config):
        self.config = config
        if self.marker_dir:
            path = os.path.join(self.marker_dir, f'cfg-{os.getpid()}.jsonl')
            with open(path, 'a', encoding='utf-8') as file:
                file.write(json.dumps({'worker_id': self.worker_id,
                                       'config': config}) + '\n')

    def _me(self, request, **extra):
        return dict(pid=os.getpid(), worker_id=self.worker_id,
                    request_id=request.request_id, config=self.config, **extra)

    @_workers.api('/api/whoami', 'GET')
    def whoami(self, request):
        return self._me(request)

    @_workers.api('/api/sleep/{s:float}', 'GET')
    def sleep(self, request):
        # slow but alive: keep_alive() keeps it clear of stuck_timeout=1
        end = time.monotonic() + request.path_params['s']
        while time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            self.keep_alive()
        return self._me(request)

    @_workers.api('/api/sys_exit', 'GET')
    def sys_exit(self, request):
        sys.exit(0)

    @_workers.api('/api/os_exit0', 'GET')
    def os_exit0(self, request):
        os._exit(0)

    @_workers.api('/api/os_exit3', 'GET')
    def os_exit3(self, request):
        os._exit(3)

    @_workers.api('/api/segv', 'GET')
    def segv(self, request):
        ctypes.string_at(0)
        return {'survived': True}

    @_workers.api('/api/abort', 'GET')
    def abort(self, request):
        os.abort()

    @_workers.api('/api/spin', 'GET')
    def spin(self, request):
        while True:
            pass

    @_workers.api('/api/hang', 'GET')
    def hang(self, request):
        time.sleep(600)
        return {'woke': True}


class App(StatusDispatcher):
    @_workers.sync('/_config', 'POST')
    def config(self, client, path_params):
        for pool in self._pools:
            pool.send_config(client.data)
        client.respond({'sent': client.data})


if __name__ == '__main__':
    # no core files from the deliberate SIGSEGV / SIGABRT
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(
            CrashWorker, num_workers=int(os.environ.get('SUP_WORKERS', '2')),
            routes=['/api/**'], timeout=10, stuck_timeout=1,
            heartbeat_interval=0.2, max_restarts=1000, restart_window=300),
    ]).run()
