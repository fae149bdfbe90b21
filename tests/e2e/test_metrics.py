"""/metrics scraped with prometheus_client's own parser from a real
dispatcher and real workers: counts against the requests sent, under
load, through a worker's death, timeouts and refusals; the access log;
the dashboard's data and events."""

import concurrent.futures as _futures
import json
import os
import signal
import socket
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

import uhttp.workers as workers
from uhttp.workers.testing import TestServer

P = 'uhttp_workers_'


class Jobs(workers.Worker):
    @workers.api('/api/item/{id:int}', 'GET')
    def item(self, request):
        self.metrics['jobs_total'].inc(kind='item')
        self.metrics['job_seconds'].observe(0.2)
        self.metrics['cache_items'].set(request.path_params['id'])
        return {'id': request.path_params['id']}

    @workers.api('/api/slow', 'GET')
    def slow(self, request):
        time.sleep(float(request.query.get('s', '2')) if request.query else 2)
        return {'slow': True}

    @workers.api('/api/batch/{start:int}', 'GET')
    def batch(self, request):
        # label values taken from the request: the mistake the limit is for
        start = request.path_params['start']
        for number in range(start, start + 100):
            self.metrics['jobs_total'].inc(kind=f'user-{number}')
        return {'counted': 100}

    @workers.api('/api/pid', 'GET')
    def get_pid(self, request):
        return {'pid': os.getpid()}

    @workers.api('/api/events', 'GET')
    def events(self, request):
        request.response_stream()
        request.send_event(data={'n': 1})
        request.response_stream_end()
        return workers.DEFERRED


class App(workers.Dispatcher):
    @workers.sync('/health')
    def health(self, client, path_params):
        client.respond({'ok': True})

    def do_check(self, client):
        if client.headers.get('x-deny'):
            client.respond({'error': 'unauthorized'}, status=401)
            raise workers.RejectRequest()


def jobs_pool(**kwargs):
    kwargs.setdefault('num_workers', 2)
    return workers.WorkerPool(Jobs, routes=['/api/**'], metrics=[
        workers.Counter('jobs_total', 'Jobs done', labels=['kind']),
        workers.Histogram('job_seconds', 'Job time', buckets=(0.1, 1.0)),
        workers.Gauge('cache_items', 'Items cached')], **kwargs)


def scrape(server, accept=None):
    headers = {'Accept': accept} if accept else None
    reply = server.get('/metrics', headers=headers)
    assert reply.status == 200, reply
    return reply, list(text_string_to_metric_families(reply.text))


def value(families, name, **labels):
    """The sample `name` with exactly these labels (0 when absent)."""
    for family in families:
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0


def total(families, name, **labels):
    """Sum of the samples `name` whose labels include these."""
    found = 0
    for family in families:
        for sample in family.samples:
            if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()):
                found += sample.value
    return found


def wait_for(check, timeout=10.0, what='the condition'):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def server():
    with TestServer(App, [jobs_pool()], metrics_path='/metrics',
                    dashboard_path='/_dashboard', access_log=True) as running:
        yield running


