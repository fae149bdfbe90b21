"""Dispatcher.log, log_level and LOG_NAME templates.

Environment:
  EXT_LOG_LEVEL=debug   construct the Dispatcher with log_level=LOG_DEBUG
  EXT_DISP_LOG_NAME     the Dispatcher's LOG_NAME (default 'front-{cls}-{pid}')
"""
import os

import uhttp.workers as _workers


class NamedWorker(_workers.Worker):
    LOG_NAME = '{pool_name}/{cls}#{worker_id}@{pid}'

    def setup(self):
        self.log.info('named worker ready')

    @_workers.api('/n/log', 'GET')
    def log_something(self, request):
        self.log.info('named handler for {path}', path=request.path)
        return {'pid': os.getpid(), 'worker_id': self.worker_id}


class BadNameWorker(_workers.Worker):
    LOG_NAME = '{cls}-{missing}'

    def setup(self):
        self.log.info('badname worker ready')

    @_workers.api('/b/log', 'GET')
    def log_something(self, request):
        self.log.info('badname handler')
        return {'pid': os.getpid()}


class DefaultWorker(_workers.Worker):
    def setup(self):
        self.log.info('default worker ready')

    @_workers.api('/d/log', 'GET')
    def log_something(self, request):
        return {'pid': os.getpid()}


class LogDispatcher(_workers.Dispatcher):
    LOG_NAME = os.environ.get('EXT_DISP_LOG_NAME', 'front-{cls}-{pid}')

    def __init__(self, **kwargs):
        self.captured = []
        super().__init__(**kwargs)
        self.log.info('init log from __init__ before workers')
        self.log.debug('debug probe from __init__')

    def on_log(self, name, level, message):
        self.captured.append([name, level, message])
        super().on_log(name, level, message)

    @_workers.sync('/_captured')
    def captured_records(self, client, path_params):
        client.respond({'records': self.captured})

    @_workers.sync('/_log')
    def log_now(self, client, path_params):
        self.log.debug('debug probe from sync')
        self.log.info('info probe from sync')
        client.respond({'logged': True})

    @_workers.sync('/_status')
    def status(self, client, path_params):
        client.respond({'pools': {pool.name: pool.status()
                                  for pool in self._pools}})


if __name__ == '__main__':
    level = (_workers.LOG_DEBUG if os.environ.get('EXT_LOG_LEVEL') == 'debug'
             else None)
    extra = {} if level is None else {'log_level': level}
    LogDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(NamedWorker, routes=['/n/**'],
                            log_level=_workers.LOG_INFO),
        _workers.WorkerPool(BadNameWorker, routes=['/b/**'],
                            log_level=_workers.LOG_INFO),
        _workers.WorkerPool(DefaultWorker, routes=['/d/**'],
                            log_level=_workers.LOG_INFO),
    ], **extra).run()
