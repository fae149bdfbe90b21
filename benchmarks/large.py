#!/usr/bin/env python3
"""Large bodies, side by side in one run: a 1 GiB upload to a worker that
hashes it, and a 1 GiB FileResponse download.

- upload: the client sends the file (os.sendfile on a raw socket, so the
  client costs little) as one POST /hash; the worker hashes
  request.body_file. Measured: throughput, and the dispatcher's RSS growth
  (VmRSS sampled every 5 ms) during the upload. Peer: `cat FILE >
  /dev/null` on the same (cached) file, the ceiling of reading it once.
- download: `curl -o /dev/null` of GET /file (the worker answers with
  FileResponse, the dispatcher sends it with sendfile); the dispatcher's
  RSS growth. Peer: `python -m http.server` serving the same file to the
  same curl.
- static: the same file as a static file of the dispatcher (its directory
  mounted at /static/, sent with sendfile too), same peer.

    python benchmarks/large.py                 # 1 GiB, 3 rounds
    python benchmarks/large.py --size-mib 256 --rounds 1

Every server is a process group of its own on 127.0.0.1 and a free port,
stopped (SIGTERM, then SIGKILL) in a finally block. Results go to
benchmarks/results/large-<time>.md and .json.
"""

import argparse
import datetime
import hashlib
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import run as _run  # noqa: E402  (processes, ports, RSS: the main runner's)

HOST = _run.HOST
MIB = 1 << 20


def make_file(path, size):
    """`size` bytes of a repeating pseudo-random block; its sha256."""
    block = hashlib.sha256(b'seed').digest() * (MIB // 32)
    digest = hashlib.sha256()
    with open(path, 'wb') as file:
        left = size
        while left:
            piece = block[:min(left, len(block))]
            file.write(piece)
            digest.update(piece)
            left -= len(piece)
    return digest.hexdigest()


class RssWatch:
    """Peak VmRSS of a process while the block runs, sampled every 5 ms,
    and the CPU time it (`cpu_main`) and its children (`cpu_all`, with it)
    used meanwhile."""

    def __init__(self, pid):
        self.pid = pid
        self.before = _run.read_rss_kb(pid) or 0
        self.peak = self.before
        self.cpu_main = self.cpu_all = None
        self._cpu = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        while not self._done.is_set():
            self.peak = max(self.peak, _run.read_rss_kb(self.pid) or 0)
            time.sleep(0.005)

    def _cpu_now(self):
        pids = [self.pid] + _run.children(self.pid)
        return {pid: _run.cpu_seconds(pid) or 0.0 for pid in pids}

    def __enter__(self):
        self._cpu = self._cpu_now()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        after = self._cpu_now()
        self._done.set()
        self._thread.join()
        self.cpu_main = after[self.pid] - self._cpu[self.pid]
        self.cpu_all = sum(after.get(pid, 0.0) - used
                           for pid, used in self._cpu.items())

    @property
    def growth_mb(self):
        return (self.peak - self.before) / 1024.0


def start_server(argv, port, log_path, check):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [_run.ROOT] + ([env['PYTHONPATH']] if env.get('PYTHONPATH') else []))
    log = open(log_path, 'ab')
    proc = subprocess.Popen(argv, cwd=_run.ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[1]} exited at start-up; see {log_path}")
        try:
            status, _ = _run.http_request(port, 'GET', check, timeout=2)
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    stop_server(proc)
    raise RuntimeError(f"{argv} did not start; see {log_path}")


def stop_server(proc):
    try:
        _run.kill_group(proc)
    finally:
        proc.log.close()


def upload(port, path, size):
    """(seconds, answer) of one POST /hash of the file at `path`."""
    started = time.monotonic()
    sock = socket.create_connection((HOST, port), timeout=600)
    try:
        sock.sendall(b'POST /hash HTTP/1.1\r\nHost: bench\r\n'
                     b'Content-Type: application/octet-stream\r\n'
                     b'Content-Length: %d\r\n\r\n' % size)
        with open(path, 'rb') as file:
            sock.sendfile(file, 0, size)  # os.sendfile, waiting with a timeout
        data = b''
        while b'\r\n\r\n' not in data or not data.rstrip().endswith(b'}'):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    elapsed = time.monotonic() - started
    body = data.partition(b'\r\n\r\n')[2]
    return elapsed, json.loads(body)


