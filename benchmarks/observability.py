#!/usr/bin/env python3
"""What metrics and the access log cost: GET /json on 50 keep-alive
connections (the json50 scenario of run.py) against the same uhttp-workers
app with metrics off and on, the access log off and on, in one run.

    python benchmarks/observability.py               # 5 rounds of 5 s
    python benchmarks/observability.py --rounds 3 --duration 3

The variants take turns within each round (the first one rotates), every
one on a fresh server; the medians over the rounds and their ratios
against 'off' are printed and written to benchmarks/results/. With the
access log on, the server writes one line per request to its log file, as
a production server would to its log. Needs wrk (apt-get install wrk).
"""

import argparse
import datetime
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import run  # noqa: E402  (the runner's server, wrk and CPU helpers)

VARIANTS = {
    'off': [],
    'metrics': ['--metrics'],
    'access_log': ['--access-log'],
    'both': ['--metrics', '--access-log'],
}


class Variant(run.UhttpWorkers):
    def __init__(self, name, flags):
        self.name = f'uhttp-workers[{name}]'
        self.flags = flags

    def command(self, port, variant, args):
        return super().command(port, variant, args) + self.flags


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--duration', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--connections', type=int, default=50)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--only', default=','.join(VARIANTS))
    parser.add_argument('--output-dir', default=run.RESULTS)
    args = parser.parse_args()
    args.wrk = run.shutil.which('wrk')
    if not args.wrk:
        sys.exit("wrk is not installed (apt-get install wrk)")
    args.wrk_timeout = 10
    args.c5000_threads = 4
    args.uw_max_pending = 10000
    args.uw_max_waiting_clients = 16000
    names = [name for name in args.only.split(',') if name]
    os.makedirs(args.output_dir, exist_ok=True)
    stamp = datetime.datetime.now().strftime('%Y%m%d-%H%M%S')
    log_dir = os.path.join(args.output_dir, f'observability-logs-{stamp}')
    os.makedirs(log_dir, exist_ok=True)
    results = {name: [] for name in names}
    loads = []
    for round_no in range(args.rounds):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for name in order:
            system = Variant(name, VARIANTS[name])
            server = run.Server(system, 'main', args, os.path.join(
                log_dir, f'{name}-{round_no}.log'))
            try:
                server.start()
                loads.append(os.getloadavg()[0])
                report = run.wrk_measure(args, server, run.common.PATH_JSON,
                                         args.connections)
            finally:
                server.stop()
            results[name].append({key: report.get(key) for key in (
                'rps', 'p50_ms', 'p99_ms', 'cpu_main_us', 'errors', 'non2xx')})
            print(f"round {round_no + 1} {name:<10} {report.get('rps') or 0:>10.0f} "
                  f"req/s  p99 {report.get('p99_ms')} ms  "
                  f"main CPU {report.get('cpu_main_us') or 0:.1f} us/req", flush=True)

    def median(name, key):
        values = [r[key] for r in results[name] if r.get(key) is not None]
        return statistics.median(values) if values else None

    base = median('off', 'rps') if 'off' in results else None
    lines = [f"# Observability cost, json50 ({args.connections} connections), "
             f"{args.rounds} rounds of {args.duration} s, {stamp}", '',
             f"load average at each server start: min {min(loads):.2f}, "
             f"max {max(loads):.2f} (2 cores)", '',
             '| variant | req/s (median) | vs off | p50 ms | p99 ms | '
             'main CPU µs/req |', '| --- | ---: | ---: | ---: | ---: | ---: |']
    for name in names:
        rps = median(name, 'rps')
        ratio = f'{rps / base:.3f}' if rps and base else '-'
        lines.append(f"| {name} | {rps or 0:.0f} | {ratio} | "
                     f"{median(name, 'p50_ms')} | {median(name, 'p99_ms')} | "
                     f"{median(name, 'cpu_main_us') or 0:.1f} |")
    text = '\n'.join(lines) + '\n'
    print('\n' + text)
    with open(os.path.join(args.output_dir, f'observability-{stamp}.md'), 'w') as out:
        out.write(text)
    with open(os.path.join(args.output_dir, f'observability-{stamp}.json'), 'w') as out:
        json.dump({'args': {k: v for k, v in vars(args).items()},
                   'results': results, 'loads': loads}, out, indent=1)


if __name__ == '__main__':
    main()
