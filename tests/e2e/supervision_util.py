"""Helpers shared by the supervision tests (tests/e2e/test_supervision*.py)."""

import os
import re
import threading
import time

class Call(threading.Thread):
    """One HTTP GET run in a background thread; `.result()` waits for it."""

    def __init__(self, server, path, timeout=20):
        super().__init__(daemon=True)
        self.server = server
        self.path = path
        self.timeout = timeout
        self.reply = None
        self.error = None
        self.started = None
        self.ended = None
        self.start()

    def run(self):
        self.started = time.monotonic()
        try:
            self.reply = self.server.get(self.path, timeout=self.timeout)
        except Exception as err:  # pylint: disable=broad-except
            self.error = err
        self.ended = time.monotonic()

    def result(self, timeout=None):
        self.join(self.timeout + 5 if timeout is None else timeout)
        assert not self.is_alive(), f"GET {self.path} never finished"
        if self.error is not None:
            raise AssertionError(f"GET {self.path} failed: {self.error!r}")
        return self.reply

    @property
    def elapsed(self):
        return self.ended - self.started


def start(app_server, name, env=None):
    """Start an app and wait until every worker of every pool is ready."""
    server = app_server(name, env=env)
    server.wait_until(
        lambda: all(w['alive'] and w.get('ready', True) for pool in server.status()['pools']
                    for w in pool['workers']),
        timeout=10, what='all workers ready')
    return server


def pool_status(server, index=0):
    return server.status()['pools'][index]


def workers(server, index=0):
    return pool_status(server, index)['workers']


def worker_pids(server, index=0):
    return [worker['pid'] for worker in workers(server, index)]


def wait_busy(server, count, index=0, timeout=10):
    """Wait until `count` workers of pool `index` run a request; their
    status entries."""
    def busy():
        found = [w for w in workers(server, index)
                 if w['current_request'] is not None]
        return found if len(found) >= count else None
    return server.wait_until(busy, timeout=timeout,
                             what=f'{count} busy worker(s)')


def wait_pending(server, count, timeout=10):
    return server.wait_until(lambda: server.status()['pending'] == count,
                             timeout=timeout, what=f'{count} pending')


def wait_replaced(server, old_pids, index=0, timeout=10):
    """Wait until some slot runs a new, live, ready process; the workers."""
    def replaced():
        current = workers(server, index)
        if any(w['pid'] not in old_pids and w['alive'] and w.get('ready', True)
               for w in current):
            return current
        return None
    return server.wait_until(replaced, timeout=timeout,
                             what='a restarted worker')


def log_lines(server, pattern):
    regex = re.compile(pattern)
    return [line for line in server.log().splitlines() if regex.search(line)]


def proc_cpu_seconds(pid):
    """utime + stime of a process, in seconds (from /proc/<pid>/stat)."""
    with open(f'/proc/{pid}/stat') as file:
        fields = file.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


# -- dead workers ---------------------------------------------------------------
