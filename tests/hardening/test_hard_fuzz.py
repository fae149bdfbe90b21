"""Generated bad input (hypothesis) against one dispatcher for the module
(app tests/apps/hard_http.py).

Each example is sent on a fresh connection which is then half-closed, so
the request ends there. The server must write only well-formed responses
(each a 2xx, 4xx, 501 or 505; never a 500 or garbage), no more of them
than there are request lines, and close the connection. After each example
the dispatcher must be alive; every few examples, and after each property,
it must answer a probe.
"""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hard_util import exchange, pid_alive, probe

APP = 'hard_http'
ALLOWED = set(range(200, 300)) | set(range(400, 500)) | {501, 505}
SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

VALID = [
    b'GET /sync/echo?a=1&b=%20x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Test: yes\r\n\r\n',
    b'GET /api/echo?q=%E2%82%AC HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n'
    b'Cookie: a=1; b=2\r\n\r\n',
    b'POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
    b'Content-Length: 16\r\n\r\n{"a": [1, 2, 3]}',
    b'POST /sync/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/'
    b'octet-stream\r\nContent-Length: 8\r\n\r\n\x00\x01\x02\r\n\xff\xfe\n',
    b'PUT /api/seq/7 HTTP/1.0\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello',
]
SPECIAL = [b'\r', b'\n', b'\r\n', b'\x00', b' ', b'\t', b':', b'%', b'\xff', b'\r\n\r\n']

_counter = {'n': 0}


@pytest.fixture(scope='module')
def server(module_server):
    return module_server


def _request_lines(data):
    """At most one answer per header block (each ends in an empty line),
    plus one for a rejected unfinished block."""
    return data.count(b'\n\r\n') + data.count(b'\n\n') + 1


def check(server, data):
    outcome = exchange(server.port, data, timeout=10, shut_wr=True)
    context = f"sent {data[:400]!r}"
    assert outcome.closed, f"{context}: not closed after the client's EOF ({outcome})"
    assert outcome.rest == b'', f"{context}: trailing bytes {outcome.rest[:200]!r}"
    finals = outcome.finals
    assert len(finals) <= _request_lines(data), f"{context}: {finals}"
    for resp in finals:
        assert resp.status in ALLOWED, f"{context}: {resp}"
    assert pid_alive(server.pid), f"{context}: the dispatcher died"
    _counter['n'] += 1
    if _counter['n'] % 25 == 0:
        probe(server)


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        size = len(data)
        op = draw(st.sampled_from(['flip', 'truncate', 'duplicate', 'insert',
                                   'delete', 'replace-special']))
        if size == 0:
            op = 'insert'
        if op == 'flip':
            index = draw(st.integers(0, size - 1))
            data[index] = draw(st.integers(0, 255))
        elif op == 'truncate':
            del data[draw(st.integers(0, size - 1)):]
        elif op == 'duplicate':
            start = draw(st.integers(0, size - 1))
            end = draw(st.integers(start, min(size, start + 64)))
            where = draw(st.integers(0, size))
            data[where:where] = data[start:end]
        elif op == 'insert':
            where = draw(st.integers(0, size))
            data[where:where] = draw(st.sampled_from(SPECIAL))
        elif op == 'delete':
            start = draw(st.integers(0, size - 1))
            del data[start:draw(st.integers(start, min(size, start + 16)))]
        else:
            index = draw(st.integers(0, size - 1))
            data[index:index + 1] = draw(st.sampled_from(SPECIAL))
    return bytes(data)


_name = st.one_of(
    st.from_regex(rb'\A[A-Za-z][A-Za-z0-9-]{0,20}\Z'),
    st.binary(min_size=0, max_size=24))
_value = st.one_of(
    st.from_regex(rb'\A[\x20-\x7e]{0,40}\Z'),
    st.binary(min_size=0, max_size=60),
    st.sampled_from([b'chunked', b'-1', b'99999999999999999999', b'100-continue',
                     b'close', b'keep-alive', b'5, 5', b'application/json']))


@st.composite
def header_soup(draw):
    method = draw(st.sampled_from([b'GET', b'POST', b'PUT', b'DELETE', b'PATCH',
                                   b'OPTIONS', b'get', b'BREW']))
    path = draw(st.sampled_from([b'/sync/echo', b'/api/echo', b'/api/seq/3', b'/nope',
                                 b'/api/echo?x=%ZZ', b'/sync/echo?%C3%28',
                                 b'/api/seq/%33']))
    version = draw(st.sampled_from([b'HTTP/1.1', b'HTTP/1.0', b'HTTP/1.1', b'HTTP/1.9']))
    headers = [b'Host: 127.0.0.1']
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from([b'Content-Length', b'Transfer-Encoding',
                                     b'Expect', b'Connection', b'Content-Type',
                                     b'Cookie', b'Host'])) if draw(st.booleans()) else draw(_name)
        separator = draw(st.sampled_from([b': ', b':', b' : ', b':\t', b'']))
        headers.append(name + separator + draw(_value))
    eol = draw(st.sampled_from([b'\r\n', b'\r\n', b'\n']))
    body = draw(st.binary(max_size=64))
    return (method + b' ' + path + b' ' + version + eol
            + eol.join(headers) + eol + eol + body)


@SETTINGS
@given(data=st.binary(min_size=0, max_size=2048))
def test_random_bytes(server, data):
    check(server, data)


@SETTINGS
@given(data=st.binary(min_size=1, max_size=600).map(
    lambda tail: b'GET /sync/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n' + tail))
def test_valid_start_random_rest(server, data):
    check(server, data)


@SETTINGS
@given(data=mutated())
def test_mutated_valid_request(server, data):
    check(server, data)


@SETTINGS
@given(data=header_soup())
def test_header_soup(server, data):
    check(server, data)


@SETTINGS
@given(data=st.lists(mutated(), min_size=2, max_size=5).map(b''.join))
def test_pipelined_mutations(server, data):
    check(server, data)


def test_alive_after_fuzzing(server):
    probe(server)
    assert server.get('/_status').json['pending'] == 0
    log = server.log()
    assert 'dispatcher loop error' not in log
    assert 'CRITICAL' not in log, log[-4000:]
