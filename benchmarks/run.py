#!/usr/bin/env python3
"""Side-by-side benchmarks: uhttp-workers against its ceiling and its peers.

Each system runs as its own server process on 127.0.0.1 (a free port of its
own), is loaded with wrk (and a Python SSE client), and the systems take
turns round by round, so that every one is measured the same way on the
same machine. Medians over the rounds are printed with ratios against
uhttp-workers from the same run, and written as Markdown and JSON to
benchmarks/results/.

    python benchmarks/run.py                      # full run (~10-15 min)
    python benchmarks/run.py --quick              # ~2-3 min smoke run
    python benchmarks/run.py --only json50,cpu50 --systems uhttp-workers,uhttp-inline

See benchmarks/README.md for the setup and what each scenario measures.
"""

import argparse
import datetime
import http.client
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(HERE, 'apps')
LUA_POST = os.path.join(HERE, 'lua', 'post_body.lua')
RESULTS = os.path.join(HERE, 'results')
HOST = '127.0.0.1'

sys.path.insert(0, HERE)
sys.path.insert(0, APPS)

import sse_client  # noqa: E402
import common  # noqa: E402

BASELINE = 'uhttp-workers'

# -- scenarios -----------------------------------------------------------------

# name -> (title, what it measures); run in this order within a server's turn
SCENARIOS = {
    'rss': ('Idle RSS', 'VmRSS of the main process and each worker after '
            'start-up and a short idle'),
    'json1': ('GET /json, 1 connection', 'small JSON, one keep-alive connection'),
    'json50': ('GET /json, 50 connections', 'small JSON, 50 keep-alive connections'),
    'cpu50': ('GET /cpu (2 ms busy loop), 50 connections',
              'a handler that burns ~2 ms of CPU'),
    'echo256k': ('POST /echo 256 KiB, 50 connections', 'request body echoed back'),
    'echo1m': ('POST /echo 1 MiB, 50 connections', 'request body echoed back'),
    'sse1000': ('SSE publish to 1,000 subscribers',
                'time from POST /sse/publish until the last subscriber has the event'),
    'sseidle': ('GET /json, 50 connections, with 5,000 idle SSE streams',
                'throughput with idle streams open vs none'),
    'c2000': ('GET /json, 2,000 connections (overload at the defaults)',
              'answers of 200 and of 503 per second with 2,000 keep-alive '
              'connections asking as fast as they can'),
    'c5000': ('GET /json, 5,000 connections', 'throughput and errors with 5,000 '
              'concurrent keep-alive connections'),
}

# (scenario, metric key, label, unit kind); kinds: rps, ms, us, us-main, mb,
# s, count, ratio, text
METRICS = [
    ('json1', 'rps', 'req/s', 'rps'),
    ('json1', 'p50_ms', 'p50 ms', 'ms'),
    ('json1', 'p99_ms', 'p99 ms', 'ms'),
    ('json50', 'rps', 'req/s', 'rps'),
    ('json50', 'p50_ms', 'p50 ms', 'ms'),
    ('json50', 'p99_ms', 'p99 ms', 'ms'),
    ('json50', 'cpu_main_us', 'CPU µs/request, main process', 'us-main'),
    ('json50', 'cpu_all_us', 'CPU µs/request, all processes', 'us'),
    ('cpu50', 'rps', 'req/s', 'rps'),
    ('cpu50', 'p50_ms', 'p50 ms', 'ms'),
    ('cpu50', 'p99_ms', 'p99 ms', 'ms'),
    ('echo256k', 'rps', 'req/s', 'rps'),
    ('echo256k', 'p99_ms', 'p99 ms', 'ms'),
    ('echo256k', 'cpu_main_us', 'CPU µs/request, main process', 'us-main'),
    ('echo256k', 'cpu_all_us', 'CPU µs/request, all processes', 'us'),
    ('echo256k', 'cpu_main_us_mib', 'CPU µs per MiB of body, main process', 'us-main'),
    ('echo1m', 'rps', 'req/s', 'rps'),
    ('echo1m', 'p99_ms', 'p99 ms', 'ms'),
    ('echo1m', 'cpu_main_us', 'CPU µs/request, main process', 'us-main'),
    ('echo1m', 'cpu_all_us', 'CPU µs/request, all processes', 'us'),
    ('echo1m', 'cpu_main_us_mib', 'CPU µs per MiB of body, main process', 'us-main'),
    ('c2000', 'ok_rps', '200 answers/s', 'rps'),
    ('c2000', 'shed_rps', 'non-2xx answers/s (503)', 'rps'),
    ('c2000', 'p99_ms', 'p99 ms', 'ms'),
    ('c2000', 'errors', 'errors (all kinds)', 'count'),
    ('c5000', 'rps', 'req/s', 'rps'),
    ('c5000', 'ok_rps', '200 answers/s', 'rps'),
    ('c5000', 'shed_rps', 'non-2xx answers/s (503)', 'rps'),
    ('c5000', 'p99_ms', 'p99 ms', 'ms'),
    ('c5000', 'errors', 'errors (all kinds)', 'count'),
    ('c5000', 'connect', 'connect errors', 'count'),
    ('c5000', 'read', 'read errors', 'count'),
    ('c5000', 'write', 'write errors', 'count'),
    ('c5000', 'timeout', 'timeouts', 'count'),
    ('c5000', 'non2xx', 'non-2xx/3xx', 'count'),
    ('sse1000', 'p50_ms', 'p50 ms', 'ms'),
    ('sse1000', 'p99_ms', 'p99 ms', 'ms'),
    ('sse1000', 'missed', 'publishes not delivered to all', 'count'),
    ('sse1000', 'open_s', 'open 1,000 streams (s)', 's'),
    ('sseidle', 'rps_without', 'req/s, no streams', 'rps'),
    ('sseidle', 'rps_with', 'req/s, 5,000 idle streams', 'rps'),
    ('sseidle', 'ratio', 'with / without', 'ratio'),
    ('rss', 'main_mb', 'main process MB', 'mb'),
    ('rss', 'workers_mb', 'each worker MB', 'text'),
    ('rss', 'helpers_mb', 'helper processes MB', 'mb'),
    ('rss', 'total_mb', 'all processes MB', 'mb'),
]