def test_counts_match_the_requests_sent_under_load(server):
    sent = 400

    def one(index):
        return server.get(f'/api/item/{index % 50}').status

    with _futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(one, index) for index in range(sent)]
        # scrapes during the load parse too
        for _ in range(5):
            scrape(server)
        statuses = [future.result(timeout=30) for future in futures]
    assert statuses == [200] * sent
    assert server.get('/api/none').status == 404
    assert server.get('/nothing').status == 404
    assert server.get('/health').status == 200
    assert server.get('/api/item/1', headers={'x-deny': '1'}).status == 401
    _, families = scrape(server)
    route = '/api/item/{id:int}'
    assert value(families, P + 'requests_total', pool='Jobs', route=route,
                 method='GET', status='200') == sent
    # (and the 401 below)
    assert value(families, P + 'request_duration_seconds_count', pool='Jobs',
                 route=route) == sent + 1
    assert value(families, P + 'request_duration_seconds_bucket', pool='Jobs',
                 route=route, le='+Inf') == sent + 1
    assert value(families, P + 'requests_total', pool='Jobs', route='',
                 method='GET', status='404') == 1
    assert value(families, P + 'requests_total', pool='', route='',
                 method='GET', status='404') == 1
    assert value(families, P + 'requests_total', pool='', route='/health',
                 method='GET', status='200') == 1
    # the dispatcher's do_check refused it: counted under its route too
    assert value(families, P + 'requests_total', pool='Jobs', route=route,
                 method='GET', status='401') == 1
    assert value(families, P + 'rejected_total', pool='Jobs',
                 reason='check') == 1
    assert value(families, P + 'queue_wait_seconds_count', pool='Jobs') == sent + 1
    assert value(families, P + 'workers', pool='Jobs', state='ready') + value(
        families, P + 'workers', pool='Jobs', state='busy') == 2
    assert value(families, P + 'queue_depth', pool='Jobs') == 0
    assert value(families, P + 'requests_in_flight', pool='Jobs') == 0
    assert value(families, P + 'connections_open') >= 1
    assert value(families, P + 'worker_rss_bytes', pool='Jobs', slot='0') > 0
    assert value(families, 'process_resident_memory_bytes') > 0
    # user metrics arrive batched: wait for the last deltas
    wait_for(lambda: value(scrape(server)[1], 'jobs_total', pool='Jobs',
                           kind='item') == sent, what='jobs_total == sent')
    _, families = scrape(server)
    assert value(families, 'job_seconds_count', pool='Jobs') == sent
    assert value(families, 'job_seconds_bucket', pool='Jobs', le='1.0') == sent
    assert value(families, 'job_seconds_bucket', pool='Jobs', le='0.1') == 0
    assert 0 <= total(families, 'cache_items', pool='Jobs') <= 98
    # every request that reached the dispatcher's intake is counted once:
    # ours, and the scrapes before the last one
    counted = total(families, P + 'requests_total')
    scrapes = value(families, P + 'requests_total', pool='', route='/metrics',
                    method='GET', status='200')
    assert counted == sent + 4 + scrapes
    server.assert_no_errors()


def test_openmetrics_when_the_scraper_asks(server):
    reply, families = scrape(server, 'application/openmetrics-text; '
                                     'version=1.0.0')
    assert reply.headers['content-type'].startswith(
        'application/openmetrics-text')
    assert reply.text.rstrip().endswith('# EOF')
    from prometheus_client.openmetrics.parser import (
        text_string_to_metric_families as openmetrics)
    names = {family.name for family in openmetrics(reply.text)}
    assert P + 'requests' in names and 'jobs' in names


@pytest.mark.parametrize('accept, openmetrics', [
    ('text/plain;version=0.0.4;q=0.5,application/openmetrics-text;'
     'version=1.0.0;q=0.1', False),
    ('application/openmetrics-text;version=1.0.0;q=0', False),
    ('text/plain;q=0.2,application/openmetrics-text;version=1.0.0;q=0.9',
     True),
    # what Prometheus sends when it prefers OpenMetrics
    ('application/openmetrics-text;version=1.0.0;q=0.5,'
     'application/openmetrics-text;version=0.0.1;q=0.4,'
     'text/plain;version=0.0.4;q=0.3,*/*;q=0.2', True),
])
def test_the_scrape_format_follows_the_accept_weights(server, accept,
                                                      openmetrics):
    reply = server.get('/metrics', headers={'Accept': accept})
    assert reply.status == 200
    assert reply.headers['content-type'].startswith(
        'application/openmetrics-text' if openmetrics else 'text/plain'), (
            accept, reply.headers['content-type'])


