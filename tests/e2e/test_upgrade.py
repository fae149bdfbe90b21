"""Hot upgrade (SIGUSR2), code included: a new copy of the command line
takes over the listening socket; under load no request fails and no
connection is refused; a copy that cannot start leaves the old serving."""

import os
import re
import signal
import sys
import textwrap
import time

from load_util import Load
from test_cli import Running
from test_systemd import NotifySocket

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


def version_of(body):
    found = re.search(rb'"version": "(\w+)"', body)
    return found.group(1).decode() if found else None


def write_app(project, version):
    (project / 'verapp.py').write_text(APP.format(version=version))


def logged_pid(server, pattern, count=1, timeout=30):
    """The pid that the `count`th line of the server's log matching
    `pattern` (one group) names."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.findall(pattern, server.log())
        if len(found) >= count:
            return int(found[count - 1])
        time.sleep(0.02)
    raise AssertionError(f"no {count} line(s) matching {pattern!r}:\n"
                         f"{server.log()}")


def new_pid(server, count):
    """The pid of the new dispatcher of the `count`th hot upgrade done."""
    return logged_pid(server, r'the new dispatcher \(pid (\d+)\) is ready',
                      count)


def current_version(server):
    status, body = server.get('/api/version')
    assert status == 200
    return body['version']


def test_hot_upgrades_under_load_lose_nothing(tmp_path):
    write_app(tmp_path, 'v1')
    server = Running(tmp_path, 'verapp:App', '--host', '127.0.0.1', '--port', '0')
    try:
        assert current_version(server) == 'v1'
        load = Load(server.port, '/api/version', clients=6, note=version_of)
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
        assert set(load.notes) >= {'v1', 'v4'}, load.notes
        # a copy that cannot start (a syntax error) leaves the old serving
        (tmp_path / 'verapp.py').write_text('this is not python\n')
        os.kill(pid, signal.SIGUSR2)
        wait_for_log(server, 'hot upgrade failed')
        assert current_version(server) == 'v4'
    finally:
        server.close()


def wait_for_log(server, text, timeout=30):
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.05)


def start_v1_with_pid_file(tmp_path):
    """Version v1 run with --pid-file: (server, the pid file)."""
    write_app(tmp_path, 'v1')
    pid_file = tmp_path / 'app.pid'
    return Running(tmp_path, 'verapp:App', '--host', '127.0.0.1', '--port',
                   '0', '--pid-file', str(pid_file)), pid_file


def test_the_pid_file_names_the_dispatcher_serving_after_an_upgrade(tmp_path):
    server, pid_file = start_v1_with_pid_file(tmp_path)
    try:
        assert pid_file.read_text().strip() == str(server.proc.pid)
        write_app(tmp_path, 'v2')
        os.kill(server.proc.pid, signal.SIGUSR2)
        pid = new_pid(server, 1)
        assert server.proc.wait(timeout=30) == 0  # the old one has left
        assert current_version(server) == 'v2'
        assert pid_file.read_text().strip() == str(pid)
        os.kill(pid, signal.SIGTERM)  # and the new one removes it, leaving
        deadline = time.monotonic() + 20
        while pid_file.exists():
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.05)
    finally:
        server.close()


KILLS_ITS_DISPATCHER = textwrap.dedent('''
    import os
    import signal

    import uhttp.workers as _workers


    class VersionWorker(_workers.Worker):
        def setup(self):   # the new copy dies before it is ready
            os.kill(os.getppid(), signal.SIGKILL)


    class App(_workers.Dispatcher):
        def __init__(self, **kwargs):
            super().__init__(pools=[_workers.WorkerPool(
                VersionWorker, num_workers=1, routes=['/api/**'])], **kwargs)
''')


def test_a_failed_upgrade_leaves_the_pid_file_naming_the_old_one(tmp_path):
    server, pid_file = start_v1_with_pid_file(tmp_path)
    try:
        old = str(server.proc.pid)
        assert pid_file.read_text().strip() == old
        (tmp_path / 'verapp.py').write_text(KILLS_ITS_DISPATCHER)
        os.kill(server.proc.pid, signal.SIGUSR2)
        wait_for_log(server, 'hot upgrade failed')
        assert 'before it was ready; this one goes on serving' in server.log()
        assert current_version(server) == 'v1'
        assert pid_file.read_text().strip() == old
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0
        assert not pid_file.exists()
    finally:
        server.close()


def test_a_new_copy_that_cannot_even_be_started_says_why(tmp_path):
    # the interpreter it was started with is gone (a package upgrade
    # removed it): the old one logged only "exited with code 127"
    write_app(tmp_path, 'v1')
    python = tmp_path / 'python3'
    python.symlink_to(os.path.realpath(sys.executable))
    server = Running(tmp_path, 'verapp:App', '--host', '127.0.0.1',
                     '--port', '0', python=python)
    try:
        python.unlink()
        os.kill(server.proc.pid, signal.SIGUSR2)
        wait_for_log(server, 'hot upgrade failed')
        assert f'cannot start {python}: [Errno 2] No such file or directory' \
            in server.log(), server.log()
        assert current_version(server) == 'v1'
    finally:
        server.close()


SLOW_TO_START = textwrap.dedent('''
    import time

    import uhttp.workers as _workers


    class VersionWorker(_workers.Worker):
        def setup(self):   # the new copy is still starting when stopped
            time.sleep(20)


    class App(_workers.Dispatcher):
        def __init__(self, **kwargs):
            super().__init__(pools=[_workers.WorkerPool(
                VersionWorker, num_workers=1, routes=['/api/**'],
                stuck_timeout=60)], **kwargs)
''')


def test_sigterm_during_an_upgrade_stops_the_new_copy_too(tmp_path):
    """SIGTERM while the new copy still starts: the old dispatcher used to
    leave, and the new one went on to take the socket and serve, alone,
    after the service was told to stop."""
    from harness import wait_gone
    server, pid_file = start_v1_with_pid_file(tmp_path)
    try:
        (tmp_path / 'verapp.py').write_text(SLOW_TO_START)
        os.kill(server.proc.pid, signal.SIGUSR2)
        copy = logged_pid(server, r'started a new dispatcher \(pid (\d+)\)')
        time.sleep(0.5)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=20) == 0
        assert wait_gone([copy], timeout=10), server.log()
        assert 'hot upgrade abandoned' in server.log()
        assert not pid_file.exists()
    finally:
        server.close()


def test_the_old_dispatcher_hands_over_to_systemd_without_stopping(tmp_path):
    write_app(tmp_path, 'v1')
    notify = NotifySocket(tmp_path)
    server = Running(tmp_path, 'verapp:App', '--host', '127.0.0.1', '--port',
                     '0', extra_env={'NOTIFY_SOCKET': notify.env})
    try:
        notify.wait_for('READY=1')
        write_app(tmp_path, 'v2')
        os.kill(server.proc.pid, signal.SIGUSR2)
        pid = new_pid(server, 1)
        notify.wait_for(f'MAINPID={pid}')
        assert server.proc.wait(timeout=30) == 0
        notify.collect(0.5)
        assert notify.count('STOPPING=1') == 0, notify.messages
        os.kill(pid, signal.SIGTERM)   # the one serving stops: it says so
        notify.wait_for('STOPPING=1')
    finally:
        notify.close()
        server.close()


def test_the_new_dispatcher_pings_the_watchdog_once_it_takes_over(tmp_path):
    # systemd names the watched process in WATCHDOG_PID: the new copy
    # inherited the old one's pid there, took itself for unwatched, and
    # systemd killed the service WatchdogSec= after the upgrade
    import subprocess
    import sys
    from test_cli import env

    write_app(tmp_path, 'v1')
    notify = NotifySocket(tmp_path)
    environ = dict(env(), NOTIFY_SOCKET=notify.env, WATCHDOG_USEC='400000')
    log_path = tmp_path / 'out.log'
    new = None
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(
            ['/bin/sh', '-c', 'WATCHDOG_PID=$$ exec "$0" -m uhttp.workers '
             'verapp:App --host 127.0.0.1 --port 0', sys.executable],
            cwd=tmp_path, env=environ, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        notify.wait_for('READY=1')
        notify.wait_for('WATCHDOG=1')
        os.kill(proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while new is None:
            assert time.monotonic() < deadline, log_path.read_text()
            found = re.search(r'the new dispatcher \(pid (\d+)\) is ready',
                              log_path.read_text())
            new = int(found.group(1)) if found else None
            time.sleep(0.02)
        notify.wait_for(f'MAINPID={new}')
        assert proc.wait(timeout=30) == 0, log_path.read_text()
        notify.messages.clear()
        notify.collect(1.0)    # the old one is gone: the pings are the new one's
        assert notify.count('WATCHDOG=1') >= 3, notify.messages
    finally:
        notify.close()
        if new is not None:
            try:
                os.kill(new, signal.SIGTERM)   # it stops its workers
            except ProcessLookupError:
                pass
        try:   # the session the old one began holds the new one too
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)
