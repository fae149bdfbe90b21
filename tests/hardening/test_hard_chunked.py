"""Chunked request bodies (Transfer-Encoding: chunked, RFC 9112 7.1).

Well-formed chunked bodies reach the handler whole (chunk extensions and
trailers allowed, in pieces as slow as a client likes, pipelined requests
after them kept); malformed framing is a 400, a body over the limit a 413,
trailers over the header limit a 431, Transfer-Encoding together with
Content-Length (request smuggling) a 400 and other transfer codings a
501. The server keeps serving after each.
"""

import json

import pytest

from hard_util import exchange

APP = 'hard_http'
HEAD = (b'POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n'
        b'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n')


@pytest.fixture(scope='module')
def server(module_server):
    return module_server


def probe(server):
    assert server.get('/api/probe').status == 200


def answers(server, data, expect=1, **kwargs):
    outcome = exchange(server.port, data, timeout=10, expect=expect, **kwargs)
    assert outcome.rest == b'', outcome
    return outcome.finals


def test_chunked_json_body_reaches_the_handler(server):
    body = b'5\r\n{"a":\r\n3;name=value\r\n [1\r\n2\r\n]}\r\n0\r\n\r\n'
    final, = answers(server, HEAD + b'Connection: close\r\n\r\n' + body)
    assert final.status == 200
    assert json.loads(final.body)['data'] == {'a': [1]}
    probe(server)


def test_trailers_and_lf_only_lines_are_accepted(server):
    body = b'2\n[]\n0\nX-Checksum: 1\nX-Other: 2\n\n'
    final, = answers(server, HEAD + b'Connection: close\r\n\r\n' + body)
    assert final.status == 200
    assert json.loads(final.body)['data'] == []


def test_chunks_arriving_slowly_in_pieces(server):
    parts = [HEAD + b'Connection: close\r\n\r\n', b'1', b'\r\n[', b'\r\n',
             b'1\r\n]\r', b'\n0\r\n', b'\r\n']
    final, = answers(server, b''.join(parts), pause_after=parts)
    assert final.status == 200
    assert json.loads(final.body)['data'] == []


def test_empty_chunked_body_is_no_data(server):
    final, = answers(server, HEAD + b'Connection: close\r\n\r\n0\r\n\r\n')
    assert final.status == 200
    assert json.loads(final.body)['data'] is None


def test_pipelined_request_after_a_chunked_body(server):
    data = (HEAD + b'\r\n3\r\n[7]\r\n0\r\n\r\n'
            b'GET /api/seq/2 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')
    first, second = answers(server, data, expect=2)
    assert json.loads(first.body)['data'] == [7]
    assert json.loads(second.body)['n'] == 2


@pytest.mark.parametrize('body', [
    b'zz\r\nab\r\n0\r\n\r\n',           # size is not hex
    b'-1\r\nab\r\n0\r\n\r\n',           # negative size
    b'2\r\nabc\r\n0\r\n\r\n',           # more data than the size says
    b'\r\nab\r\n0\r\n\r\n',             # empty size line
    b'10000000000000000\r\n',           # absurd size
    b'1\r\na\r\n0\r\nBad Trailer\r\n\r\n',  # malformed trailer
])
def test_malformed_chunked_framing_is_a_400(server, body):
    final, = answers(server, HEAD + b'\r\n' + body)
    assert final.status == 400
    probe(server)


def test_trailers_beyond_the_header_limit_are_a_431(server):
    # trailers are a header section: without a limit of their own a client
    # could keep the dispatcher parsing them until request_timeout
    trailer = b'X-Pad: ' + b'v' * 1000 + b'\r\n'
    body = b'2\r\n[]\r\n0\r\n' + trailer * 40 + b'\r\n'
    final, = answers(server, HEAD + b'\r\n' + body)
    assert final.status == 431
    assert b'Trailers too large' in final.body
    probe(server)


def test_smuggling_framing_is_refused(server):
    data = (b'POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            b'Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n'
            b'0\r\n\r\nGET /api/probe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    outcome = exchange(server.port, data, timeout=10)
    assert [final.status for final in outcome.finals] == [400]
    probe(server)


@pytest.mark.parametrize('coding, status', [
    (b'gzip, chunked', 501),       # a coding this server does not decode
    (b'gzip', 400),                # no final chunked: no length (RFC 9112 6.3)
    (b'chunked, gzip', 400),
    (b'identity', 400),
    (b'chunked, chunked', 400),    # chunked applied twice
])
def test_other_transfer_codings_are_refused(server, coding, status):
    data = (b'POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            b'Transfer-Encoding: ' + coding + b'\r\n\r\nabc')
    final, = answers(server, data)
    assert final.status == status
    probe(server)
