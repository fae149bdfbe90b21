"""A remote pool beside a local pool, on this machine, in one run.

    python benchmarks/remote.py                    # ~2 minutes
    python benchmarks/remote.py --duration 10 --rounds 3

One dispatcher serves two pools with the same handlers: `Local` (worker
processes of its own, pipes) and `Remote` (broker=redis://..., its workers
started with `uhttp-workers worker` as a separate process group, as on
another host). A real redis-server runs on 127.0.0.1 and a free port.

- json: small JSON answers, wrk with 50 connections; 2 local workers
  against 2 remote workers: req/s and p99;
- cpu: a CPU-bound route (about 5 ms of pure Python per request), wrk with
  16 connections, the remote pool with 2, 4 and 8 worker processes beside
  the local pool's 2. On a 2-core machine more processes cannot add cores:
  this shows what the remote path costs and that it does not fall over
  with more workers than cores, not multi-host scaling.

Every process (redis-server, the dispatcher, the worker command, wrk) runs
in a process group of its own and is killed in a `finally`.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APP = textwrap.dedent('''
    import sys
    import uhttp.workers as _workers


    def spin():
        total = 0
        for number in range(60000):
            total += number * number % 7
        return total


    class Common(_workers.Worker):
        @_workers.api('/{pool}/json', 'GET')
        def json(self, request):
            return {'ok': True, 'n': 1}

        @_workers.api('/{pool}/cpu', 'GET')
        def cpu(self, request):
            return {'spin': spin()}


    class Local(Common):
        pass


    class Remote(Common):
        pass


    class App(_workers.Dispatcher):
        @_workers.sync('/_remote')
        def remote(self, client, path_params):
            pool = [p for p in self._pools if p.name == 'Remote'][0]
            client.respond({'ready': sum(1 for w in pool.status()['workers']
                                         if w['alive'] and w['ready'])})


    if __name__ == '__main__':
        App(port=int(sys.argv[2]), address='127.0.0.1', pools=[
            _workers.WorkerPool(Local, num_workers=2, routes=['/local/**']),
            _workers.WorkerPool(Remote, broker=sys.argv[1], num_workers=0,
                                routes=['/remote/**'], heartbeat_interval=0.5),
        ]).run()
''')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def start(args, log, cwd, env=None):
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)


def stop(proc):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def get_json(port, path):
    import json
    with urllib.request.urlopen(f'http://127.0.0.1:{port}{path}', timeout=5) as r:
        return json.loads(r.read())


def wrk(port, path, connections, duration):
    """(req/s, p99 ms, errors) of one wrk run."""
    args = ['wrk', '-t2', f'-c{connections}', f'-d{duration}s', '--latency',
            '--timeout', '10s', f'http://127.0.0.1:{port}{path}']
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, text=True)
    try:
        out, _ = proc.communicate(timeout=duration + 30)
    finally:
        stop(proc)
    rate = float(re.search(r'Requests/sec:\s+([\d.]+)', out).group(1))
    p99 = re.search(r'99%\s+([\d.]+)(us|ms|s)\b', out)
    scale = {'us': 0.001, 'ms': 1.0, 's': 1000.0}[p99.group(2)]
    errors = re.search(r'Non-2xx or 3xx responses: (\d+)', out)
    socket_errors = re.search(r'Socket errors: (.*)', out)
    return rate, float(p99.group(1)) * scale, (
        int(errors.group(1)) if errors else 0) + (1 if socket_errors else 0)


def run(opts, workdir):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT, workdir] + [p for p in [env.get('PYTHONPATH')] if p])
    redis_port, port = free_port(), free_port()
    url = f'redis://127.0.0.1:{redis_port}/0'
    log = open(os.path.join(workdir, 'servers.log'), 'w')
    redis = app = group = None
    results = {}
    try:
        redis = start([opts.redis, '--port', str(redis_port), '--bind',
                       '127.0.0.1', '--save', '', '--appendonly', 'no'],
                      log, workdir)
        app = start([sys.executable, 'bench_app.py', url, str(port)], log,
                    workdir, env)
        wait_for(lambda: get_json(port, '/_remote') is not None, 20, 'the app')
        for workers in (2, 4, 8):
            group = start([sys.executable, '-m', 'uhttp.workers', 'worker',
                           'bench_app:Remote', '--broker', url, '--workers',
                           str(workers)], log, workdir, env)
            wait_for(lambda: get_json(port, '/_remote')['ready'] >= workers,
                     30, f'{workers} remote workers')
            for _ in range(opts.rounds):
                if workers == 2:
                    for pool in ('local', 'remote'):
                        results.setdefault(('json', pool, 2), []).append(
                            wrk(port, f'/{pool}/json', 50, opts.duration))
                    results.setdefault(('cpu', 'local', 2), []).append(
                        wrk(port, '/local/cpu', 16, opts.duration))
                results.setdefault(('cpu', 'remote', workers), []).append(
                    wrk(port, '/remote/cpu', 16, opts.duration))
            stop(group)
            group = None
            wait_for(lambda: get_json(port, '/_remote')['ready'] == 0, 30,
                     'the remote workers gone')
    finally:
        for proc in (group, app, redis):
            stop(proc)
        log.close()
    return results


def report(results):
    def median(key, index):
        return statistics.median(run[index] for run in results[key])

    lines = ['| scenario | pool | workers | req/s | p99 ms | errors | req/s vs local |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for key in sorted(results, key=lambda k: (k[0], k[1] != 'local', k[2])):
        scenario, pool, workers = key
        local = median((scenario, 'local', 2), 0)
        lines.append(
            f'| {scenario} | {pool} | {workers} | {median(key, 0):.0f} | '
            f'{median(key, 1):.1f} | {sum(run[2] for run in results[key])} | '
            f'{median(key, 0) / local:.2f} |')
    return '\n'.join(lines)


def main():
    parse = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parse.add_argument('--duration', type=int, default=5)
    parse.add_argument('--rounds', type=int, default=1)
    parse.add_argument('--redis', default=shutil.which('redis-server'))
    opts = parse.parse_args()
    if not opts.redis or not shutil.which('wrk'):
        sys.exit("needs redis-server and wrk (Debian: redis-server, wrk)")
    workdir = tempfile.mkdtemp(prefix='uw-bench-remote-')
    with open(os.path.join(workdir, 'bench_app.py'), 'w') as file:
        file.write(APP)
    results = run(opts, workdir)
    print(report(results))
    print(f"\n(medians of {opts.rounds} round(s) of {opts.duration} s; "
          f"server logs in {workdir})")


if __name__ == '__main__':
    main()
