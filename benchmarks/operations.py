"""Zero-downtime operations under load: every answer counted, and the p99
during the operation beside the p99 without it, from one run.

    python benchmarks/operations.py                 # all three, ~1 minute
    python benchmarks/operations.py --only upgrade --upgrades 20

- reload: a rolling reload (SIGHUP) of a 4-worker pool;
- upgrade: N hot upgrades (SIGUSR2) in a row, the app's code changed
  before each (the answers say which version served them);
- recycle: a pool with max_requests=100 (and a jitter of 20), beside the
  same pool without max_requests.

The load is wrk-like but in Python (so that every single answer and
connection error is counted): `--clients` keep-alive connections asking
GET /api/version as fast as they can. Each server runs on 127.0.0.1 and a
free port in a process group of its own, killed in a `finally`.
"""

import argparse
import http.client
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APP = textwrap.dedent('''
    import os
    import uhttp.workers as _workers

    VERSION = {version!r}


    class VersionWorker(_workers.Worker):
        @_workers.api('/api/version', 'GET')
        def version(self, request):
            return {{'version': VERSION, 'pid': os.getpid()}}


    class App(_workers.Dispatcher):
        def __init__(self, **kwargs):
            super().__init__(pools=[_workers.WorkerPool(
                VersionWorker, num_workers=int(os.environ.get('OPS_WORKERS', '4')),
                routes=['/api/**'],
                max_requests=int(os.environ['OPS_MAX_REQUESTS']) or None,
                max_requests_jitter=20)], **kwargs)
''')


class Load:
    """Keep-alive clients counting every answer, error and latency."""

    def __init__(self, port, clients):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.samples = []      # (time, latency, status)
        self.errors = []
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def run(self):
        connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                connection.request('GET', '/api/version')
                reply = connection.getresponse()
                reply.read()
                if reply.getheader('connection', '').lower() == 'close':
                    connection.close()
            except Exception as err:  # pylint: disable=broad-except
                with self.lock:
                    self.errors.append(repr(err))
                connection.close()
                continue
            ended = time.monotonic()
            with self.lock:
                self.samples.append((ended, ended - started, reply.status))
        connection.close()

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def window(self, start, end):
        with self.lock:
            return [(latency, status) for at, latency, status in self.samples
                    if start <= at < end]


def p99(values):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


class Server:
    def __init__(self, directory, max_requests=0):
        env = dict(os.environ)
        paths = [ROOT] + [os.path.abspath(p) for p in
                          env.get('PYTHONPATH', '').split(os.pathsep) if p]
        env['PYTHONPATH'] = os.pathsep.join(paths)
        env['PYTHONUNBUFFERED'] = '1'
        env['OPS_MAX_REQUESTS'] = str(max_requests)
        self.directory = directory
        self.log_path = os.path.join(directory, 'server.log')
        self.log_file = open(self.log_path, 'wb')
        self.proc = subprocess.Popen(
            [sys.executable, '-m', 'uhttp.workers', 'opsapp:App', '--host',
             '127.0.0.1', '--port', '0'], cwd=directory, env=env,
            stdin=subprocess.DEVNULL, stdout=self.log_file,
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r'listening on http://[^:]+:(\d+)', self.log())
            if found:
                self.port = int(found.group(1))
                time.sleep(0.5)  # the workers get ready
                return
            time.sleep(0.05)
        self.close()
        raise RuntimeError('server did not start:\n' + self.log())

    def log(self):
        with open(self.log_path, encoding='utf-8', errors='replace') as file:
            return file.read()

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)
        self.log_file.close()


def write_app(directory, version):
    with open(os.path.join(directory, 'opsapp.py'), 'w', encoding='utf-8') as file:
        file.write(APP.format(version=version))


def wait_log(server, pattern, count, timeout=60):
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, server.log())) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f'never saw {pattern!r} x{count}')
        time.sleep(0.02)


def measure(name, args, max_requests, operate):
    with tempfile.TemporaryDirectory(prefix='uw-ops-') as directory:
        write_app(directory, 'v0')
        server = Server(directory, max_requests)
        try:
            load = Load(server.port, args.clients)
            time.sleep(args.settle)
            before_start = time.monotonic()
            time.sleep(args.baseline)
            before_end = op_start = time.monotonic()
            operate(server, directory)
            op_end = time.monotonic()
            time.sleep(0.5)
            load.finish()
        finally:
            server.close()
    before = load.window(before_start, before_end)
    during = load.window(op_start, op_end)
    statuses = [status for _, _, status in load.samples]
    return {
        'operation': name,
        'seconds': round(op_end - op_start, 2),
        'answers': len(statuses),
        'non_200': sum(1 for status in statuses if status != 200),
        'connection_errors': len(load.errors),
        'p99_ms_without': p99([latency for latency, _ in before]),
        'p99_ms_during': p99([latency for latency, _ in during]),
        'rps_without': len(before) / max(1e-9, before_end - before_start),
        'rps_during': len(during) / max(1e-9, op_end - op_start),
    }


def op_reload(server, directory):
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_log(server, r'reload finished', 1)


def op_upgrades(count):
    def run(server, directory):
        pid = server.proc.pid
        for number in range(1, count + 1):
            write_app(directory, f'v{number}')
            os.kill(pid, signal.SIGUSR2)
            wait_log(server, r'the new dispatcher \(pid \d+\) is ready', number)
            pid = int(re.findall(r'the new dispatcher \(pid (\d+)\) is ready',
                                 server.log())[number - 1])
            time.sleep(0.3)
    return run


def op_recycle(server, directory):
    time.sleep(5.0)   # max_requests=100 recycles workers all along


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--only', default='reload,upgrade,recycle')
    parser.add_argument('--clients', type=int, default=50)
    parser.add_argument('--upgrades', type=int, default=20)
    parser.add_argument('--baseline', type=float, default=3.0)
    parser.add_argument('--settle', type=float, default=1.0)
    args = parser.parse_args()
    results = []
    chosen = args.only.split(',')
    if 'reload' in chosen:
        results.append(measure('rolling reload, 4 workers', args, 0, op_reload))
    if 'upgrade' in chosen:
        results.append(measure(f'{args.upgrades} hot upgrades in a row', args,
                               0, op_upgrades(args.upgrades)))
    if 'recycle' in chosen:
        row = measure('max_requests=100 (+0..20)', args, 100, op_recycle)
        # this server recycles all along: "without" is a server without
        # max_requests under the same load, in this run
        plain = measure('(no max_requests)', args, 0, op_recycle)
        row['p99_ms_without'] = plain['p99_ms_during']
        row['rps_without'] = plain['rps_during']
        results.append(row)
    print('| operation | seconds | answers | non-200 | connection errors | '
          'p99 ms without | p99 ms during | req/s without | req/s during |')
    print('|---|---|---|---|---|---|---|---|---|')
    for row in results:
        print(f"| {row['operation']} | {row['seconds']} | {row['answers']} | "
              f"{row['non_200']} | {row['connection_errors']} | "
              f"{row['p99_ms_without']:.1f} | {row['p99_ms_during']:.1f} | "
              f"{row['rps_without']:.0f} | {row['rps_during']:.0f} |")
    print(json.dumps(results))


if __name__ == '__main__':
    main()
