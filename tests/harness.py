"""Test harness: start real dispatchers (with real workers) on 127.0.0.1.

`AppServer(name, args, env).start()` starts `tests/apps/<name>.py` in its own
session, waits for its "listening on" log line and returns an `AppServer`;
teardown kills the whole session by its pid. Apps log to a file the test
can read (`server.log()`, `server.wait_log(...)`).
"""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, 'tests', 'apps')
_LISTENING = re.compile(r'listening on https?://[^:]+:(\d+)')


class Reply:
    """One HTTP response as the tests see it."""

    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # lower-case name -> value
        self.body = body

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode('utf-8')

    def __repr__(self):
        return f"<Reply {self.status} {self.body[:200]!r}>"


class AppServer:
    def __init__(self, name, args=(), env=None, cwd=None):
        self.name = name
        self.args = [str(arg) for arg in args]
        self.env = env or {}
        self.cwd = cwd or ROOT
        self.proc = None
        self.port = None
        self._log = tempfile.NamedTemporaryFile(
            prefix=f'uw-{os.path.basename(name)}-', suffix='.log', delete=False)
        self.log_path = self._log.name

    # -- process ------------------------------------------------------------

    def start(self, timeout=15):
        env = dict(os.environ)
        env['PYTHONPATH'] = ROOT + os.pathsep + env.get('PYTHONPATH', '')
        env['PYTHONUNBUFFERED'] = '1'
        env.pop('JOURNAL_STREAM', None)
        env.update(self.env)
        script = self.name if os.path.isabs(self.name) else os.path.join(
            APPS, self.name + '.py')
        self.proc = subprocess.Popen(
            [sys.executable, script, *self.args], cwd=self.cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _LISTENING.search(self.log())
            if found:
                self.port = int(found.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"app {self.name} exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"app {self.name} did not start:\n{self.log()}")

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        with open(self.log_path, 'r', encoding='utf-8', errors='replace') as file:
            return file.read()

    def wait_log(self, pattern, timeout=10, count=1):
        """Wait until `pattern` (regex) appears `count` times in the log."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()
            if len(regex.findall(text)) >= count:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"log never showed {pattern!r} x{count}:\n{text[-4000:]}")
            time.sleep(0.02)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Signal the dispatcher and wait for it to exit; its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        """Kill the whole session this app started (dispatcher and workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def cleanup(self):
        self.kill()
        self._log.close()
        try:
            os.unlink(self.log_path)
        except OSError:
            pass

    # -- HTTP ----------------------------------------------------------------

    def connection(self, timeout=10):
        return http.client.HTTPConnection('127.0.0.1', self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, timeout=10,
                json_body=None):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault('Content-Type', 'application/json')
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return Reply(response.status,
                         {k.lower(): v for k, v in response.getheaders()}, data)
        finally:
            conn.close()

    def get(self, path, **kwargs):
        return self.request('GET', path, **kwargs)

    def post(self, path, **kwargs):
        return self.request('POST', path, **kwargs)

    def raw(self, data, timeout=5, read_until_close=True):
        """Send raw bytes, return everything read until close or timeout."""
        return exchange(self.port, data, timeout, read_until_close)

    def status(self, path='/_status'):
        return self.get(path).json

    def wait_until(self, predicate, timeout=10, interval=0.05, what='condition'):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except (OSError, http.client.HTTPException, ValueError):
                pass
            time.sleep(interval)
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    def children(self):
        """pids of the dispatcher's direct children (its workers)."""
        try:
            with open(f'/proc/{self.pid}/task/{self.pid}/children') as file:
                return [int(pid) for pid in file.read().split()]
        except OSError:
            return []


def read_to_end(sock):
    """Every byte `sock` receives until its peer ends the stream (the
    socket's own timeout bounds each wait)."""
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b''.join(chunks)
        chunks.append(chunk)


def exchange(port, data, timeout=5, read_until_close=True):
    """Send raw bytes on a new connection to 127.0.0.1:`port`; return what
    came back until close, a reset or `timeout` (a server may refuse before
    reading everything: what arrived before the reset is returned)."""
    sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    chunks = []
    try:
        try:
            sock.sendall(data)
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:  # timeout or reset
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not read_until_close:
                break
    finally:
        sock.close()
    return b''.join(chunks)


def wait_gone(pids, timeout=10):
    """Wait until none of `pids` is alive (zombies count as gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive:
            return True
        time.sleep(0.05)
    return False


def pid_alive(pid):
    try:
        with open(f'/proc/{pid}/stat') as file:
            state = file.read().rsplit(')', 1)[1].split()[0]
        return state != 'Z'
    except (OSError, IndexError):
        return False