# metrics where the round values are shown, not only their median
SHOW_ROUNDS = {'count'}


# -- systems -------------------------------------------------------------------

class System:
    """How to start one benchmarked server, and what it cannot do."""

    name = ''
    title = ''
    requires = ()
    na = {}  # scenario -> reason it is not applicable

    def missing(self):
        """A reason this system cannot run here, or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return (f"{module} is not installed "
                        f"(pip install -r benchmarks/requirements.txt)")
        return None

    def variant(self, scenario):
        """The server variant a scenario runs on ('main' unless special)."""
        return 'main'

    def command(self, port, variant, args):
        raise NotImplementedError

    def describe(self, args):
        return ' '.join(shlex.quote(part) for part in self.command(8080, 'main', args))


class UhttpWorkers(System):
    name = 'uhttp-workers'
    title = 'uhttp-workers (2 workers + 1 SSE worker)'

    def command(self, port, variant, args):
        return [sys.executable, os.path.join(APPS, 'uhttp_workers_app.py'),
                '--host', HOST, '--port', str(port), '--workers', '2',
                '--max-pending', str(args.uw_max_pending),
                '--max-waiting-clients', str(args.uw_max_waiting_clients)]


class UhttpWorkersBase(UhttpWorkers):
    """The same app from another checkout (--base-tree): an older and a
    newer tree measured side by side, round by round, in one run."""

    name = 'uhttp-workers@base'
    title = 'uhttp-workers from --base-tree (the same app and options)'

    def missing(self):
        tree = os.environ.get('UW_BASE_TREE')
        if not tree or not os.path.isdir(os.path.join(tree, 'uhttp', 'workers')):
            return 'no --base-tree given (a checkout of uhttp-workers to compare)'
        return None

    def command(self, port, variant, args):
        tree = os.environ.get('UW_BASE_TREE', ROOT)
        app = os.path.join(tree, 'benchmarks', 'apps', 'uhttp_workers_app.py')
        argv = UhttpWorkers.command(self, port, variant, args)[2:]
        # the base tree first on sys.path, so its uhttp.workers is imported
        boot = ('import runpy, sys; sys.path.insert(0, sys.argv[1]); '
                'sys.argv = [sys.argv[2]] + sys.argv[3:]; '
                'runpy.run_path(sys.argv[0], run_name="__main__")')
        return [sys.executable, '-c', boot, tree, app] + argv


class UhttpInline(System):
    name = 'uhttp-inline'
    title = 'uhttp-server alone, inline (1 process)'

    def command(self, port, variant, args):
        return [sys.executable, os.path.join(APPS, 'uhttp_inline_app.py'),
                '--host', HOST, '--port', str(port)]


class Gunicorn(System):
    name = 'gunicorn'
    title = 'gunicorn sync -w 2'
    requires = ('gunicorn',)
    na = {'sse1000': 'sync workers hold one connection each: no 1,000 streams',
          'sseidle': 'sync workers hold one connection each: no 5,000 streams'}

    def command(self, port, variant, args):
        return [sys.executable, '-m', 'gunicorn', '-k', 'sync', '-w', '2',
                '-b', f'{HOST}:{port}', '--backlog', '4096',
                '--chdir', APPS, '--log-level', 'warning', 'wsgi_app:app']


class Uvicorn(System):
    name = 'uvicorn'
    title = 'uvicorn --workers 2'
    requires = ('uvicorn',)

    def variant(self, scenario):
        # in-process asyncio queues reach only the subscribers of the worker
        # that got the publish: the fan-out runs on a 1-worker server
        return 'single' if scenario == 'sse1000' else 'main'

    def command(self, port, variant, args):
        workers = '1' if variant == 'single' else '2'
        return [sys.executable, '-m', 'uvicorn', 'asgi_app:app',
                '--app-dir', APPS, '--host', HOST, '--port', str(port),
                '--workers', workers, '--backlog', '4096',
                '--timeout-keep-alive', '30',
                '--log-level', 'warning', '--no-access-log']


SYSTEMS = [UhttpWorkers(), UhttpWorkersBase(), UhttpInline(), Gunicorn(), Uvicorn()]


# -- processes ---------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def raise_nofile():
    """Raise RLIMIT_NOFILE's soft limit to the hard one (for wrk, the servers
    and this process, which holds thousands of SSE sockets)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


def kill_group(proc, grace=10.0):
    """SIGTERM the process group of `proc` (started with start_new_session),
    then SIGKILL what is left after `grace` seconds."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    # the group may outlive its leader (workers): make sure all of it is gone
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def read_rss_kb(pid):
    try:
        with open(f'/proc/{pid}/status') as status:
            for line in status:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def children(pid):
    """Child pids of `pid`, from /proc/<pid>/task/<tid>/children."""
    found = []
    try:
        tasks = os.listdir(f'/proc/{pid}/task')
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f'/proc/{pid}/task/{tid}/children') as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return sorted(set(found))


def cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as handle:
            return handle.read().replace(b'\0', b' ').decode(errors='replace').strip()
    except OSError:
        return ''


class Server:
    """One system's server process (a process group of its own)."""

    def __init__(self, system, variant, args, log_path):
        self.system = system
        self.variant = variant
        self.port = free_port()
        self.argv = system.command(self.port, variant, args)
        self.log_path = log_path
        self.proc = None
        self._log = None

    def start(self, timeout=30.0):
        env = dict(os.environ)
        env['PYTHONPATH'] = os.pathsep.join(
            [ROOT, APPS] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
        env['PYTHONUNBUFFERED'] = '1'
        self._log = open(self.log_path, 'ab')
        self._log.write(f"$ {' '.join(shlex.quote(a) for a in self.argv)}\n".encode())
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=raise_nofile)
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.system.name} exited with code "
                                   f"{self.proc.returncode} at start-up; "
                                   f"see {self.log_path}")
            try:
                status, _ = http_request(self.port, 'GET', common.PATH_JSON,
                                         timeout=2)
                if status == 200:
                    return
                last = f'status {status}'
            except OSError as err:
                last = repr(err)
            time.sleep(0.1)
        raise RuntimeError(f"{self.system.name} did not answer GET /json within "
                           f"{timeout}s ({last}); see {self.log_path}")

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pids(self):
        return self.proc.pid, children(self.proc.pid)

    def stop(self):
        try:
            kill_group(self.proc)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def log_tail(self, lines=15):
        try:
            with open(self.log_path, 'rb') as handle:
                text = handle.read().decode('utf-8', 'replace')
        except OSError:
            return ''
        return '\n'.join(text.rstrip().splitlines()[-lines:])