def test_a_killed_worker_counts_as_died_and_user_counters_keep_their_total(
        server):
    for index in range(20):
        assert server.get(f'/api/item/{index}').status == 200
    wait_for(lambda: value(scrape(server)[1], 'jobs_total', pool='Jobs',
                           kind='item') == 20, what='the deltas')
    victim = server.status()['pools'][0]['workers'][0]['pid']
    os.kill(victim, signal.SIGKILL)

    def restarted():
        worker = server.status()['pools'][0]['workers'][0]
        return worker['ready'] and worker['pid'] != victim
    wait_for(restarted, what='the restart')
    _, families = scrape(server)
    assert value(families, P + 'worker_restarts_total', pool='Jobs',
                 reason='died') == 1
    assert value(families, 'jobs_total', pool='Jobs', kind='item') == 20
    for index in range(10):
        assert server.get(f'/api/item/{index}').status == 200
    wait_for(lambda: value(scrape(server)[1], 'jobs_total', pool='Jobs',
                           kind='item') == 30, what='the total to go on')
    # the slot's CPU counter did not go back with the new process
    assert value(scrape(server)[1], P + 'worker_cpu_seconds_total',
                 pool='Jobs', slot='0') >= 0


def test_timeouts_and_max_pending_refusals():
    # the refusal comes once the full pool made no room for half a second
    # (backpressure), before the slow request's 1.5 s timeout frees it
    pool = jobs_pool(num_workers=1, timeout=1.5)
    with TestServer(App, [pool], metrics_path='/metrics', max_pending=1,
                    ) as server:
        with _futures.ThreadPoolExecutor(2) as threads:
            slow = threads.submit(server.get, '/api/slow?s=3')
            time.sleep(0.2)
            refused = server.get('/api/item/1')
            assert slow.result(timeout=10).status == 504
        assert refused.status == 503
        _, families = scrape(server)
        assert value(families, P + 'timeouts_total', pool='Jobs') == 1
        # no answer carried the route: the dispatcher matched the pattern
        assert value(families, P + 'requests_total', pool='Jobs',
                     route='/api/slow', method='GET', status='504') == 1
        assert value(families, P + 'rejected_total', pool='Jobs',
                     reason='max_pending') == 1
        assert value(families, P + 'requests_total', pool='Jobs', route='',
                     method='GET', status='503') == 1


def test_streams_count_with_their_route(server):
    events = list(server.sse('/api/events'))
    assert [json.loads(event.data) for event in events] == [{'n': 1}]
    _, families = wait_for(
        lambda: (lambda r: r if value(r[1], P + 'requests_total', pool='Jobs',
                                      route='/api/events', method='GET',
                                      status='200') == 1 else None)(
            scrape(server)), what='the stream to be counted')
    assert value(families, P + 'streams_open', pool='Jobs') == 0


def test_label_sets_of_a_family_stop_at_the_limit_with_one_warning(server):
    for start in range(0, 1200, 100):
        assert server.get(f'/api/batch/{start}').status == 200

    def kept():
        _, families = scrape(server)
        found = [sample for family in families for sample in family.samples
                 if sample.name == 'jobs_total'
                 and sample.labels.get('kind', '').startswith('user-')]
        return found if len(found) >= 1000 else None
    found = wait_for(kept, what='1,000 label sets scraped')
    assert len(found) == 1000
    assert all(sample.value == 1 for sample in found)
    warnings = wait_for(lambda: [
        record.message for record in list(server.logs)
        if "metric 'jobs_total' has 1000 label sets" in record.message],
        what='the warning')
    time.sleep(0.5)   # (the later drops are not told again)
    assert len([record for record in list(server.logs)
                if 'label sets' in record.message]) == 1
    assert warnings[0].startswith('pool Jobs: ')
    # a new label set past the limit is dropped; the request is not hurt
    assert server.get('/api/item/3').status == 200
    families = wait_for(lambda: (lambda got: got if value(
        got, 'job_seconds_count', pool='Jobs') == 1 else None)(
            scrape(server)[1]), what="the item's observation")
    assert value(families, 'jobs_total', pool='Jobs', kind='item') == 0


