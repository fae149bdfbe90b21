"""Worker and dispatcher logging, for tests/e2e/test_logging.py.

Usage: logging_app.py [full|style|quiet]

  full   pools with different log levels, a worker whose setup() fails on
         its first start (marker file CRASH_MARKER), a pool with a short
         request timeout and a pool whose worker the tests kill
  style  one pool logging at every level (the output style is what is
         tested: plain, systemd or terminal)
  quiet  Dispatcher(log_level=LOG_ERROR); as its own 'listening on' line is
         below that level, the app prints the port itself from on_idle()

With LOG_RECORDS set, on_log() also appends every record as a JSON line to
that file before printing it the default way.
"""
import json
import os
import sys
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher

MULTI_LINES = 30
FORKED_RECORDS = 30


class LogWorker(_workers.Worker):
    """Routes are '/<area>/...' so one class serves every pool."""

    @_workers.api('/{area}/emit/{tag}')
    def emit(self, request):
        tag = request.path_params['tag']
        self.log.debug("emit-debug %s", tag)
        self.log.info("emit-info {tag}", tag=tag)
        self.log.warning("emit-warning %s %d", tag, 42)
        self.log.error("emit-error {tag} {n}", tag=tag, n=7)
        self.log.critical("emit-critical %s", tag)
        return {
            'worker': self.worker_id,
            'is_debug': self.log.is_debug,
            'is_info': self.log.is_info,
            'is_warning': self.log.is_warning,
            'is_error': self.log.is_error,
        }

    @_workers.api('/{area}/guarded/{tag}')
    def guarded(self, request):
        """Formats only what the level lets through (is_* checks)."""
        tag = request.path_params['tag']
        done = []
        if self.log.is_debug:
            done.append('debug')
            self.log.debug("guarded-debug %s", tag)
        if self.log.is_info:
            done.append('info')
            self.log.info("guarded-info %s", tag)
        if self.log.is_warning:
            done.append('warning')
            self.log.warning("guarded-warning %s", tag)
        if self.log.is_error:
            done.append('error')
            self.log.error("guarded-error %s", tag)
        return {'done': done}

    @_workers.api('/{area}/boom/{tag}')
    def boom(self, request):
        raise ValueError('boom-' + request.path_params['tag'])

    @_workers.api('/{area}/multi/{tag}')
    def multi(self, request):
        tag = request.path_params['tag']
        lines = [f'multi-begin {tag}']
        lines += [f'{tag} line {i:02d} ' + 'x' * 150 for i in range(MULTI_LINES)]
        lines.append(f'multi-end {tag}')
        self.log.warning('\n'.join(lines))
        return {'worker': self.worker_id}

    @_workers.api('/{area}/forked/{tag}')
    def forked(self, request):
        """Three forked children and the worker log long records at once."""
        tag = request.path_params['tag']
        children = []
        for child in range(3):
            pid = os.fork()
            if pid == 0:
                try:
                    for i in range(FORKED_RECORDS):
                        self.log.warning(f"forked {tag} c{child} {i} "
                                         + 'z' * 100000)
                finally:
                    os._exit(0)
            children.append(pid)
        for i in range(FORKED_RECORDS):
            self.log.warning(f"forked {tag} parent {i} " + 'p' * 100000)
        for pid in children:
            os.waitpid(pid, 0)
        return {'worker': self.worker_id}

    @_workers.api('/{area}/outlive/{tag}')
    def outlive(self, request):
        """A forked child that goes on logging once its worker is gone;
        it writes what its log calls did to the file `?result=`."""
        tag, result = request.path_params['tag'], request.query['result']
        worker = os.getpid()
        if os.fork() == 0:
            outcome = 'ok'
            try:
                deadline = time.monotonic() + 10
                while os.getppid() == worker and time.monotonic() < deadline:
                    time.sleep(0.05)
                for i in range(20):   # the dispatcher closes the pipe meanwhile
                    self.log.warning(f"outlive {tag} {i}")
                    time.sleep(0.1)
            except BaseException as err:  # pylint: disable=broad-except
                outcome = repr(err)
            finally:
                with open(result, 'w', encoding='utf-8') as file:
                    file.write(outcome)
                os._exit(0)
        return {'pid': worker}

    @_workers.api('/{area}/exit')
    def exit_now(self, request):
        os._exit(3)   # between two messages: none is left torn

    @_workers.api('/{area}/sleep/{ms:int}')
    def sleep(self, request):
        self.log.info("sleep-start request_id=%s", request.request_id)
        time.sleep(request.path_params['ms'] / 1000.0)
        return {'slept': request.path_params['ms']}

    @_workers.api('/{area}/whoami')
    def whoami(self, request):
        return {'worker': self.worker_id, 'pid': os.getpid()}