def http_request(port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# -- wrk -------------------------------------------------------------------------

_UNITS_MS = {'us': 0.001, 'ms': 1.0, 's': 1000.0, 'm': 60000.0, 'h': 3600000.0}


def _to_ms(text):
    match = re.match(r'([\d.]+)(us|ms|s|m|h)$', text.strip())
    if not match:
        return None
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output):
    """The numbers of a `wrk --latency` report."""
    result = {'rps': None, 'requests': None, 'p50_ms': None, 'p75_ms': None,
              'p90_ms': None, 'p99_ms': None, 'connect': 0, 'read': 0,
              'write': 0, 'timeout': 0, 'non2xx': 0}
    for line in output.splitlines():
        line = line.strip()
        match = re.match(r'Requests/sec:\s+([\d.]+)', line)
        if match:
            result['rps'] = float(match.group(1))
            continue
        match = re.match(r'(\d+) requests in', line)
        if match:
            result['requests'] = int(match.group(1))
            continue
        match = re.match(r'(50|75|90|99)%\s+(\S+)$', line)
        if match:
            result[f'p{match.group(1)}_ms'] = _to_ms(match.group(2))
            continue
        match = re.match(r'Socket errors: connect (\d+), read (\d+), '
                         r'write (\d+), timeout (\d+)', line)
        if match:
            for key, value in zip(('connect', 'read', 'write', 'timeout'),
                                  match.groups()):
                result[key] = int(value)
            continue
        match = re.match(r'Non-2xx or 3xx responses: (\d+)', line)
        if match:
            result['non2xx'] = int(match.group(1))
    result['errors'] = sum(result[key] for key in
                           ('connect', 'read', 'write', 'timeout', 'non2xx'))
    return result


def run_wrk(args, port, path, connections, duration, script=None, env=None,
            threads=None):
    """Run wrk once; return its parsed report (with 'ok' and 'output')."""
    if threads is None:
        threads = 1 if connections == 1 else (
            args.c5000_threads if connections > 1000 else args.threads)
    threads = max(1, min(threads, connections))
    argv = [args.wrk, f'-t{threads}', f'-c{connections}', f'-d{duration}s',
            f'--timeout', f'{args.wrk_timeout}s', '--latency']
    if script:
        argv += ['-s', script]
    argv.append(f'http://{HOST}:{port}{path}')
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=full_env, start_new_session=True,
                            preexec_fn=raise_nofile)
    try:
        output, _ = proc.communicate(timeout=duration + 60)
        output = output.decode('utf-8', 'replace')
    except subprocess.TimeoutExpired:
        kill_group(proc, grace=2)
        output = '(wrk did not finish in time and was killed)'
    finally:
        if proc.poll() is None:
            kill_group(proc, grace=2)
    result = parse_wrk(output)
    result['ok'] = proc.returncode == 0 and result['rps'] is not None
    result['output'] = output
    result['argv'] = ' '.join(shlex.quote(a) for a in argv)
    return result


def wrk_measure(args, server, path, connections, script=None, env=None):
    """A warm-up run (discarded), then the measured run; adds the server's
    CPU time per request (main process, all processes) during the latter."""
    port = server.port
    if args.warmup > 0:
        run_wrk(args, port, path, connections, args.warmup, script, env)
    main, kids = server.pids()
    before = {pid: cpu_seconds(pid) for pid in [main] + kids}
    report = run_wrk(args, port, path, connections, args.duration, script, env)
    after = {pid: cpu_seconds(pid) for pid in before}
    requests = report.get('requests')
    report['cpu_main_us'] = report['cpu_all_us'] = None
    if requests and None not in before.values() and None not in after.values():
        report['cpu_main_us'] = (after[main] - before[main]) / requests * 1e6
        report['cpu_all_us'] = (sum(after.values()) - sum(before.values())) / requests * 1e6
    return report


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    try:
        with open(f'/proc/{pid}/stat') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')
    except (OSError, IndexError, ValueError):
        return None


def wrk_metrics(report):
    keys = ('rps', 'p50_ms', 'p99_ms', 'errors', 'connect', 'read', 'write',
            'timeout', 'non2xx', 'requests', 'cpu_main_us', 'cpu_all_us')
    metrics = {key: report.get(key) for key in keys}
    metrics['wrk'] = report.get('argv')
    problems = []
    if not report['ok']:
        problems.append('wrk failed: ' + report['output'].strip()[-300:])
    elif report['errors']:
        problems.append(
            f"{report['errors']} errors (connect {report['connect']}, read "
            f"{report['read']}, write {report['write']}, timeout "
            f"{report['timeout']}, non-2xx {report['non2xx']})")
    return metrics, problems


# -- scenario runners ------------------------------------------------------------

