"""/metrics of a real dispatcher and worker (tests/apps/metrics_values.py)
after values no exposition can show, under Accept headers
prometheus_client cannot read, and the dashboard page of a dashboard_path
holding '</script>'."""

import json
import re
import urllib.parse

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families)
from prometheus_client.parser import text_string_to_metric_families

OPENMETRICS = 'application/openmetrics-text; version=1.0.0'


def samples(text, parse=text_string_to_metric_families):
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in parse(text) for sample in family.samples}


def scraped(server, name, accept=None, **labels):
    """The sample `name` (with pool=ValuesWorker and `labels`), or None."""
    reply = server.get('/metrics', headers={'Accept': accept} if accept
                       else None)
    assert reply.status == 200, reply
    labels = dict(labels, pool='ValuesWorker')
    return samples(reply.text).get((name, tuple(sorted(labels.items()))))


def record(server, metric, value):
    reply = server.get(f'/api/{metric}/{value}')
    assert reply.status == 200, reply
    return reply.json


def test_values_out_of_range_are_refused_and_every_scrape_goes_on(
        app_server):
    server = app_server('metrics_values')
    assert record(server, 'counter', 'one') == {'ok': True}
    server.wait_until(lambda: scraped(server, 'bytes_total') == 1.0,
                      timeout=10, what='the first count')
    # 10**400 made every later scrape a 500 (OverflowError), until restart
    for metric, value in [('counter', 'big'), ('counter', 'inf'),
                          ('counter', 'nan'), ('counter', 'negone'),
                          ('gauge', 'big'), ('gauge_inc', 'inf'),
                          ('gauge_dec', 'ninf'), ('gauge', 'nan'),
                          ('histogram', 'inf'), ('histogram', 'ninf'),
                          ('histogram', 'nan'), ('histogram', 'big'),
                          ('histogram', 'neg')]:
        refused = record(server, metric, value)['refused']
        assert 'takes a finite' in refused, (metric, value, refused)
    # what is taken: a sum that overflows is +Inf (a valid _sum), and a
    # histogram with a negative bucket takes negative values (no _sum)
    for metric, value in [('histogram', 'huge'), ('histogram', 'huge'),
                          ('histogram', 'half'), ('deltas', 'ntwo'),
                          ('gauge', 'negone'), ('counter', 'half')]:
        assert record(server, metric, value) == {'ok': True}, (metric, value)
    server.wait_until(lambda: scraped(server, 'bytes_total') == 1.5,
                      timeout=10, what='the last count')
    reply = server.get('/metrics')
    text = samples(reply.text)
    pool = ('pool', 'ValuesWorker')
    assert text[('lat_count', (pool,))] == 3
    assert text[('lat_sum', (pool,))] == float('inf')
    assert text[('delta_bucket', (('le', '-1.0'), pool))] == 1
    assert ('delta_sum', (pool,)) not in text
    assert text[('depth', (pool, ('slot', '0')))] == -1
    # both formats parse with prometheus_client's own (strict) parsers
    reply = server.get('/metrics', headers={'Accept': OPENMETRICS})
    assert reply.status == 200 and reply.headers['content-type'].startswith(
        'application/openmetrics-text')
    assert samples(reply.text, openmetrics_families)[
        ('bytes_total', (pool,))] == 1.5
    assert ' ERROR ' not in server.log(), server.log()


def test_an_accept_header_prometheus_client_cannot_read(app_server):
    server = app_server('metrics_values')
    for accept in ('application/openmetrics-text; version="1.0.0"',
                   'text/plain; version=1.0.0x'):
        reply = server.get('/metrics', headers={'Accept': accept})
        assert reply.status == 200, (accept, reply)
        assert reply.headers['content-type'].startswith(
            'text/plain; version=0.0.4')
        assert list(text_string_to_metric_families(reply.text))
    server.wait_log(r'access: GET /metrics 200 \d+', count=2, timeout=10)
    assert ' ERROR ' not in server.log(), server.log()


def test_a_dashboard_path_holding_a_script_end(app_server):
    path = '/d</script><script>alert(1)</script>'
    server = app_server('metrics_values',
                        env={'METRICS_DASHBOARD_PATH': path})
    reply = server.get(urllib.parse.quote(path))
    assert reply.status == 200, reply
    script = reply.text.split('<script>', 1)[1]
    assert script.count('</script>') == 1
    literal = re.search(r'const EVENTS = (.*);\n', script).group(1)
    assert json.loads(literal) == path + '/events'
    # the page's events are where it says they are
    events = server.connection(timeout=10)
    try:
        events.request('GET', urllib.parse.quote(path + '/events'))
        answer = events.getresponse()
        assert answer.status == 200
        assert answer.getheader('content-type') == 'text/event-stream'
        assert answer.readline() == b'event: status\n'
    finally:
        events.close()