def test_access_log_one_line_per_request(server):
    assert server.get('/api/item/7').status == 200
    assert server.get('/health').status == 200
    assert server.get('/nothing').status == 404
    assert server.get('/api/item/7', headers={'x-deny': '1'}).status == 401
    lines = wait_for(lambda: (lambda found: found if len(found) >= 4 else None)(
        [record.message for record in list(server.logs)
         if record.name == 'access']), what='four access lines')
    assert len(lines) == 4
    assert lines[0].startswith('127.0.0.1 - - [')
    assert '"GET /api/item/7" 200 9 ' in lines[0]
    assert lines[0].endswith(('Jobs[0]', 'Jobs[1]'))
    assert '"GET /health" 200' in lines[1] and lines[1].endswith('-[-]')
    assert '"GET /nothing" 404' in lines[2]
    assert '"GET /api/item/7" 401' in lines[3]


def test_access_log_gives_the_size_of_every_body_it_knows(tmp_path):
    (tmp_path / 'hello.txt').write_bytes(b'hello, world\n')
    with TestServer(App, [jobs_pool(num_workers=1, timeout=0.5)],
                    static_routes={'/static/': str(tmp_path)},
                    access_log='{method} {path} {status} {bytes}') as server:
        assert server.get('/static/hello.txt').status == 200
        assert server.request('HEAD', '/static/hello.txt').status == 200
        assert server.get('/health').status == 200          # {"ok": true}
        # busy a little past its 504, so the next request keeps its time
        assert server.get('/api/slow?s=0.6').status == 504
        assert server.get('/api/events').status == 200
        assert server.get('/nothing').status == 404          # our own
        assert server.get('/api/item/1', headers={'x-deny': '1'}
                          ).status == 401                    # do_check's
        lines = wait_for(lambda: (lambda found: found if len(found) >= 7
                                  else None)(
            [record.message for record in list(server.logs)
             if record.name == 'access']), what='seven access lines')
    timed_out = len(json.dumps({'error': 'Gateway Timeout'}))
    not_found = len(json.dumps({'error': 'Not Found'}))
    denied = len(json.dumps({'error': 'unauthorized'}))
    assert lines == ['GET /static/hello.txt 200 13',
                     'HEAD /static/hello.txt 200 0',
                     'GET /health 200 12',
                     f'GET /api/slow 504 {timed_out}',
                     'GET /api/events 200 -',
                     f'GET /nothing 404 {not_found}',
                     f'GET /api/item/1 401 {denied}'], lines



def test_access_log_gives_the_query_the_client_sent(tmp_path):
    # the default line is the request as sent, query string included, as
    # servers' common log formats have it; {path} alone stays the path
    (tmp_path / 'hello.txt').write_bytes(b'hello\n')
    with TestServer(App, [jobs_pool(num_workers=1)],
                    static_routes={'/static/': str(tmp_path)},
                    access_log=True) as server:
        assert server.get('/api/item/7?page=2&q=caf%C3%A9').status == 200
        assert server.get('/health?probe=1').status == 200
        assert server.get('/static/hello.txt?v=3').status == 200
        assert server.get('/nothing?x').status == 404
        assert server.get('/api/item/7?', headers={'x-deny': '1'}
                          ).status == 401
        assert server.get('/api/item/8').status == 200
        lines = wait_for(lambda: (lambda found: found if len(found) >= 6
                                  else None)(
            [record.message for record in list(server.logs)
             if record.name == 'access']), what='six access lines')
    assert '"GET /api/item/7?page=2&q=caf%C3%A9" 200 ' in lines[0], lines
    assert '"GET /health?probe=1" 200 ' in lines[1], lines
    assert '"GET /static/hello.txt?v=3" 200 ' in lines[2], lines
    assert '"GET /nothing?x" 404 ' in lines[3], lines
    assert '"GET /api/item/7?" 401 ' in lines[4], lines
    assert '"GET /api/item/8" 200 ' in lines[5], lines