def scenario_rss(args, server):
    main, kids = server.pids()
    main_kb = read_rss_kb(main)
    workers = []
    helpers = []
    for pid in kids:
        kb = read_rss_kb(pid)
        if kb is None:
            continue
        # multiprocessing's resource tracker (uvicorn) is a helper, not a worker
        (helpers if 'resource_tracker' in cmdline(pid) else workers).append((pid, kb))
    metrics = {
        'main_mb': None if main_kb is None else main_kb / 1024.0,
        'workers_mb': [kb / 1024.0 for _, kb in workers],
        'helpers_mb': sum(kb for _, kb in helpers) / 1024.0 if helpers else None,
        'total_mb': ((main_kb or 0) + sum(kb for _, kb in workers + helpers)) / 1024.0,
        'processes': [{'pid': main, 'rss_mb': (main_kb or 0) / 1024.0,
                       'cmd': cmdline(main)[:160]}] + [
            {'pid': pid, 'rss_mb': kb / 1024.0, 'cmd': cmdline(pid)[:160]}
            for pid, kb in workers + helpers],
    }
    return metrics, []


def _json_scenario(connections):
    def run(args, server):
        report = wrk_measure(args, server, common.PATH_JSON, connections)
        return wrk_metrics(report)
    return run


def scenario_cpu50(args, server):
    return wrk_metrics(wrk_measure(args, server, common.PATH_CPU, 50))


def _echo_scenario(size):
    def run(args, server):
        report = wrk_measure(args, server, common.PATH_ECHO, 50,
                             script=LUA_POST, env={'BODY_SIZE': str(size)})
        metrics, problems = wrk_metrics(report)
        # the main process's CPU per MiB of request body (the dispatcher
        # reads it in and writes it back out)
        main = metrics.get('cpu_main_us')
        metrics['cpu_main_us_mib'] = None if main is None else (
            main / (size / float(1 << 20)))
        return metrics, problems
    return run


def _overload_scenario(connections):
    """Many connections at once: how many answers are real (200) and how
    many are refusals (503), per second, apart."""
    def run(args, server):
        count = args.c5000 if connections is None else connections
        report = wrk_measure(args, server, common.PATH_JSON, count)
        metrics, problems = wrk_metrics(report)
        rps, requests = report.get('rps'), report.get('requests')
        shed = report.get('non2xx') or 0
        if rps is not None and requests:
            metrics['ok_rps'] = rps * (requests - shed) / requests
            metrics['shed_rps'] = rps * shed / requests
        else:
            metrics['ok_rps'] = metrics['shed_rps'] = None
        if report['ok'] and (report.get('errors') or 0) == shed:
            problems = []  # 503s past max_pending are answers, not failures
        return metrics, problems
    return run


scenario_c5000 = _overload_scenario(None)


def scenario_sse1000(args, server):
    try:
        result = sse_client.run_publishes(
            HOST, server.port, args.subscribers, args.publishes,
            warmup=2, timeout=args.publish_timeout,
            events_path=common.PATH_EVENTS, publish_path=common.PATH_PUBLISH)
    except sse_client.SubscribeError as err:
        return {'p50_ms': None, 'p99_ms': None, 'missed': args.publishes,
                'open_s': None}, [str(err)]
    latencies = result['latencies_ms']
    metrics = {
        'p50_ms': statistics.median(latencies) if latencies else None,
        'p99_ms': sse_client.percentile(latencies, 99) if latencies else None,
        'max_ms': max(latencies) if latencies else None,
        'missed': len(result['failures']),
        'open_s': result['open_s'],
        'latencies_ms': [round(value, 3) for value in latencies],
    }
    problems = []
    for failure in result['failures'][:3]:
        problems.append(
            f"publish reached {failure['received']}/{failure['expected']} "
            f"subscribers within {args.publish_timeout}s (POST status "
            f"{failure['status']}, answer {str(failure['answer'])[:80]!r})")
    if len(result['failures']) > 3:
        problems.append(f"... {len(result['failures']) - 3} more failed publishes")
    return metrics, problems


def scenario_sseidle(args, server):
    without = wrk_measure(args, server, common.PATH_JSON, 50)
    problems = wrk_metrics(without)[1]
    subs = sse_client.Subscribers(HOST, server.port, common.PATH_EVENTS)
    try:
        try:
            subs.open(args.idle_streams, timeout=120)
        except sse_client.SubscribeError as err:
            problems.append(str(err))
        time.sleep(0.5)
        with_streams = wrk_measure(args, server, common.PATH_JSON, 50)
        problems += wrk_metrics(with_streams)[1]
        live_after = subs.live
    finally:
        subs.close()
    if live_after < args.idle_streams:
        problems.append(f"only {live_after}/{args.idle_streams} idle streams "
                        "were still open after the wrk run")
    ratio = None
    if without['rps'] and with_streams['rps'] is not None:
        ratio = with_streams['rps'] / without['rps']
    metrics = {'rps_without': without['rps'], 'rps_with': with_streams['rps'],
               'ratio': ratio, 'streams_open': live_after,
               'p99_ms_without': without['p99_ms'],
               'p99_ms_with': with_streams['p99_ms']}
    return metrics, problems


RUNNERS = {
    'rss': scenario_rss,
    'json1': _json_scenario(1),
    'json50': _json_scenario(50),
    'cpu50': scenario_cpu50,
    'echo256k': _echo_scenario(256 * 1024),
    'echo1m': _echo_scenario(1024 * 1024),
    'sse1000': scenario_sse1000,
    'sseidle': scenario_sseidle,
    'c2000': _overload_scenario(2000),
    'c5000': scenario_c5000,
}


def sanity_check(server):
    """The endpoints answer what they should (catches a misconfigured app)."""
    problems = []
    status, body = http_request(server.port, 'GET', common.PATH_JSON)
    if status != 200 or json.loads(body) != common.JSON_BODY:
        problems.append(f"GET /json answered {status} {body[:80]!r}")
    status, body = http_request(server.port, 'GET', common.PATH_CPU)
    if status != 200:
        problems.append(f"GET /cpu answered {status} {body[:80]!r}")
    payload = os.urandom(1024 * 1024)
    status, body = http_request(
        server.port, 'POST', common.PATH_ECHO, payload,
        {'Content-Type': 'application/octet-stream'}, timeout=30)
    if status != 200 or body != payload:
        problems.append(f"POST /echo 1 MiB answered {status} with {len(body)} "
                        "bytes (not the body sent)")
    return problems


