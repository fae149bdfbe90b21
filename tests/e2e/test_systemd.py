"""systemd notifications over a real Unix datagram socket standing in for
systemd's NOTIFY_SOCKET: READY=1 once every worker is ready, STATUS= lines,
WATCHDOG=1 at half the interval, STOPPING=1 on shutdown."""

import os
import signal
import socket
import time

import pytest


class NotifySocket:
    """A datagram socket bound where systemd would listen."""

    def __init__(self, tmp_path, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f'uw-notify-{os.getpid()}-{time.monotonic_ns()}'
            self.sock.bind('\0' + name)
            self.env = '@' + name
        else:
            path = str(tmp_path / 'notify.sock')
            self.sock.bind(path)
            self.env = path
        self.sock.settimeout(0.2)
        self.messages = []

    def wait_for(self, line, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages:
                if line in message.split('\n'):
                    return message
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass
        raise AssertionError(f"no {line!r} among {self.messages!r}")

    def collect(self, seconds):
        """Read every datagram that arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass

    def count(self, line):
        return sum(message.split('\n').count(line) for message in self.messages)

    def close(self):
        self.sock.close()


@pytest.mark.parametrize('abstract', [False, True], ids=['path', 'abstract'])
def test_ready_status_watchdog_stopping(app_server, tmp_path, abstract):
    notify = NotifySocket(tmp_path, abstract)
    try:
        server = app_server('smoke', env={'NOTIFY_SOCKET': notify.env,
                                          'WATCHDOG_USEC': '400000'})
        ready = notify.wait_for('READY=1')
        # READY=1 only once every worker is ready
        workers = [w for pool in server.status()['pools']
                   for w in pool['workers']]
        assert all(w['ready'] for w in workers)
        assert 'STATUS=1 pools, 2/2 workers ready' in ready
        assert server.get('/api/hello').status == 200
        # the watchdog pings come from the loop, at half of WATCHDOG_USEC
        before = notify.count('WATCHDOG=1')
        notify.collect(1.0)
        assert notify.count('WATCHDOG=1') - before >= 3   # every 0.2 s
        notify.wait_for('STATUS=1 pools, 2/2 workers ready, 0 requests in flight')
        server.send_signal(signal.SIGTERM)
        notify.wait_for('STOPPING=1')
        assert server.proc.wait(timeout=20) == 0
    finally:
        notify.close()


def test_watchdog_for_another_pid_is_not_ours(app_server, tmp_path):
    notify = NotifySocket(tmp_path)
    try:
        app_server('smoke', env={'NOTIFY_SOCKET': notify.env,
                                 'WATCHDOG_USEC': '200000',
                                 'WATCHDOG_PID': '1'})
        notify.wait_for('READY=1')
        notify.collect(1.2)
        notify.wait_for('STATUS=1 pools, 2/2 workers ready, 0 requests in flight')
        assert notify.count('WATCHDOG=1') == 0
    finally:
        notify.close()


SLOW_RELOAD_APP = '''
import os
import time
import uhttp.workers as _workers


class SetupWorker(_workers.Worker):
    def setup(self):
        if os.path.exists('slow-setup'):
            time.sleep(3)

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}


class App(_workers.Dispatcher):
    def __init__(self, **kwargs):
        super().__init__(pools=[_workers.WorkerPool(SetupWorker)], **kwargs)
'''


def test_a_reload_cut_short_by_shutdown_is_not_reported_done(tmp_path):
    # READY=1 (and "reload finished: every worker replaced") came after
    # STOPPING=1, with the replacement still in its setup()
    from test_cli import Running
    (tmp_path / 'slowapp.py').write_text(SLOW_RELOAD_APP)
    notify = NotifySocket(tmp_path)
    server = Running(tmp_path, 'slowapp:App', '--host', '127.0.0.1',
                     '--port', '0', '--log-level', 'info',
                     extra_env={'NOTIFY_SOCKET': notify.env})
    try:
        notify.wait_for('READY=1')
        (tmp_path / 'slow-setup').write_text('')
        server.proc.send_signal(signal.SIGHUP)
        notify.wait_for('RELOADING=1')
        server.proc.send_signal(signal.SIGTERM)
        notify.wait_for('STOPPING=1')
        assert server.proc.wait(timeout=30) == 0
        notify.collect(0.3)
        lines = [line for message in notify.messages
                 for line in message.split('\n')]
        assert 'READY=1' not in lines[lines.index('STOPPING=1'):], lines
        assert 'reload finished' not in server.log(), server.log()
    finally:
        notify.close()
        server.close()


def test_a_reload_of_an_app_without_pools_ends_with_ready(app_server, tmp_path):
    # RELOADING=1 was never followed by READY=1: `systemctl reload` hung
    notify = NotifySocket(tmp_path)
    try:
        server = app_server('no_pools', env={'NOTIFY_SOCKET': notify.env})
        notify.wait_for('READY=1')
        server.send_signal(signal.SIGHUP)
        notify.wait_for('RELOADING=1')
        deadline = time.monotonic() + 10
        while notify.count('READY=1') < 2 and time.monotonic() < deadline:
            notify.collect(0.2)
        assert notify.count('READY=1') == 2, notify.messages
        assert server.get('/health').json == {'status': 'ok'}
    finally:
        notify.close()
