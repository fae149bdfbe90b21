"""Real Redis servers and remote worker groups for the remote pool tests.

`RedisServer` runs Debian's redis-server on 127.0.0.1 and a free port, with
no persistence; `WorkerGroup` runs `python -m uhttp.workers worker ...` (the
documented command) in its own session. Both are killed by pid / process
group in teardown.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from harness import APPS, ROOT

REDIS = shutil.which('redis-server')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1; `password`: --requirepass; `tls`: a
    trustme.CA, then it listens with TLS only and `url` is rediss://
    naming the CA's certificate (`ssl_ca_certs=`)."""

    def __init__(self, port=None, password=None, tls=None):
        self.port = port or free_port()
        self.proc = None
        self.password = password
        self.tls = tls
        self._files = tempfile.mkdtemp(prefix='uw-redis-')
        auth = f':{password}@' if password else ''
        if tls is None:
            self.url = f'redis://{auth}127.0.0.1:{self.port}/0'
        else:
            self.ca_file = os.path.join(self._files, 'ca.pem')
            tls.cert_pem.write_to_path(self.ca_file)
            self.url = (f'rediss://{auth}127.0.0.1:{self.port}/0'
                        f'?ssl_ca_certs={self.ca_file}')

    def arguments(self):
        args = [REDIS, '--bind', '127.0.0.1', '--save', '', '--appendonly',
                'no']
        if self.password:
            args += ['--requirepass', self.password]
        if self.tls is None:
            return args + ['--port', str(self.port)]
        cert = self.tls.issue_cert('127.0.0.1', 'localhost')
        cert_file = os.path.join(self._files, 'server.pem')
        key_file = os.path.join(self._files, 'server.key')
        cert.cert_chain_pems[0].write_to_path(cert_file)
        cert.private_key_pem.write_to_path(key_file)
        return args + ['--port', '0', '--tls-port', str(self.port),
                       '--tls-cert-file', cert_file, '--tls-key-file',
                       key_file, '--tls-ca-cert-file', self.ca_file,
                       '--tls-auth-clients', 'no']

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            self.arguments(), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._answers():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited ({self.proc.returncode})")
            time.sleep(0.05)
        self.kill()  # (no fixture yields it: nobody else would)
        raise RuntimeError("redis-server did not start")

    def _answers(self):
        try:
            return self.client(timeout=0.5).ping()
        except Exception:  # pylint: disable=broad-except
            return False

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
        shutil.rmtree(self._files, ignore_errors=True)

    def client(self, timeout=None):
        import redis
        return redis.Redis.from_url(self.url, socket_timeout=timeout,
                                    socket_connect_timeout=timeout)


def redis_has_tls():
    """Whether the installed redis-server was built with TLS."""
    if REDIS is None:
        return False
    with open(REDIS, 'rb') as file:
        return b'tls-cert-file' in file.read()


def command_env():
    """The environment of a worker command run from tests/apps: this
    checkout and the apps first, then the inherited path made absolute
    (a relative entry would not resolve from tests/apps)."""
    env = dict(os.environ)
    inherited = [os.path.abspath(p) for p in
                 env.get('PYTHONPATH', '').split(os.pathsep) if p]
    env['PYTHONPATH'] = os.pathsep.join([ROOT, APPS] + inherited)
    env['PYTHONUNBUFFERED'] = '1'
    return env


class WorkerGroup:
    """`uhttp-workers worker remote_app:ItemWorker --broker URL --workers N`"""

    def __init__(self, url, workers=2, target='remote_app:ItemWorker',
                 extra=(), url_from_env=False):
        self.args = [sys.executable, '-m', 'uhttp.workers', 'worker', target,
                     *(() if url_from_env else ('--broker', url)),
                     '--workers', str(workers), *extra]
        self.environ = {'UHTTP_WORKERS_BROKER': url} if url_from_env else {}
        self.proc = None
        self._log = tempfile.NamedTemporaryFile(prefix='uw-remote-',
                                                suffix='.log', delete=False)

    def start(self):
        env = dict(command_env(), **self.environ)
        self.proc = subprocess.Popen(
            self.args, cwd=APPS, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self):
        return self.proc.pid

    def children(self):
        try:
            with open(f'/proc/{self.pid}/task/{self.pid}/children') as file:
                return [int(pid) for pid in file.read().split()]
        except OSError:
            return []

    def log(self):
        with open(self._log.name, encoding='utf-8', errors='replace') as file:
            return file.read()

    def signal_group(self, sig):
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self):
        if self.proc is None:
            return
        self.signal_group(signal.SIGCONT)
        self.signal_group(signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def cleanup(self):
        self.kill()
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass


def remote_workers(server, pool='ItemWorker', ready=True):
    """The remote workers `server`'s /_status lists for `pool`."""
    for entry in server.status()['pools']:
        if entry['name'] == pool:
            return [worker for worker in entry['workers']
                    if worker.get('remote') and worker['alive']
                    and (worker['ready'] or not ready)]
    return []


def wait_workers(app, count, timeout=20):
    """The remote workers `app` lists as ready, once there are `count`."""
    return app.wait_until(lambda: len(remote_workers(app)) >= count and
                          remote_workers(app), timeout=timeout,
                          what=f'{count} remote workers ready')


@pytest.fixture
def groups():
    """start(url, workers=2, **WorkerGroup options): a worker command
    group, cleaned up (killed by group) at teardown."""
    started = []

    def start(url, workers=2, **kwargs):
        group = WorkerGroup(url, workers, **kwargs).start()
        started.append(group)
        return group

    yield start
    for group in started:
        group.cleanup()
