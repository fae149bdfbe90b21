#!/usr/bin/env python3
"""The request-head parser (http/parse.py) beside httptools (llhttp, in C),
on the heads wrk and a browser send, in one process, alternating.

    python benchmarks/head_parsers.py [--number 200000]

httptools runs the way a sans-I/O head parser would use it: one parser per
connection fed the whole head, its callbacks collecting the URL and the
fields, then the field names lower-cased and values stripped into the same
dict parse_head() gives. That is less than parse_head() does (no strict
grammar check, no target decoding, no framing rules), so its time here is a
lower bound of what a C-parser option would cost per request.
"""

import argparse
import os
import statistics
import sys
import timeit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import uhttp.server as _server  # noqa: E402
from uhttp.workers.http import parse as _parse  # noqa: E402

HEADS = {
    'wrk': (b'GET /json HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n'),
    'browser': (
        b'GET /api/items?page=2&sort=name HTTP/1.1\r\n'
        b'Host: example.test\r\n'
        b'User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0\r\n'
        b'Accept: application/json, text/plain, */*\r\n'
        b'Accept-Language: en-US,en;q=0.5\r\n'
        b'Accept-Encoding: gzip, deflate, br\r\n'
        b'Referer: https://example.test/items\r\n'
        b'Cookie: session=4f1c2a9e8b7d6c5e; theme=dark\r\n'
        b'Connection: keep-alive\r\n\r\n'),
}


class _Collector:
    """httptools' callbacks, collecting one head."""

    __slots__ = ('url', 'fields', 'parser')

    def __init__(self, httptools):
        self.url = None
        self.fields = []
        self.parser = httptools.HttpRequestParser(self)

    def on_url(self, url):
        self.url = url

    def on_header(self, name, value):
        self.fields.append((name, value))


def httptools_head(collector, block):
    collector.fields = []
    collector.parser.feed_data(block)
    headers = {}
    for name, value in collector.fields:
        headers[name.decode('ascii').lower()] = value.decode('latin-1').strip()
    return (collector.parser.get_method().decode('ascii'),
            collector.url.decode('ascii'), collector.parser.get_http_version(),
            headers)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--number', type=int, default=200000)
    parser.add_argument('--repeat', type=int, default=5)
    args = parser.parse_args()
    try:
        import httptools
    except ImportError:
        sys.exit('httptools is not installed (pip install httptools)')
    print(f'httptools {httptools.__version__}, {args.number} heads x '
          f'{args.repeat} rounds, best round')
    print('| head | parse.parse_head() µs | httptools µs | httptools / ours |')
    print('|---|---:|---:|---:|')
    for name, block in HEADS.items():
        ours = _parse.parse_head(block, _server.parse_query)
        collector = _Collector(httptools)
        theirs = httptools_head(collector, block)
        assert theirs[3] == ours.headers, (theirs, ours.headers)
        times = {'ours': [], 'httptools': []}
        for _ in range(args.repeat):  # alternate, so both see the same noise
            times['ours'].append(timeit.timeit(
                lambda: _parse.parse_head(block, _server.parse_query),
                number=args.number))
            times['httptools'].append(timeit.timeit(
                lambda: httptools_head(collector, block), number=args.number))
        best = {key: min(value) / args.number * 1e6 for key, value in times.items()}
        spread = statistics.pstdev(times['ours']) / min(times['ours'])
        print(f"| {name} | {best['ours']:.2f} | {best['httptools']:.2f} | "
              f"{best['httptools'] / best['ours']:.2f} |"
              + (f' (ours spread {spread:.0%})' if spread > 0.1 else ''))


if __name__ == '__main__':
    main()
