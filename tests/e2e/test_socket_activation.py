"""Socket activation: under systemd-socket-activate (Debian's systemd
package) the dispatcher serves on the sockets it inherits from fd 3 on instead of
binding, and its workers do not hold that socket."""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from harness import APPS, ROOT, exchange, read_to_end

ACTIVATE = shutil.which('systemd-socket-activate')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


HELLO = b'GET /api/hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'


@contextlib.contextmanager
def activated(tmp_path, listen, ask):
    """One socket (`listen`) or several (a list), each `-l` of its own."""
    """tests/apps/smoke.py under systemd-socket-activate listening on
    `listen`, once `ask(raw)` got a 200 from it (the first connection makes
    systemd-socket-activate start the app, which then accepts it on the
    inherited socket): (process, log path); its process group is killed
    at the end."""
    log_path = tmp_path / 'out.log'
    inherited = [os.path.abspath(p) for p in
                 os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    pythonpath = os.pathsep.join([ROOT] + inherited)
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(
            [ACTIVATE, *[arg for where in ([listen] if isinstance(
                listen, str) else listen) for arg in ('-l', where)],
             '-E', f'PYTHONPATH={pythonpath}',
             '-E', 'PYTHONUNBUFFERED=1', sys.executable,
             os.path.join(APPS, 'smoke.py')],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        deadline = time.monotonic() + 15
        reply = None
        while time.monotonic() < deadline:
            try:
                reply = ask(HELLO)
                if reply.startswith(b'HTTP/1.1 200'):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert reply and reply.startswith(b'HTTP/1.1 200'), (
            reply, log_path.read_text())
        yield proc, log_path
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)


@pytest.mark.skipif(ACTIVATE is None, reason='systemd-socket-activate is '
                    'not installed (Debian package systemd)')
def test_serves_on_the_inherited_socket(tmp_path):
    port = free_port()
    with activated(tmp_path, f'127.0.0.1:{port}',
                   lambda raw: exchange(port, raw, timeout=10)) as (
                       proc, log_path):
        text = log_path.read_text()
        assert f'listening on http://127.0.0.1:{port}' in text
        # the port was not bound a second time: the process has no other
        # listening socket than the inherited one
        for _ in range(20):
            reply = exchange(port, HELLO)
            assert reply.startswith(b'HTTP/1.1 200')
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def unix_exchange(path, raw, timeout=10):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(raw)
        return read_to_end(sock)


@pytest.mark.skipif(ACTIVATE is None, reason='systemd-socket-activate is '
                    'not installed (Debian package systemd)')
def test_serves_on_an_inherited_unix_socket(tmp_path):
    # ListenStream=/run/app.sock: a Unix socket, which has no port; the
    # startup line names its path (it failed to format, "%d" of a str)
    path = str(tmp_path / 'app.sock')
    with activated(tmp_path, path, lambda raw: unix_exchange(path, raw)) as (
            proc, log_path):
        reply = unix_exchange(path, b'GET /_status HTTP/1.1\r\nHost: x\r\n'
                              b'Connection: close\r\n\r\n')
        assert reply.startswith(b'HTTP/1.1 200'), reply
        text = log_path.read_text()
        assert f'listening on http on unix:{path} (1 pools, 2 workers)' in text, text
        assert 'log formatting failed' not in text, text
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0

def wait_for(predicate, what, timeout=20):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


@pytest.mark.skipif(ACTIVATE is None, reason='systemd-socket-activate is '
                    'not installed (Debian package systemd)')
def test_every_inherited_socket_is_served_and_handed_over(tmp_path):
    # ListenStream= twice and a Unix socket: only the first was served, the
    # others closed (under systemd, which keeps them, their clients hung)
    ports = [free_port(), free_port()]
    path = str(tmp_path / 'app.sock')
    listens = [f'127.0.0.1:{port}' for port in ports] + [path]
    new_pid = None
    with activated(tmp_path, listens,
                   lambda raw: exchange(ports[0], raw, timeout=10)) as (
                       proc, log_path):
        try:
            def ask_each():
                for port in ports:
                    assert exchange(port, HELLO).startswith(
                        b'HTTP/1.1 200'), port
                assert unix_exchange(path, HELLO).startswith(b'HTTP/1.1 200')

            ask_each()
            text = log_path.read_text()
            assert 'serving the first only' not in text, text
            assert (f'listening on http://127.0.0.1:{ports[0]} and '
                    f'http://127.0.0.1:{ports[1]} and http on unix:{path} '
                    in text), text
            # a hot upgrade hands every socket to the new dispatcher
            os.kill(proc.pid, signal.SIGUSR2)
            assert proc.wait(timeout=30) == 0, log_path.read_text()
            found = re.search(r'the new dispatcher \(pid (\d+)\) is ready',
                              log_path.read_text())
            assert found, log_path.read_text()
            new_pid = int(found.group(1))
            ask_each()
            os.kill(new_pid, signal.SIGTERM)
            wait_for(lambda: not os.path.exists(f'/proc/{new_pid}') or open(
                f'/proc/{new_pid}/stat').read().split()[2] == 'Z',
                log_path.read_text)
            for port in ports:   # nobody holds them any more
                with pytest.raises(ConnectionRefusedError):
                    exchange(port, HELLO)
        finally:
            if new_pid is not None:
                try:
                    os.kill(new_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.mark.skipif(ACTIVATE is None, reason='systemd-socket-activate is '
                    'not installed (Debian package systemd)')
@pytest.mark.parametrize('flag', ['--datagram', '--accept'])
def test_a_socket_that_is_not_listening_is_refused_at_start(tmp_path, flag):
    # ListenDatagram= (or Accept=yes, one connection per start): the
    # dispatcher said it was listening, then spun on a socket it could not
    # accept from, at full CPU
    port = free_port()
    inherited = [os.path.abspath(p) for p in
                 os.environ.get('PYTHONPATH', '').split(os.pathsep) if p]
    log_path = tmp_path / 'out.log'
    with open(log_path, 'wb') as log:
        proc = subprocess.Popen(
            [ACTIVATE, flag, '-l', f'127.0.0.1:{port}', '-E',
             'PYTHONPATH=' + os.pathsep.join([ROOT] + inherited),
             sys.executable, '-m', 'uhttp.workers', 'smoke:App'],
            cwd=APPS, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        kind = socket.SOCK_DGRAM if flag == '--datagram' else socket.SOCK_STREAM
        text = ''
        deadline = time.monotonic() + 20
        while 'Accept=no' not in text or (
                flag == '--datagram' and proc.poll() is None):
            assert time.monotonic() < deadline, text
            if 'Communication attempt' not in text and (
                    'Connection from' not in text):
                # systemd-socket-activate starts the app on the first one
                with socket.socket(socket.AF_INET, kind) as sock:
                    sock.settimeout(5)
                    try:
                        if kind == socket.SOCK_DGRAM:
                            sock.sendto(b'x', ('127.0.0.1', port))
                        else:
                            sock.connect(('127.0.0.1', port))
                    except OSError:
                        pass   # not listening yet
            time.sleep(0.1)
            text = log_path.read_text()
        assert 'is not a listening stream socket' in text, text
        assert 'listening on http' not in text, text
        if flag == '--datagram':   # systemd-socket-activate became the app
            assert proc.wait(timeout=10) == 1, text
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(timeout=10)