def test_access_log_query_field_of_pooled_requests_on_one_connection():
    # each pooled request keeps its own query, though the connection has
    # gone on to the next request when the answer comes
    with TestServer(App, [jobs_pool(num_workers=2)],
                    access_log='{path} {query} {status}') as server:
        with socket.create_connection(('127.0.0.1', server.port),
                                      timeout=10) as sock:
            sock.sendall(b'GET /api/slow?s=0.5 HTTP/1.1\r\nHost: h\r\n\r\n'
                         b'GET /api/item/4?n=4 HTTP/1.1\r\nHost: h\r\n\r\n')
            received = b''
            while received.count(b'HTTP/1.1 200') < 2:
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
        lines = wait_for(lambda: (lambda found: found if len(found) >= 2
                                  else None)(
            [record.message for record in list(server.logs)
             if record.name == 'access']), what='two access lines')
    assert sorted(lines) == ['/api/item/4 n=4 200', '/api/slow s=0.5 200']


class Parked(workers.Worker):
    @workers.api('/api/parked', 'GET')
    def parked(self, request):
        os._exit(3)  # permanent_failure_exitcode: the slot is parked


def test_access_log_gives_the_size_of_an_admission_refusal():
    # a 503 of admission (degraded, no worker, the broker down) was logged
    # with "-" for its size, like a stream, though its body is known
    pool = workers.WorkerPool(Parked, num_workers=1, routes=['/api/parked'],
                              permanent_failure_exitcode=3)
    with TestServer(App, [pool], access_log='{method} {path} {status} '
                    '{bytes}') as server:
        assert server.get('/api/parked').status == 500  # and it is parked
        wait_for(lambda: server.status()['pools'][0]['parked_count'] == 1,
                 what='the slot to be parked')
        reply = server.get('/api/parked')
        assert reply.status == 503, reply
        assert server.request('HEAD', '/api/parked').status == 503
        lines = wait_for(lambda: (lambda found: found if any(
            line.startswith('HEAD') for line in found) else None)(
            [record.message for record in list(server.logs)
             if record.name == 'access']), what='the HEAD access line')
    assert lines[-2:] == [f'GET /api/parked 503 {len(reply.content)}',
                          'HEAD /api/parked 503 0'], lines

def exchange(port, data, timeout=10):
    """Send raw bytes; everything read until the server closes."""
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b''
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:  # closed with bytes unread
                return received
            if not chunk:
                return received
            received += chunk


def test_refusals_before_routing_are_counted_and_logged():
    """What the HTTP layer refuses before a request exists (a malformed
    head, a body over the limit, a head too large, a request that never
    completes) is counted and has its access log line."""
    with TestServer(App, [jobs_pool(num_workers=1)], metrics_path='/metrics',
                    access_log=True, max_content_length=1000,
                    max_headers_length=1024, request_timeout=1) as server:
        port = server.port
        replies = [
            exchange(port, b'GET /x HTTP/1.1\r\nBad Header\r\n\r\n'),
            exchange(port, b'POST /api/item/1 HTTP/1.1\r\nHost: h\r\n'
                     b'Content-Length: 5000\r\n\r\n'),
            exchange(port, b'GET / HTTP/1.1\r\nHost: h\r\nX-Items: '
                     + b'a' * 1100 + b'\r\n\r\n'),
            exchange(port, b'GET /api/item/1 HTTP/1.1\r\n'),  # never ends
        ]
        for reply, status in zip(replies, (b'400', b'413', b'431', b'408')):
            assert reply.startswith(b'HTTP/1.1 ' + status + b' '), reply
        sizes = [len(reply.partition(b'\r\n\r\n')[2]) for reply in replies]
        assert all(sizes), replies
        assert server.get('/api/item/1').status == 200  # still serving
        _, families = scrape(server)
        for method, status in (('', '400'), ('POST', '413'), ('', '431'),
                               ('', '408')):
            assert value(families, P + 'requests_total', pool='', route='',
                         method=method, status=status) == 1, (method, status)
        lines = wait_for(lambda: (lambda found: found if len(found) >= 5
                                  else None)(
            [record.message for record in list(server.logs)
             if record.name == 'access']), what='five access lines')
        # each with the size of the body it was sent, and the request's
        # method and target as sent though its head could not be parsed
        assert f'"GET /x" 400 {sizes[0]} ' in lines[0]
        assert f'"POST /api/item/1" 413 {sizes[1]} ' in lines[1]
        assert f'"GET /" 431 {sizes[2]} ' in lines[2]
        assert f'"GET /api/item/1" 408 {sizes[3]} ' in lines[3]
        assert '"GET /api/item/1" 200 ' in lines[4]