def curl(url):
    """(seconds, bytes) of one curl download to /dev/null."""
    out = subprocess.run(
        ['curl', '-s', '-o', '/dev/null', '-w', '%{time_total} %{size_download}',
         url], capture_output=True, text=True, timeout=600, check=True).stdout
    seconds, size = out.split()
    return float(seconds), int(float(size))


def timed_cat(path):
    started = time.monotonic()
    subprocess.run(f'cat {shlex.quote(path)} > /dev/null', shell=True,
                   check=True)
    return time.monotonic() - started


def one_round(args, path, size, sha, log_dir, record):
    port = _run.free_port()
    server = start_server(
        [sys.executable, os.path.join(_run.APPS, 'large_app.py'), '--host',
         HOST, '--port', str(port), '--file', path]
        + (['--spool-dir', args.spool_dir] if args.spool_dir else []),
        port, os.path.join(log_dir, 'uhttp-workers.log'), '/ping')
    try:
        upload(port, path, MIB)  # warm-up: the first spooled body
        for _ in range(args.repeat):
            with RssWatch(server.pid) as watch:
                seconds, answer = upload(port, path, size)
            ok = answer.get('sha256') == sha and answer.get('size') == size
            record('upload', seconds, size, watch.growth_mb, ok, watch)
        curl(f'http://{HOST}:{port}/ping')
        for _ in range(args.repeat):
            with RssWatch(server.pid) as watch:
                seconds, got = curl(f'http://{HOST}:{port}/file')
            record('download', seconds, size, watch.growth_mb, got == size,
                   watch)
        static = f'http://{HOST}:{port}/static/{os.path.basename(path)}'
        for _ in range(args.repeat):
            with RssWatch(server.pid) as watch:
                seconds, got = curl(static)
            record('static', seconds, size, watch.growth_mb, got == size,
                   watch)
    finally:
        stop_server(server)
    for _ in range(args.repeat):
        record('cat', timed_cat(path), size, None, True)
    port = _run.free_port()
    directory, name = os.path.split(path)
    peer = start_server(
        [sys.executable, '-m', 'http.server', '--bind', HOST, '--directory',
         directory, str(port)], port,
        os.path.join(log_dir, 'http.server.log'), '/' + name + '?probe')
    try:
        for _ in range(args.repeat):
            with RssWatch(peer.pid) as watch:
                seconds, got = curl(f'http://{HOST}:{port}/{name}')
            record('http.server', seconds, size, None, got == size, watch)
    finally:
        stop_server(peer)


def render(results, args, size):
    def median(name, key):
        values = [item[key] for item in results if item['what'] == name
                  and item[key] is not None]
        return statistics.median(values) if values else None

    speed = {name: median(name, 'mib_s') for name in
             ('upload', 'cat', 'download', 'static', 'http.server')}
    growth = {name: max((item['rss_growth_mb'] for item in results
                         if item['what'] == name), default=None)
              for name in ('upload', 'download', 'static')}
    cpu = {name: (median(name, 'cpu_main_s_gib'), median(name, 'cpu_all_s_gib'))
           for name in ('upload', 'download', 'static', 'http.server')}
    failed = [item for item in results if not item['ok']]
    lines = [
        f"Date: {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC; "
        f"{os.cpu_count()} CPUs; {args.rounds} round(s) x {args.repeat} "
        f"transfers of {size // MIB} MiB; "
        f"load average {os.getloadavg()[0]:.2f} at the end",
        '',
        '| Measurement | uhttp-workers | peer | ratio | dispatcher RSS growth |',
        '|---|---:|---:|---:|---:|',
        _row('upload to a hashing worker vs `cat file > /dev/null`',
             speed['upload'], speed['cat'], growth['upload']),
        _row('FileResponse download vs `python -m http.server`',
             speed['download'], speed['http.server'], growth['download']),
        _row('static file download vs `python -m http.server`',
             speed['static'], speed['http.server'], growth['static']),
        '',
        'Throughputs in MiB/s (medians over every transfer); each '
        'transfer\'s numbers are in the JSON. RSS growth: the largest.',
        '',
        '| CPU seconds per GiB | main process | all processes |',
        '|---|---:|---:|',
    ] + [f'| {label} | {_cpu(cpu[name][0])} | {_cpu(cpu[name][1])} |'
         for name, label in (
             ('upload', 'upload (dispatcher; all: with the hashing worker)'),
             ('download', 'FileResponse download (dispatcher; all: with workers)'),
             ('static', 'static file download (dispatcher)'),
             ('http.server', '`python -m http.server` download'))]
    if failed:
        lines.append(f"\n**{len(failed)} transfer(s) came back wrong**: "
                     + ', '.join(f"{item['what']} round {item['round']}"
                                 for item in failed))
    return '\n'.join(lines) + '\n'