# -- one round of one system ---------------------------------------------------------

def run_system_round(args, system, round_no, scenarios, log_dir, record):
    """Run every selected scenario on fresh server(s) of `system`."""
    groups = {}
    for scenario in scenarios:
        if scenario in system.na:
            continue
        groups.setdefault(system.variant(scenario), []).append(scenario)
    for variant, names in groups.items():
        log_path = os.path.join(log_dir, f'{system.name}-{variant}-round{round_no}.log')
        server = Server(system, variant, args, log_path)
        try:
            try:
                server.start()
            except RuntimeError as err:
                for name in names:
                    record(system, name, round_no, None, [f'server start failed: {err}'])
                continue
            time.sleep(args.idle)
            try:
                sanity = sanity_check(server)
            except (OSError, ValueError, http.client.HTTPException) as err:
                sanity = [f'sanity check failed: {err!r}']
            for problem in sanity:
                record(system, 'sanity', round_no, None, [problem])
            for name in names:
                if not server.alive:
                    record(system, name, round_no, None, [
                        f'server process exited (code {server.proc.returncode}) '
                        f'before this scenario; log tail:\n{server.log_tail()}'])
                    continue
                started = time.monotonic()
                print(f'  [{system.name}] {name} ...', end='', flush=True)
                try:
                    metrics, problems = RUNNERS[name](args, server)
                except Exception as err:  # pylint: disable=broad-except
                    metrics, problems = None, [f'scenario failed: {err!r}']
                if not server.alive:
                    problems = list(problems) + [
                        f'server process exited (code {server.proc.returncode}) '
                        f'during this scenario; log tail:\n{server.log_tail()}']
                print(f' {summary(name, metrics)} ({time.monotonic() - started:.0f}s)'
                      + (f'  !! {problems[0][:160]}' if problems else ''), flush=True)
                record(system, name, round_no, metrics, problems)
                time.sleep(args.settle)
        finally:
            server.stop()


def summary(name, metrics):
    if not metrics:
        return 'no result'
    if name == 'rss':
        workers = ', '.join(f'{mb:.1f}' for mb in metrics['workers_mb'])
        return f"main {fmt(metrics['main_mb'], 'mb')} MB, workers [{workers}] MB"
    if name == 'sse1000':
        return (f"p50 {fmt(metrics['p50_ms'], 'ms')} ms, p99 "
                f"{fmt(metrics['p99_ms'], 'ms')} ms, missed {metrics['missed']}")
    if name == 'sseidle':
        return (f"{fmt(metrics['rps_without'], 'rps')} -> "
                f"{fmt(metrics['rps_with'], 'rps')} req/s "
                f"(x{fmt(metrics['ratio'], 'ratio')})")
    text = f"{fmt(metrics.get('rps'), 'rps')} req/s, p99 {fmt(metrics.get('p99_ms'), 'ms')} ms"
    if metrics.get('errors'):
        text += f", {metrics['errors']} errors"
    return text


# -- aggregation and reports ------------------------------------------------------

def fmt(value, kind):
    if value is None:
        return '—'
    if kind == 'rps':
        return f'{value:,.0f}'
    if kind == 'ms':
        return f'{value:.2f}' if value < 10 else f'{value:.1f}'
    if kind == 'mb':
        return f'{value:.1f}'
    if kind == 's':
        return f'{value:.2f}'
    if kind == 'ratio':
        return f'{value:.2f}'
    if kind == 'count':
        return f'{value:,.0f}'
    if kind in ('us', 'us-main'):
        return f'{value:,.0f}'
    return str(value)