class QuietWorker(LogWorker):
    pass


class InfoWorker(LogWorker):
    pass


class DebugWorker(LogWorker):
    pass


class SlowWorker(LogWorker):
    pass


class VictimWorker(LogWorker):
    pass


class CrashOnceWorker(LogWorker):
    def setup(self):
        marker = self.kwargs['marker']
        if not os.path.exists(marker):
            with open(marker, 'w') as file:
                file.write(str(os.getpid()))
            raise RuntimeError('setup-crash-once')


class LoggingApp(StatusDispatcher):
    @_workers.sync('/dlog/{tag}')
    def dlog(self, client, path_params):
        tag = path_params['tag']
        self.log.debug("dispatcher-debug %s", tag)
        self.log.info("dispatcher-info %s", tag)
        self.log.warning("dispatcher-warning {tag}", tag=tag)
        self.log.error("dispatcher-error %s", tag)
        self.log.critical("dispatcher-critical %s", tag)
        client.respond({'ok': True})

    def on_log(self, name, level, message):
        path = os.environ.get('LOG_RECORDS')
        if path:
            with open(path, 'a', encoding='utf-8') as file:
                file.write(json.dumps({'name': name, 'level': level,
                                       'message': message}) + '\n')
        super().on_log(name, level, message)


class QuietApp(LoggingApp):
    SELECT_TIMEOUT = 0.05
    _announced = False

    def on_idle(self):
        if not self._announced:
            self._announced = True
            sys.stderr.write(
                f"app: listening on http://127.0.0.1:{self.port}\n")
            sys.stderr.flush()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else 'full'
    if mode == 'full':
        pools = [
            _workers.WorkerPool(QuietWorker, routes=['/quiet/**']),
            _workers.WorkerPool(InfoWorker, num_workers=3, routes=['/info/**'],
                                log_level=_workers.LOG_INFO),
            _workers.WorkerPool(DebugWorker, routes=['/debug/**'],
                                log_level=_workers.LOG_DEBUG),
            _workers.WorkerPool(CrashOnceWorker, routes=['/crash/**'],
                                marker=os.environ['CRASH_MARKER']),
            _workers.WorkerPool(SlowWorker, routes=['/slow/**'], timeout=0.5,
                                log_level=_workers.LOG_INFO),
            _workers.WorkerPool(VictimWorker, routes=['/victim/**']),
        ]
        LoggingApp(port=0, address='127.0.0.1', pools=pools).run()
    elif mode == 'style':
        pools = [_workers.WorkerPool(DebugWorker, num_workers=2,
                                     routes=['/debug/**'],
                                     log_level=_workers.LOG_DEBUG)]
        LoggingApp(port=0, address='127.0.0.1', pools=pools,
                   log_level=_workers.LOG_DEBUG).run()
    elif mode == 'quiet':
        pools = [_workers.WorkerPool(InfoWorker, routes=['/info/**'],
                                     log_level=_workers.LOG_INFO)]
        QuietApp(port=0, address='127.0.0.1', pools=pools,
                 log_level=_workers.LOG_ERROR).run()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == '__main__':
    main()
