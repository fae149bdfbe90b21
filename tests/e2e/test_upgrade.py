"""Hot upgrade (SIGUSR2), code included: a new copy of the command line
takes over the listening socket; under load no request fails and no
connection is refused; a copy that cannot start leaves the old serving."""

import http.client
import os
import re
import signal
import textwrap
import threading
import time

from test_cli import Running

APP = textwrap.dedent('''
    import uhttp.workers as _workers

    VERSION = {version!r}


    class VersionWorker(_workers.Worker):
        @_workers.api('/api/version', 'GET')
        def version(self, request):
            return {{'version': VERSION}}


    class App(_workers.Dispatcher):
        def __init__(self, **kwargs):
            super().__init__(pools=[_workers.WorkerPool(
                VersionWorker, num_workers=2, routes=['/api/**'])], **kwargs)
''')


class Load:
    def __init__(self, port, clients=6):
        self.port = port
        self.stop = threading.Event()
        self.versions = {}
        self.errors = []
        self.statuses = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def run(self):
        connection = http.client.HTTPConnection('127.0.0.1', self.port,
                                                timeout=20)
        while not self.stop.is_set():
            try:
                connection.request('GET', '/api/version')
                reply = connection.getresponse()
                body = reply.read()
                if reply.getheader('connection', '').lower() == 'close':
                    connection.close()   # the server said so: a new one next
            except Exception as err:  # pylint: disable=broad-except
                with self.lock:
                    self.errors.append(repr(err))
                connection.close()
                continue
            with self.lock:
                self.statuses.append(reply.status)
                version = re.search(rb'"version": "(\w+)"', body)
                if version:
                    key = version.group(1).decode()
                    self.versions[key] = self.versions.get(key, 0) + 1
        connection.close()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads)
        return self


def write_app(project, version):
    (project / 'verapp.py').write_text(APP.format(version=version))


def new_pid(server, count):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.findall(r'the new dispatcher \(pid (\d+)\) is ready',
                           server.log())
        if len(found) >= count:
            return int(found[count - 1])
        time.sleep(0.05)
    raise AssertionError(f"upgrade {count} never completed:\n{server.log()}")


def current_version(server):
    status, body = server.get('/api/version')
    assert status == 200
    return body['version']


def test_hot_upgrades_under_load_lose_nothing(tmp_path):
    write_app(tmp_path, 'v1')
    server = Running(tmp_path, 'verapp:App', '--host', '127.0.0.1', '--port', '0')
    try:
        assert current_version(server) == 'v1'
        load = Load(server.port)
        time.sleep(0.3)
        pid = server.proc.pid
        for number, version in enumerate(['v2', 'v3', 'v4'], start=1):
            write_app(tmp_path, version)
            os.kill(pid, signal.SIGUSR2)
            pid = new_pid(server, number)
            deadline = time.monotonic() + 15
            while current_version(server) != version:
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.05)
            time.sleep(0.3)
        assert server.proc.wait(timeout=30) == 0   # the first one left cleanly
        load.finish()
        assert load.errors == [], load.errors[:5]
        assert set(load.statuses) == {200}, set(load.statuses)
        assert set(load.versions) >= {'v1', 'v4'}, load.versions
        # a copy that cannot start (a syntax error) leaves the old serving
        (tmp_path / 'verapp.py').write_text('this is not python\n')
        os.kill(pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while 'hot upgrade failed' not in server.log():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
        assert current_version(server) == 'v4'
    finally:
        server.close()
