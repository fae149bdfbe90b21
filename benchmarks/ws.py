"""WebSocket benchmarks: uhttp-workers beside uvicorn running the
`websockets` library, on the same number of processes.

    python benchmarks/ws.py                    # both systems, 2 workers each
    python benchmarks/ws.py --systems uhttp-workers --connections 100

Scenarios, per system (each on a fresh server):
- echo: `--connections` WebSocket clients each send a 32-byte text message
  and wait for its echo, over and over for `--duration` seconds; the round
  trip p50/p99 and the messages per second (echoes received) are reported.
- idle: HTTP throughput (wrk, GET /api/hello, 50 connections) without and
  then with `--idle` open, idle WebSocket connections; the cost is the drop.

The clients run in separate processes (`--client-procs`) on the same
machine as the servers, so the numbers are a comparison on this machine,
not a ceiling. Every server runs in its own process group on 127.0.0.1 and
is killed by its pid in a `finally`. Not a test: CI does not run it.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
APPS = os.path.join(HERE, 'apps')


def free_port():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def start_server(system, port, workers):
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [ROOT, APPS] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                        if p])
    if system == 'uhttp-workers':
        command = [sys.executable, os.path.join(APPS, 'ws_uhttp_workers_app.py'),
                   str(port), str(workers)]
    else:
        command = [sys.executable, '-m', 'uvicorn', 'ws_asgi_app:app',
                   '--host', '127.0.0.1', '--port', str(port), '--workers',
                   str(workers), '--ws', 'websockets', '--log-level', 'warning',
                   '--no-access-log', '--backlog', '4096']
    process = subprocess.Popen(command, env=env, cwd=APPS,
                               stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=1):
                time.sleep(0.5)  # the workers get ready
                return process
        except OSError:
            time.sleep(0.1)
    stop_server(process)
    raise RuntimeError(f"{system} did not start")


def stop_server(process):
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)


# -- clients (in their own processes) -----------------------------------------------

def echo_client(port, connections, duration, out):
    from websockets.asyncio.client import connect

    async def one(latencies, stop_at):
        async with connect(f'ws://127.0.0.1:{port}/ws/echo', compression=None,
                           ping_interval=None, open_timeout=30) as ws:
            message = 'x' * 32
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                await ws.send(message)
                await asyncio.wait_for(ws.recv(), 10)
                latencies.append(time.perf_counter() - started)

    async def main():
        latencies = []
        stop_at = time.monotonic() + duration
        started = time.monotonic()
        results = await asyncio.gather(
            *(one(latencies, stop_at) for _ in range(connections)),
            return_exceptions=True)
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        out.put({'latencies': latencies, 'errors': errors,
                 'elapsed': time.monotonic() - started})
    raise_fd_limit()
    asyncio.run(main())


def idle_client(port, count, ready, done):
    from websockets.asyncio.client import connect
    raise_fd_limit()

    async def main():
        sockets = []
        for start in range(0, count, 200):
            sockets += await asyncio.gather(*(
                connect(f'ws://127.0.0.1:{port}/ws/echo', compression=None,
                        open_timeout=60)
                for _ in range(min(200, count - start))))
        ready.put(len(sockets))
        while done.empty():
            await asyncio.sleep(0.2)
        for ws in sockets:
            ws.transport.abort()
    asyncio.run(main())


def run_echo(port, args):
    out = multiprocessing.Queue()
    per = [args.connections // args.client_procs] * args.client_procs
    per[0] += args.connections - sum(per)
    procs = [multiprocessing.Process(target=echo_client,
                                     args=(port, n, args.duration, out))
             for n in per]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=args.duration + 60) for _ in procs]
    for proc in procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    latencies = sorted(x for r in results for x in r['latencies'])
    elapsed = max(r['elapsed'] for r in results)
    errors = [e for r in results for e in r['errors']]
    if not latencies:
        return {'errors': errors}
    return {
        'p50_ms': round(1000 * latencies[len(latencies) // 2], 3),
        'p99_ms': round(1000 * latencies[int(len(latencies) * 0.99)], 3),
        'messages_per_s': round(len(latencies) / elapsed),
        'errors': errors[:5], 'error_count': len(errors)}


def wrk(port, duration):
    text = subprocess.run(
        ['wrk', '-t', '2', '-c', '50', '-d', f'{duration}s',
         f'http://127.0.0.1:{port}/api/hello'],
        capture_output=True, text=True, timeout=duration + 60).stdout
    found = re.search(r'Requests/sec:\s+([\d.]+)', text)
    return float(found.group(1)) if found else 0.0


def run_idle(port, args):
    wrk(port, 1)  # warm-up, discarded
    before = wrk(port, args.duration)
    ready, done = multiprocessing.Queue(), multiprocessing.Queue()
    holder = multiprocessing.Process(target=idle_client,
                                     args=(port, args.idle, ready, done))
    holder.start()
    try:
        opened = ready.get(timeout=180)
        time.sleep(1)
        during = wrk(port, args.duration)
    finally:
        done.put(True)
        holder.join(20)
        if holder.is_alive():
            holder.kill()
    return {'http_rps_without': round(before), 'http_rps_with_idle': round(during),
            'idle_open': opened,
            'cost_percent': round(100 * (1 - during / before), 1) if before else None}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--systems', default='uhttp-workers,uvicorn')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--connections', type=int, default=100)
    parser.add_argument('--client-procs', type=int, default=2)
    parser.add_argument('--duration', type=int, default=5)
    parser.add_argument('--idle', type=int, default=5000)
    parser.add_argument('--only', default='echo,idle')
    args = parser.parse_args()
    raise_fd_limit()
    results = {'load_before': os.getloadavg(), 'args': vars(args)}
    for system in args.systems.split(','):
        if system == 'uvicorn':
            try:
                import uvicorn  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
            except ImportError:
                results[system] = 'skipped: uvicorn not installed'
                continue
        for scenario in args.only.split(','):
            port = free_port()
            server = start_server(system, port, args.workers)
            try:
                runner = run_echo if scenario == 'echo' else run_idle
                value = runner(port, args)
            finally:
                stop_server(server)
            results.setdefault(system, {})[scenario] = value
            print(system, scenario, json.dumps(value), flush=True)
    results['load_after'] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == '__main__':
    main()