def median_of(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def aggregate(results, systems):
    """Medians over rounds: {system: {scenario: {metric: value}}}."""
    table = {}
    for system in systems:
        per = {}
        for scenario, rounds in results.get(system.name, {}).items():
            metrics = {}
            measured = [entry['metrics'] for entry in rounds if entry['metrics']]
            if not measured:
                per[scenario] = None
                continue
            metrics['failed_rounds'] = len(rounds) - len(measured)
            keys = set()
            for entry in measured:
                keys.update(entry)
            for key in keys:
                values = [entry.get(key) for entry in measured]
                if key == 'workers_mb':
                    count = max(len(value) for value in values)
                    metrics[key] = [median_of([value[i] for value in values
                                               if len(value) > i])
                                    for i in range(count)]
                elif all(isinstance(value, (int, float)) or value is None
                         for value in values):
                    metrics[key] = median_of(values)
                    metrics[key + '__rounds'] = values
            per[scenario] = metrics
        table[system.name] = per
    return table


def cell(agg, system, scenario, key, kind):
    if scenario in system.na:
        return 'n/a'
    per = agg.get(system.name, {})
    if scenario not in per:
        return '—'
    metrics = per[scenario]
    if metrics is None:
        return 'failed'
    value = metrics.get(key)
    if key == 'workers_mb':
        return ', '.join(fmt(mb, 'mb') for mb in value) if value else '—'
    text = fmt(value, kind)
    rounds = metrics.get(key + '__rounds')
    if kind in SHOW_ROUNDS and rounds and len(rounds) > 1:
        text += ' (' + '/'.join(fmt(v, kind) for v in rounds) + ')'
    if metrics.get('failed_rounds'):
        text += f" ({metrics['failed_rounds']} round(s) failed)"
    return text


def ratio_cell(agg, baseline, system, scenario, key, kind):
    # no ratio for counts, nor for the main process's CPU: a gunicorn or
    # uvicorn main process does no per-request work
    if kind in ('text', 'count', 'us-main') or scenario in system.na:
        return ''
    base = (agg.get(baseline.name, {}).get(scenario) or {}).get(key)
    other = (agg.get(system.name, {}).get(scenario) or {}).get(key)
    if base is None or not other:
        return ''
    return f'{base / other:.2f}'


def targets(agg):
    """The README's targets, checked on this run's medians."""
    def get(system, scenario, key):
        return ((agg.get(system) or {}).get(scenario) or {}).get(key)

    checks = []

    def ratio(scenario, key, peer, minimum, label):
        base = get(BASELINE, scenario, key)
        other = get(peer, scenario, key)
        if base is None or not other:
            checks.append((label, 'not measured', None))
            return
        value = base / other
        checks.append((label, f'{value:.3f}x', value >= minimum))

    def limit(scenario, key, maximum, label, unit):
        value = get(BASELINE, scenario, key)
        if value is None:
            checks.append((label, 'not measured', None))
            return
        checks.append((label, f'{value:.1f} {unit}', value <= maximum))

    ratio('json50', 'rps', 'uhttp-inline', 0.6,
          'small JSON at 50 connections >= 0.6x the inline ceiling')
    ratio('json50', 'rps', 'gunicorn', 2.0,
          'small JSON at 50 connections >= 2x gunicorn sync')
    limit('json50', 'p99_ms', 20.0, 'p99 <= 20 ms at 50 connections', 'ms')
    ratio('echo1m', 'rps', 'uhttp-inline', 0.5, '1 MiB echo >= 0.5x inline')
    ratio('echo256k', 'rps', 'uvicorn', 1.0, '256 KiB echo >= 1x uvicorn')
    ratio('echo1m', 'rps', 'uvicorn', 1.0, '1 MiB echo >= 1x uvicorn')
    rounds = get(BASELINE, 'c5000', 'errors__rounds')
    failed = get(BASELINE, 'c5000', 'failed_rounds')
    if rounds:
        worst = max(value or 0 for value in rounds)
        checks.append(('5,000 connections with zero errors',
                       f"errors per round: {'/'.join(str(v) for v in rounds)}"
                       + (f', {failed} round(s) failed' if failed else ''),
                       worst == 0 and not failed))
    else:
        checks.append(('5,000 connections with zero errors', 'not measured', None))
    limit('sse1000', 'p50_ms', 50.0, 'SSE to 1,000 subscribers p50 <= 50 ms', 'ms')
    value = get(BASELINE, 'sseidle', 'ratio')
    checks.append(('throughput with 5,000 idle streams >= 0.9x of without',
                   'not measured' if value is None else f'{value:.3f}x',
                   None if value is None else value >= 0.9))
    limit('rss', 'main_mb', 30.0, 'dispatcher idle RSS <= 30 MB', 'MB')
    return checks


def render_markdown(meta, agg, systems, scenarios, notes, checks):
    baseline = next(s for s in systems if s.name == BASELINE) if any(
        s.name == BASELINE for s in systems) else None
    peers = [s for s in systems if s.name != BASELINE]
    lines = []
    lines.append(f"Date: {meta['date']} (start of the run)  ")
    lines.append(f"Machine: {meta['nproc']} CPUs, {meta['cpu']}, "
                 f"Python {meta['python']}, {meta['platform']}  ")
    lines.append(f"Versions: {meta['versions_text']}  ")
    lines.append(f"Command: `{meta['command']}`  ")
    lines.append(f"Load average (1 min) at start {meta['loadavg_start']}, at end "
                 f"{meta.get('loadavg_end')}, before each round "
                 f"{meta.get('loadavg_rounds')}; total time "
                 f"{meta.get('elapsed_min', 0):.1f} min  ")
    lines.append(f"Rounds: {meta['rounds']}, wrk run {meta['duration']} s after "
                 f"a {meta['warmup']} s warm-up; medians over rounds. Ratio "
                 "columns are uhttp-workers ÷ that system (for req/s above 1 "
                 "means uhttp-workers is faster; for ms and MB below 1 means it "
                 "is lower).")
    lines.append('')
    header = ['Scenario', 'Metric']
    if baseline:
        header.append(BASELINE)
    for peer in peers:
        header.append(peer.name)
        if baseline:
            header.append(f'uw/{peer.name}')
    lines.append('| ' + ' | '.join(header) + ' |')
    lines.append('|' + '|'.join(['---'] * 2 + ['---:'] * (len(header) - 2)) + '|')
    previous = None
    for scenario, key, label, kind in METRICS:
        if scenario not in scenarios:
            continue
        title = SCENARIOS[scenario][0] if scenario != previous else ''
        previous = scenario
        row = [title, label]
        if baseline:
            row.append(cell(agg, baseline, scenario, key, kind))
        for peer in peers:
            row.append(cell(agg, peer, scenario, key, kind))
            if baseline:
                row.append(ratio_cell(agg, baseline, peer, scenario, key, kind))
        lines.append('| ' + ' | '.join(row) + ' |')
    lines.append('')
    lines.append('Systems:')
    lines.append('')
    for system in systems:
        lines.append(f'- **{system.name}**: {system.title}')
    if checks:
        lines.append('')
        lines.append('Targets (uhttp-workers, this run):')
        lines.append('')
        lines.append('| Target | Measured | Met |')
        lines.append('|---|---|---|')
        for label, value, ok in checks:
            mark = '—' if ok is None else ('yes' if ok else '**no**')
            lines.append(f'| {label} | {value} | {mark} |')
    if notes:
        lines.append('')
        lines.append('Notes:')
        lines.append('')
        for note in notes:
            text = note.replace('\n', '\n  ')
            lines.append(f'- {text}')
    return '\n'.join(lines) + '\n'


# -- machine info ----------------------------------------------------------------------

def machine_info(args):
    cpu = platform.processor() or 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as handle:
            for line in handle:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for dist in ('uhttp-server', 'uhttp-workers', 'gunicorn', 'uvicorn',
                 'uvloop', 'httptools'):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    if versions['uhttp-workers'] is None:
        versions['uhttp-workers'] = _source_version() + ' (source tree)'
    revision = _git_revision()
    if revision:
        versions['uhttp-workers'] += f' at {revision}'
    try:
        wrk = subprocess.run([args.wrk, '-v'], capture_output=True, text=True,
                             timeout=10).stdout.splitlines()[0]
        versions['wrk'] = wrk.split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        versions['wrk'] = None
    return {
        'date': datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'),
        'nproc': os.cpu_count(),
        'cpu': cpu,
        'python': platform.python_version(),
        'platform': f'{platform.system()} {platform.release()}',
        'versions': versions,
        'versions_text': ', '.join(f'{name} {version}' for name, version
                                   in versions.items() if version),
        'command': 'python benchmarks/run.py' + (
            ' ' + ' '.join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ''),
        'rounds': args.rounds,
        'duration': args.duration,
        'warmup': args.warmup,
        'loadavg_start': loadavg(),
    }


def cpu_busy(interval=1.0):
    """Percent of all CPUs busy over `interval` seconds (from /proc/stat)."""
    def sample():
        with open('/proc/stat') as handle:
            values = [int(v) for v in handle.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle
    try:
        total1, idle1 = sample()
        time.sleep(interval)
        total2, idle2 = sample()
    except (OSError, ValueError, IndexError):
        return None
    total = total2 - total1
    return 100.0 * (total - (idle2 - idle1)) / total if total else None


def wait_quiet(args, label):
    """Before a system's turn (nothing of ours is running then), wait up to
    --quiet-wait seconds for other work on the machine to drop below
    --quiet-cpu percent. Returns the last busy percentage seen."""
    busy = cpu_busy()
    if args.quiet_wait <= 0 or busy is None or busy <= args.quiet_cpu:
        return busy
    deadline = time.monotonic() + args.quiet_wait
    print(f'  (machine {busy:.0f}% busy before {label}: waiting up to '
          f'{args.quiet_wait:.0f}s for it to drop below {args.quiet_cpu:.0f}%)',
          flush=True)
    while time.monotonic() < deadline:
        busy = cpu_busy(2.0)
        if busy is not None and busy <= args.quiet_cpu:
            break
    return busy


def loadavg():
    """The 1-minute load average (other work on the machine skews results)."""
    try:
        with open('/proc/loadavg') as handle:
            return float(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _git_revision():
    """The checkout's commit, with '+changes' when uhttp/ has uncommitted
    edits (read-only git commands; None outside a git checkout)."""
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(['git', 'status', '--porcelain', '--', 'uhttp'],
                               cwd=ROOT, capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ('+changes' if dirty.stdout.strip() else '')
    except (OSError, subprocess.SubprocessError):
        return None


def _source_version():
    try:
        with open(os.path.join(ROOT, 'pyproject.toml')) as handle:
            match = re.search(r'^version\s*=\s*"([^"]+)"', handle.read(), re.M)
            return match.group(1) if match else '?'
    except OSError:
        return '?'


# -- main ---------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=None,
                        help='rounds; the systems take turns each round (default 3)')
    parser.add_argument('--duration', type=int, default=None,
                        help='whole seconds per measured wrk run (default 5; quick 1)')
    parser.add_argument('--warmup', type=int, default=None,
                        help='whole seconds of wrk warm-up before each run, 0 for '
                             'none (default 1; quick 0)')
    parser.add_argument('--quick', action='store_true',
                        help='a smoke run of about 2-3 minutes: 1 s wrk runs, no '
                             'warm-up, 10 publishes (rough numbers)')
    parser.add_argument('--only', default='',
                        help='comma-separated scenarios: ' + ','.join(SCENARIOS))
    parser.add_argument('--systems', default='',
                        help='comma-separated systems: ' + ','.join(s.name for s in SYSTEMS))
    parser.add_argument('--publishes', type=int, default=None,
                        help='measured SSE publishes per round (default 20; quick 10)')
    parser.add_argument('--subscribers', type=int, default=1000)
    parser.add_argument('--idle-streams', type=int, default=5000)
    parser.add_argument('--c5000', type=int, default=5000,
                        help='connections of the c5000 scenario')
    parser.add_argument('--threads', type=int, default=2, help='wrk threads')
    parser.add_argument('--c5000-threads', type=int, default=4,
                        help='wrk threads for the 5,000 connection run')
    parser.add_argument('--wrk-timeout', type=int, default=10,
                        help='wrk --timeout in seconds (a slower answer counts '
                             'as a timeout error)')
    parser.add_argument('--publish-timeout', type=float, default=10.0)
    parser.add_argument('--idle', type=float, default=None,
                        help='seconds idle after start-up before reading RSS (default 2)')
    parser.add_argument('--settle', type=float, default=None,
                        help='seconds of pause between scenarios (default 0.5)')
    parser.add_argument('--uw-max-pending', type=int, default=1000,
                        help='uhttp-workers Dispatcher max_pending')
    parser.add_argument('--uw-max-waiting-clients', type=int, default=16000,
                        help='uhttp-workers Dispatcher max_waiting_clients')
    parser.add_argument('--quiet-cpu', type=float, default=20.0,
                        help='before each turn, wait while other work keeps the '
                             'machine busier than this percent (default 20)')
    parser.add_argument('--quiet-wait', type=float, default=None,
                        help='longest such wait in seconds, 0 to never wait '
                             '(default 60; quick 0)')
    parser.add_argument('--base-tree', metavar='DIR',
                        help='a checkout of uhttp-workers to measure beside this '
                             "one, as the system 'uhttp-workers@base'")
    parser.add_argument('--wrk', default=shutil.which('wrk') or '/usr/bin/wrk')
    parser.add_argument('--output-dir', default=RESULTS)
    parser.add_argument('--report', metavar='JSON',
                        help='only print the Markdown table of a saved run '
                             '(a results/*.json file); runs nothing')
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {'rounds': 3, 'duration': 1 if quick else 5,
                'warmup': 0 if quick else 1, 'publishes': 10 if quick else 20,
                'idle': 0.5 if quick else 2.0, 'settle': 0.2 if quick else 0.5,
                'quiet_wait': 0.0 if quick else 60.0}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 1:
        parser.error('--rounds must be >= 1')
    if args.duration < 1 or args.warmup < 0:
        parser.error('--duration must be >= 1 and --warmup >= 0 (whole seconds: '
                     'wrk takes no fractions)')
    scenarios = [name.strip() for name in args.only.split(',') if name.strip()]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f'unknown scenario {name!r} (known: {", ".join(SCENARIOS)})')
    args.scenarios = [name for name in SCENARIOS if not scenarios or name in scenarios]
    names = [name.strip() for name in args.systems.split(',') if name.strip()]
    known = {system.name: system for system in SYSTEMS}
    for name in names:
        if name not in known:
            parser.error(f'unknown system {name!r} (known: {", ".join(known)})')
    if args.base_tree:
        os.environ['UW_BASE_TREE'] = os.path.abspath(args.base_tree)
    args.system_list = [system for system in SYSTEMS if not names or system.name in names]
    return args


def report(path):
    """Print the Markdown of a saved run (with this version's rendering)."""
    with open(path) as handle:
        saved = json.load(handle)
    known = {system.name: system for system in SYSTEMS}
    systems = [known[name] for name in saved['systems'] if name in known]
    scenarios = saved['args']['scenarios']
    agg = aggregate(saved['results'], systems)
    checks = targets(agg) if any(s.name == BASELINE for s in systems) else []
    sys.stdout.write(render_markdown(saved['meta'], agg, systems, scenarios,
                                     saved['notes'], checks))
    return 0


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        return report(args.report)
    if not os.path.exists(args.wrk):
        sys.exit(f"wrk not found ({args.wrk}): apt-get install wrk")
    raise_nofile()
    meta = machine_info(args)
    notes = []
    systems = []
    for system in args.system_list:
        reason = system.missing()
        if reason:
            notes.append(f'{system.name} skipped: {reason}')
            print(f'!! skipping {system.name}: {reason}')
        else:
            systems.append(system)
    if not systems:
        sys.exit('no system to benchmark')
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    os.makedirs(args.output_dir, exist_ok=True)
    log_dir = os.path.join(args.output_dir, f'logs-{stamp}')
    os.makedirs(log_dir, exist_ok=True)
    print(f"{meta['nproc']} CPUs ({meta['cpu']}), Python {meta['python']}; "
          f"{meta['versions_text']}")
    print(f"scenarios: {', '.join(args.scenarios)}; systems: "
          f"{', '.join(s.name for s in systems)}; {args.rounds} rounds, "
          f"{args.duration}s runs after {args.warmup}s warm-up")

    results = {}
    problems_seen = []
    busy_before = []

    def record(system, scenario, round_no, metrics, problems):
        if scenario != 'sanity':
            results.setdefault(system.name, {}).setdefault(scenario, []).append(
                {'round': round_no, 'metrics': metrics, 'problems': problems})
        for problem in problems:
            problems_seen.append((system.name, scenario, round_no, problem))

    started = time.monotonic()
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(systems)
        order = systems[shift:] + systems[:shift]
        meta.setdefault('loadavg_rounds', []).append(loadavg())
        print(f"round {round_no}/{args.rounds}: {' -> '.join(s.name for s in order)}"
              f" (load average {meta['loadavg_rounds'][-1]})")
        for system in order:
            busy = wait_quiet(args, f'{system.name} round {round_no}')
            busy_before.append({'system': system.name, 'round': round_no,
                                'busy_pct': busy})
            if busy is not None and busy > args.quiet_cpu:
                notes.append(f'{system.name} round {round_no} started with the '
                             f'machine {busy:.0f}% busy with other work')
            run_system_round(args, system, round_no, args.scenarios, log_dir, record)
    elapsed = time.monotonic() - started
    meta['loadavg_end'] = loadavg()
    meta['elapsed_min'] = elapsed / 60.0

    agg = aggregate(results, systems)
    for system in systems:
        for scenario, reason in system.na.items():
            if scenario in args.scenarios:
                notes.append(f'{system.name} {scenario}: n/a, {reason}')
    if any(s.name == 'uvicorn' for s in systems) and 'sse1000' in args.scenarios:
        notes.append('uvicorn sse1000 runs on `--workers 1`: its subscribers '
                     'live in asyncio queues of one process, and a publish '
                     'reaches only the process that received it')
    if any(s.name == BASELINE for s in systems):
        notes.append(f'uhttp-workers runs with max_pending={args.uw_max_pending}, '
                     f'max_waiting_clients={args.uw_max_waiting_clients} '
                     '(max_pending at its default: the 2,000 and 5,000 '
                     'connection runs are overload, 200s and 503s counted apart)')
    for system_name, scenario, round_no, problem in problems_seen:
        notes.append(f'{system_name} {scenario} round {round_no}: {problem}')
    checks = targets(agg) if any(s.name == BASELINE for s in systems) else []
    markdown = render_markdown(meta, agg, systems, args.scenarios, notes, checks)
    print()
    print(markdown)
    print(f'total time {elapsed / 60:.1f} min')

    base = os.path.join(args.output_dir, f'bench-{stamp}')
    with open(base + '.md', 'w') as handle:
        handle.write(markdown)
    payload = {'meta': meta, 'args': {k: v for k, v in vars(args).items()
                                      if k != 'system_list'},
               'systems': [s.name for s in systems], 'results': results,
               'medians': agg, 'targets': checks, 'notes': notes,
               'busy_before_turns': busy_before,
               'elapsed_s': elapsed}
    with open(base + '.json', 'w') as handle:
        json.dump(payload, handle, indent=1, default=str)
    for suffix in ('.md', '.json'):
        shutil.copyfile(base + suffix, os.path.join(args.output_dir, 'latest' + suffix))
    print(f'wrote {base}.md, {base}.json (and latest.md/.json); server logs in {log_dir}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