def test_refused_heads_are_logged_with_what_was_sent():
    """A head refused unparsed still names its request in the access log
    (method and target as sent, made safe for the log); junk gives its
    first word, a bare line gives dashes."""
    with TestServer(App, [jobs_pool(num_workers=1)],
                    access_log='{method} {path} {status}') as server:
        for raw in (b'GET /api/item/%zz HTTP/1.1\r\nHost: h\r\n\r\n',
                    b'GET /api/item/1?q=%zz HTTP/1.1\r\nHost: h\r\n\r\n',
                    b'GET /a"b\x1b HTTP/1.1\r\nHost: h\r\n\r\n',
                    b'\x16\x03\x01\x02\x00\x01\r\n\r\n',
                    b'GET ' + b'/x' * 400 + b' HTTP/1.1\r\nBad\r\n\r\n',
                    b'\r\n\r\n'):
            assert exchange(server.port, raw).startswith(b'HTTP/1.1 400 ')
        lines = wait_for(lambda: (lambda found: found if len(found) >= 6
                                  else None)(
            [record.message for record in list(server.logs)
             if record.name == 'access']), what='six access lines')
        assert lines[0] == 'GET /api/item/%zz 400'
        assert lines[1] == 'GET /api/item/1?q=%zz 400'
        assert lines[2] == 'GET /a\\"b\\x1b 400'
        assert lines[3] == '\\x16\\x03\\x01\\x02\\x00\\x01 - 400'
        assert lines[4].startswith('GET /x/x') and len(lines[4]) < 530
        assert lines[5] == '- - 400'
        assert server.get('/api/item/1').status == 200


def test_access_log_format():
    with TestServer(App, [jobs_pool(num_workers=1)],
                    access_log='{method} {path} {status} {route} {pool} '
                               '{slot}') as server:
        assert server.get('/api/item/2').status == 200
        lines = wait_for(lambda: [record.message for record in
                                  list(server.logs)
                                  if record.name == 'access'] or None)
        assert lines == ['GET /api/item/2 200 /api/item/{id:int} Jobs 0']


def test_access_log_gives_0_bytes_for_head_of_the_dispatchers_own_paths():
    with TestServer(App, [jobs_pool(num_workers=1)], metrics_path='/metrics',
                    dashboard_path='/_dashboard',
                    access_log='{method} {path} {status} {bytes}') as server:
        for path in ('/metrics', '/_dashboard', '/_dashboard/data'):
            answer = server.request('HEAD', path)
            assert answer.status == 200 and answer.content == b''
        assert server.request('HEAD', '/health').status == 200
        lines = wait_for(lambda: (lambda found: found if len(found) == 4
                                  else None)([
            record.message for record in list(server.logs)
            if record.name == 'access']))
        assert lines == ['HEAD /metrics 200 0', 'HEAD /_dashboard 200 0',
                         'HEAD /_dashboard/data 200 0', 'HEAD /health 200 0']


