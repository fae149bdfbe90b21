"""CR/LF from application code never reaches the wire (app
tests/apps/hard_split.py).

Each case makes a worker or a sync handler (or do_check) answer with CR
and/or LF inside a header name or value or a cookie name or value. The raw
reply must be one well-formed response, 500, without any injected header
line or body, and the dispatcher must log an ERROR for it.
"""
import re

import pytest

from hard_util import exchange, probe, request_bytes

APP = 'hard_split'
KINDS = ['crlf', 'lf', 'cr', 'crlfcrlf']
WORKER_WHERE = {
    'tuple': ['header-value', 'header-name', 'header-list'],
    'response': ['header-value', 'header-name', 'header-list', 'cookie-value',
                 'cookie-name'],
    'respond': ['header-value', 'header-name', 'header-list', 'cookie-value',
                'cookie-name'],
    'stream': ['header-value', 'header-name', 'header-list', 'cookie-value',
               'cookie-name'],
}
SYNC_WHERE = {
    'respond': ['header-value', 'header-name', 'cookie-value', 'cookie-name'],
    'stream': ['header-value', 'header-name', 'cookie-value', 'cookie-name'],
}
CASES = []
for _via, _wheres in WORKER_WHERE.items():
    for _where in _wheres:
        for _kind in KINDS:
            CASES.append((f'/w/{_via}/{_kind}/{_where}', {}))
for _via, _wheres in SYNC_WHERE.items():
    for _where in _wheres:
        for _kind in KINDS:
            CASES.append((f'/s/{_via}/{_kind}/{_where}', {}))
for _where in ['header-value', 'header-name', 'cookie-value', 'cookie-name']:
    for _kind in KINDS:
        CASES.append(('/api/probe', {'X-Split-Check': _kind, 'X-Where': _where}))

_ERROR = re.compile(r'(?m)^\S+ \S+ ERROR ')


@pytest.fixture(scope='module')
def server(module_server):
    return module_server


def _errors(server):
    return len(_ERROR.findall(server.log()))


@pytest.mark.parametrize('path,headers', CASES,
                         ids=[c[0] + ('/' + '/'.join(c[1].values()) if c[1] else '')
                              for c in CASES])
def test_no_injected_header_reaches_the_wire(server, path, headers):
    before = _errors(server)
    outcome = exchange(server.port,
                       request_bytes('GET', path, dict(headers, Connection='close')),
                       timeout=8)
    raw_head = outcome.raw.split(b'\r\n\r\n', 1)[0]
    assert not re.search(rb'(?im)^\s*x-injected', outcome.raw), outcome.raw[:600]
    assert b'<html>injected' not in outcome.raw, outcome.raw[:600]
    assert outcome.rest == b'', outcome
    assert len(outcome.finals) == 1, (
        f"GET {path} {headers}: expected one 500, got {outcome} raw={outcome.raw[:300]!r}")
    resp = outcome.finals[0]
    assert resp.status == 500, (resp, raw_head)
    server.wait_log(_ERROR.pattern, timeout=5, count=before + 1)
    probe(server)


def test_alive_after_splitting(server):
    probe(server)
    assert 'dispatcher loop error' not in server.log()
