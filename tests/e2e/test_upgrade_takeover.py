"""Hot upgrade, the new copy's side: it accepts nothing until every worker
is ready; one whose workers fail to start, or are late, or whose code does
not import, stops with its workers, is reaped, and the old dispatcher logs
an ERROR with the reason and goes on serving."""

import os
import signal
import textwrap
import time

from test_cli import Running
from test_upgrade import logged_pid, wait_for_log, write_app

SETUP_APP = textwrap.dedent('''
    import time

    import uhttp.workers as _workers
    import uhttp.workers.upgrade as _upgrade

    VERSION = {version!r}
    {settings}


    class VersionWorker(_workers.Worker):
        def setup(self):
            {setup}

        @_workers.api('/api/version', 'GET')
        def version(self, request):
            return {{'version': VERSION}}


    class App(_workers.Dispatcher):
        def __init__(self, **kwargs):
            kwargs.setdefault('shutdown_timeout', 1)
            super().__init__(pools=[_workers.WorkerPool(
                VersionWorker, num_workers=2, routes=['/api/**'],
                timeout=1)], **kwargs)
''')


def write_setup_app(project, version, setup, settings=''):
    (project / 'verapp.py').write_text(SETUP_APP.format(
        version=version, setup=setup, settings=settings))


def start_v1(project):
    write_app(project, 'v1')
    return Running(project, 'verapp:App', '--host', '127.0.0.1', '--port', '0')


def started_copy(server, count=1):
    """The pid of the `count`th new dispatcher a hot upgrade started."""
    return logged_pid(server, r'started a new dispatcher \(pid (\d+)\)',
                      count, timeout=15)


def answers_until(server, done, timeout=30):
    """Ask /api/version on a new connection each time until `done(seen)`:
    `seen`, every (status, version) answered."""
    seen = []
    deadline = time.monotonic() + timeout
    while not done(seen):
        assert time.monotonic() < deadline, (seen[-5:], server.log())
        status, body = server.get('/api/version')
        seen.append((status, body.get('version')))
        time.sleep(0.01)
    return seen


def processes_in_group(group):
    """{pid: (parent pid, state)} of the processes in process group
    `group`, zombies included."""
    found = {}
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat', encoding='ascii') as stat:
                fields = stat.read().rsplit(')', 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == group:
            found[int(name)] = (int(fields[1]), fields[0])
    return found


def wait_until_only_the_old_one_runs(server, workers=2, timeout=20):
    """The failed copy is reaped (no zombie) and its workers are gone:
    what is left is the old dispatcher and its own workers."""
    old = server.proc.pid
    deadline = time.monotonic() + timeout
    while True:
        group = processes_in_group(old)
        others = {pid: info for pid, info in group.items() if pid != old}
        if (len(others) == workers and all(parent == old and state != 'Z'
                                           for parent, state in others.values())):
            return
        assert time.monotonic() < deadline, (group, server.log())
        time.sleep(0.05)


def error_lines(server):
    return [line for line in server.log().splitlines()
            if 'ERROR' in line and 'hot upgrade failed' in line]


def test_the_new_copy_takes_no_connection_before_its_workers_are_ready(tmp_path):
    server = start_v1(tmp_path)
    try:
        assert server.get('/api/version') == (200, {'version': 'v1'})
        # setup() longer than the pool timeout: a request the new copy
        # took before its workers were ready would end 504
        write_setup_app(tmp_path, 'v2', 'time.sleep(2.5)')
        os.kill(server.proc.pid, signal.SIGUSR2)
        seen = answers_until(server, lambda seen: (200, 'v2') in seen[-1:])
        assert {status for status, _ in seen} == {200}, seen
        first_v2 = seen.index((200, 'v2'))
        assert set(seen[:first_v2]) == {(200, 'v1')}, seen
        assert len(seen[:first_v2]) > 20, seen   # the old one served meanwhile
        assert server.proc.wait(timeout=30) == 0
    finally:
        server.close()


def test_a_copy_whose_workers_cannot_start_stops_and_the_old_serves(tmp_path):
    server = start_v1(tmp_path)
    try:
        write_setup_app(tmp_path, 'v2', 'raise RuntimeError("v2 is broken")')
        os.kill(server.proc.pid, signal.SIGUSR2)
        copy = started_copy(server)
        seen = answers_until(server, lambda _: error_lines(server))
        [error] = error_lines(server)
        assert f"the new dispatcher (pid {copy}) failed to start" in error
        assert "RuntimeError('v2 is broken')" in error, error
        assert error.endswith('this one goes on serving'), error
        wait_until_only_the_old_one_runs(server)
        deadline = time.monotonic() + 1.0
        seen += answers_until(server, lambda _: time.monotonic() > deadline)
        assert set(seen) == {(200, 'v1')}, seen
        assert server.proc.poll() is None
    finally:
        server.close()


def test_a_copy_whose_workers_are_late_gives_up_within_its_bound(tmp_path):
    server = start_v1(tmp_path)
    try:
        write_setup_app(tmp_path, 'v2', 'time.sleep(60)',
                        settings='_upgrade.READY_TIMEOUT = 1.5')
        os.kill(server.proc.pid, signal.SIGUSR2)
        seen = answers_until(server, lambda _: error_lines(server))
        [error] = error_lines(server)
        assert "its workers were not all ready after 1.5s (0 of 2 ready)" \
            in error, error
        wait_until_only_the_old_one_runs(server)
        assert set(seen) == {(200, 'v1')}, seen
        assert server.get('/api/version') == (200, {'version': 'v1'})
    finally:
        server.close()


def test_copies_that_do_not_import_are_reaped_and_say_why(tmp_path):
    server = start_v1(tmp_path)
    try:
        (tmp_path / 'verapp.py').write_text('def broken(:\n')
        for attempt in range(1, 4):
            os.kill(server.proc.pid, signal.SIGUSR2)
            copy = started_copy(server, attempt)
            wait_for_log(server, f"dispatcher (pid {copy}) failed to start")
        errors = error_lines(server)
        assert len(errors) == 3, errors
        for error in errors:
            assert "cannot import module 'verapp': SyntaxError" in error, error
        wait_until_only_the_old_one_runs(server)
        assert server.get('/api/version') == (200, {'version': 'v1'})
    finally:
        server.close()