def test_access_log_gives_the_forwarded_client_behind_a_trusted_proxy():
    # the address request.remote_address has, not the proxy's: the answer
    # resets the connection's headers before the line is written
    forwarded = {'X-Forwarded-For': '203.0.113.7'}
    with TestServer(App, [jobs_pool(num_workers=1)],
                    trusted_proxies=['127.0.0.1'],
                    access_log='{remote} {path} {status}') as server:
        assert server.get('/api/item/2', headers=forwarded).status == 200
        assert server.get('/health', headers=forwarded).status == 200
        assert server.get('/nowhere', headers=forwarded).status == 404
        assert server.get('/api/item/3', headers=dict(
            forwarded, **{'x-deny': '1'})).status == 401
        assert server.get('/api/item/4').status == 200   # no proxy header
        lines = wait_for(lambda: (lambda found: found if len(found) == 5
                                  else None)([
            record.message for record in list(server.logs)
            if record.name == 'access']))
        assert sorted(lines) == sorted([
            '203.0.113.7 /api/item/2 200', '203.0.113.7 /health 200',
            '203.0.113.7 /nowhere 404', '203.0.113.7 /api/item/3 401',
            '127.0.0.1 /api/item/4 200'])


def test_dashboard_page_data_and_events(server):
    page = server.get('/_dashboard')
    assert page.status == 200
    assert page.headers['content-type'].startswith('text/html')
    assert b'/_dashboard/events' in page.content
    # no external asset: nothing to load from elsewhere (the SVG namespace
    # is a name, not a fetch; the icon is an empty inline one)
    text = page.text.replace('http://www.w3.org/2000/svg', '').replace(
        '<link rel="icon" href="data:,">', '')
    assert 'http://' not in text and 'https://' not in text
    assert '<link' not in text and 'src=' not in text and '@import' not in text
    assert server.get('/api/item/1').status == 200
    data = server.get('/_dashboard/data').json()
    assert [pool['name'] for pool in data['pools']] == ['Jobs']
    assert [worker['slot'] for worker in data['pools'][0]['workers']] == [0, 1]
    stream = server.sse('/_dashboard/events', timeout=5)
    first = next(stream)
    assert first.event == 'status'
    assert json.loads(first.data)['pools'][0]['name'] == 'Jobs'
    second = next(stream)  # about a second later, from the loop's timer
    assert json.loads(second.data)['time'] > json.loads(first.data)['time']
    stream.close()


def test_endpoints_are_gated_by_do_check_sync():
    class Guarded(App):
        def do_check_sync(self, client):
            if client.headers.get('x-key') != 'k':
                client.respond({'error': 'no'}, status=403)
                raise workers.RejectRequest()

    with TestServer(Guarded, [jobs_pool(num_workers=1)],
                    metrics_path='/metrics',
                    dashboard_path='/_dashboard') as server:
        assert server.get('/metrics').status == 403
        assert server.get('/_dashboard').status == 403
        assert server.get('/_dashboard/events').status == 403
        assert server.get('/metrics', headers={'x-key': 'k'}).status == 200
        assert server.post('/metrics', headers={'x-key': 'k'}).status == 405


def test_a_stuck_worker_counts_as_stuck():
    pool = jobs_pool(num_workers=1, stuck_timeout=0.5, heartbeat_interval=0.1,
                     timeout=10)
    with TestServer(App, [pool], metrics_path='/metrics') as server:
        assert server.get('/api/slow?s=3', timeout=10).status == 500
        _, families = wait_for(
            lambda: (lambda r: r if value(r[1], P + 'worker_restarts_total',
                                          pool='Jobs', reason='stuck') == 1
                     else None)(scrape(server)), what='the stuck restart')
        assert value(families, P + 'worker_restarts_total', pool='Jobs',
                     reason='died') == 0
        assert value(families, P + 'requests_total', pool='Jobs',
                     route='/api/slow', method='GET', status='500') == 1