def _row(label, ours, peer, growth):
    ratio = f'{ours / peer:.2f}x' if ours and peer else ''
    return (f"| {label} | {_speed(ours)} | {_speed(peer)} | {ratio} | "
            f"{'' if growth is None else f'{growth:.1f} MB'} |")


def _cpu(value):
    return '' if value is None else f'{value:.3f}'


def _speed(value):
    return '' if value is None else f'{value:,.0f}'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size-mib', type=int, default=1024)
    parser.add_argument('--rounds', type=int, default=3,
                        help='rounds, each on fresh servers')
    parser.add_argument('--repeat', type=int, default=3,
                        help='transfers of each kind per round (the first '
                             'large upload into a fresh server is the '
                             'slowest: every one is kept)')
    parser.add_argument('--spool-dir', default=None,
                        help="the dispatcher's spool_dir (default: the "
                             "system's temporary directory)")
    parser.add_argument('--work-dir', default=None,
                        help='where the test file is written (default: a '
                             'temporary directory)')
    parser.add_argument('--output-dir', default=_run.RESULTS)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    size = args.size_mib * MIB
    stamp = datetime.datetime.utcnow().strftime('%Y%m%d-%H%M%S')
    os.makedirs(args.output_dir, exist_ok=True)
    log_dir = os.path.join(args.output_dir, f'large-logs-{stamp}')
    os.makedirs(log_dir, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        path = os.path.join(work, 'large.bin')
        sha = make_file(path, size)
        timed_cat(path)  # the file in the page cache, for every reader
        for round_no in range(1, args.rounds + 1):
            def record(what, seconds, nbytes, growth, ok, watch=None,
                       round_no=round_no):
                gib = nbytes / float(1 << 30)
                item = {'what': what, 'round': round_no, 'seconds': seconds,
                        'mib_s': nbytes / MIB / seconds if seconds else None,
                        'rss_growth_mb': growth, 'ok': ok,
                        'cpu_main_s_gib': None if watch is None
                        else watch.cpu_main / gib,
                        'cpu_all_s_gib': None if watch is None
                        else watch.cpu_all / gib}
                results.append(item)
                print(f"round {round_no} {what}: {item['mib_s']:,.0f} MiB/s"
                      + ('' if growth is None else
                         f", dispatcher RSS +{growth:.1f} MB")
                      + ('' if ok else ' (WRONG)'), flush=True)
            one_round(args, path, size, sha, log_dir, record)
    text = render(results, args, size)
    print('\n' + text)
    base = os.path.join(args.output_dir, f'large-{stamp}')
    with open(base + '.md', 'w', encoding='utf-8') as file:
        file.write(text)
    with open(base + '.json', 'w', encoding='utf-8') as file:
        json.dump({'size': size, 'results': results}, file, indent=1)
    print(f"wrote {base}.md and .json")
    return 0


if __name__ == '__main__':
    sys.exit(main())
