"""The scrape's format from any Accept header, and the dashboard page's
events path inside its <script> (pure: no server)."""

import json
import re

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from uhttp.workers import dashboard
from uhttp.workers import exposition


def exposition_of_one_counter():
    shown = exposition.Exposition.__new__(exposition.Exposition)
    shown.registry = CollectorRegistry(auto_describe=False)
    PromCounter('hits', 'Hits', registry=shown.registry).inc()
    return shown


@pytest.mark.parametrize('accept', [
    'application/openmetrics-text; version="1.0.0"',
    'application/openmetrics-text; version=1.x',
    'text/plain; version=1.0.0x',
    'text/plain;q=0.1,application/openmetrics-text;version="1"',
])
def test_a_header_prometheus_client_cannot_read_gets_the_text_format(
        accept):
    # its choose_encoder() raised TypeError: every such scrape was a 500
    body, content_type = exposition_of_one_counter().render(accept)
    assert content_type.startswith('text/plain; version=0.0.4')
    assert b'hits_total 1.0' in body


def test_a_header_it_reads_still_chooses():
    body, content_type = exposition_of_one_counter().render(
        'application/openmetrics-text; version=1.0.0')
    assert content_type.startswith('application/openmetrics-text')
    assert body.endswith(b'# EOF\n')


@pytest.mark.parametrize('path', [
    '/d</script><script>alert(1)</script>', '/a<!--b', '/x&amp;y>z',
    '/\u2028\\"'])
def test_the_events_path_cannot_end_the_script(path):
    page = dashboard.page(path + '/events').decode('utf-8')
    script = page.split('<script>', 1)[1]
    assert script.count('</script>') == 1 and '<!--' not in script
    literal = re.search(r'const EVENTS = (.*);\n', script).group(1)
    assert not set('<>&') & set(literal)
    assert json.loads(literal) == path + '/events'
