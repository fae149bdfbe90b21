"""The keep-alive cycle's short ways (http/keepalive.py) leave a connection
exactly as the general ways do, and the answers' remembered heads are the
heads built each time (http/serialize.py)."""

import os
import time

import pytest

import uhttp.server as _server
from uhttp.workers import http as _http
from uhttp.workers.http import serialize

from connection_pair import accepted, received, serving

# state that differs between two connections for reasons of their own
_OWN = {'_socket', '_last_activity', '_request_start', '_server', '_addr',
        '_reset_plain'}

REQUESTS = [
    b'GET /items?name=x HTTP/1.1\r\nHost: h\r\nX-Name: pid\r\n\r\n',
    b'POST /status HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello',
    b'GET /a HTTP/1.0\r\n\r\n',
    b'GET /a HTTP/1.1\nHost: h\n\n',       # LF-only lines
    b'GET /a HTTP/1.1\r\nHost: h\r\n',     # a head not complete yet
    b'GET /a HTTP/1.1\r\n\r\n',            # no Host: 400
    b'BREW /a HTTP/1.1\r\nHost: h\r\n\r\n',  # unknown method: 501
]


@pytest.fixture
def server():
    yield from serving(max_content_length=64)


@pytest.fixture
def pairs(server):
    """Makes (connection, peer) pairs: one is read the short way, one the
    long way."""
    made = []

    def make():
        made.append(accepted(server))
        return made[-1]

    yield make
    for connection, peer in made:
        connection.close()
        peer.close()


def state(connection, other=None):
    """The connection's attributes as read (a class default counts as set),
    over the names either connection has."""
    names = set(vars(connection)) | set(vars(other) if other else ())
    return {name: getattr(connection, name) for name in names - _OWN}


def long_way(connection):
    """What handle_event() did for a read event before the short way."""
    return _server.HttpConnection.handle_event(
        connection, connection.socket, _http.EVENT_READ)


@pytest.mark.parametrize('request_bytes', REQUESTS)
def test_a_head_read_the_short_way_is_read_as_the_long_way(pairs,
                                                           request_bytes):
    short, short_peer = pairs()
    long, long_peer = pairs()
    short_peer.sendall(request_bytes)
    long_peer.sendall(request_bytes)
    assert short._awaits_request()
    got_short = short.handle_event(short.socket, _http.EVENT_READ)
    got_long = long_way(long)
    assert (got_short is short) == (got_long is long)
    assert state(short, long) == state(long, short)
    assert received(short_peer) == received(long_peer)


def test_the_short_way_counts_and_times_the_request(pairs):
    connection, peer = pairs()
    before = time.time()
    peer.sendall(REQUESTS[0])
    assert connection.handle_event(connection.socket,
                                   _http.EVENT_READ) is connection
    assert connection._requests_count == 1
    assert before <= connection._request_start <= time.time()
    assert connection._last_activity >= before
    assert connection.path == '/items' and connection.query == {'name': 'x'}
    assert connection.headers['x-name'] == 'pid'


def test_a_client_that_leaves_is_closed_the_short_way(pairs):
    connection, peer = pairs()
    peer.close()
    assert connection.handle_event(connection.socket,
                                   _http.EVENT_READ) is None
    assert not connection.is_open


def test_a_connection_with_a_request_out_is_not_read_the_short_way(pairs):
    connection, peer = pairs()
    peer.sendall(REQUESTS[0])
    assert connection.handle_event(connection.socket,
                                   _http.EVENT_READ) is connection
    assert connection.method == 'GET'
    peer.sendall(REQUESTS[2])  # pipelined: kept for later, not parsed
    assert connection.handle_event(connection.socket,
                                   _http.EVENT_READ) is None
    assert connection.path == '/items'


@pytest.mark.parametrize('request_bytes', REQUESTS[:4])
def test_the_plain_reset_leaves_what_the_whole_reset_leaves(pairs,
                                                            request_bytes):
    plain, plain_peer = pairs()
    whole, whole_peer = pairs()
    for connection, peer in ((plain, plain_peer), (whole, whole_peer)):
        peer.sendall(request_bytes + REQUESTS[0])  # and one pipelined
        assert connection.handle_event(connection.socket,
                                       _http.EVENT_READ) is connection
    plain_ways = []
    short = plain._reset_plain
    plain._reset_plain = lambda: plain_ways.append(short()) or plain_ways[-1]
    whole._reset_plain = lambda: False  # the mixins' resets, one by one
    plain.reset()
    whole.reset()
    assert plain_ways == [True]
    assert state(plain, whole) == state(whole, plain)
    assert plain.is_open and plain.method is None


def test_the_plain_reset_declines_when_a_file_is_being_sent(pairs, tmp_path):
    connection, peer = pairs()
    peer.sendall(REQUESTS[0])
    assert connection.handle_event(connection.socket,
                                   _http.EVENT_READ) is connection
    path = tmp_path / 'f'
    path.write_bytes(b'x' * 10)
    fd = os.open(path, os.O_RDONLY)
    connection._file_handle = _http.sendfile._FileBody(fd, 0, 10)
    assert not connection._reset_plain()
    connection.reset()  # the whole reset lets the file go
    assert connection._file_handle is None


def test_answers_in_turn_over_one_keep_alive_connection(pairs):
    connection, peer = pairs()
    for number in range(5):
        peer.sendall(b'GET /n HTTP/1.1\r\nHost: h\r\n\r\n')
        assert connection.handle_event(connection.socket,
                                       _http.EVENT_READ) is connection
        connection.send_response(200, [('content-type', 'text/plain')],
                                 str(number).encode())
        assert received(peer).endswith(b'\r\n\r\n' + str(number).encode())
        assert connection.method is None  # reset, ready for the next
    assert connection._requests_count == 5


# -- remembered response heads ------------------------------------------------

def built(status, headers, cookies, length, keep):
    """response_head() with nothing remembered: the head built in full."""
    serialize._HEADS.clear()
    return serialize.response_head(status, headers, cookies, length, keep)


HEADS = [
    (200, [('content-type', 'application/json')], None, 17, True),
    (200, [('content-type', 'application/json')], None, 17, False),
    (201, [('Content-Length', '99'), ('X-Id', 7)], None, 3, True),
    (200, [('Connection', 'close')], None, 3, True),
    (200, [('connection', 'Keep-Alive')], None, 3, True),
    (204, [('x-name', 'pid')], None, 0, True),
    (304, None, None, 0, True),
    (200, [], None, 0, True),
    (200, [('set', 'a')], {'session': 'abc', 'old': None}, 2, True),
    (599, [('x', 'y')], None, 1, True),
]


@pytest.mark.parametrize('head', HEADS)
def test_a_remembered_head_is_the_head_built_in_full(head):
    expected = built(*head)
    assert serialize.response_head(*head) == expected  # remembered now
    assert serialize.response_head(*head) == expected  # and used


def test_a_header_value_that_cannot_be_a_key_is_built_each_time():
    head = serialize.response_head(200, [('x-items', ['a', 'b'])], None, 1,
                                   True)
    assert head[0].startswith(b"HTTP/1.1 200 OK\r\nx-items: a\r\n"
                              b"x-items: b\r\n")


def test_values_that_are_equal_but_print_apart_are_not_mixed_up():
    serialize._HEADS.clear()
    heads = [serialize.response_head(200, [('x-n', value)], None, 1, True)[0]
             for value in (1, True, 1.0, '1', 1)]
    assert [head.split(b'\r\n')[1] for head in heads] == [
        b'x-n: 1', b'x-n: True', b'x-n: 1.0', b'x-n: 1', b'x-n: 1']


def test_cr_or_lf_is_refused_every_time():
    for _ in range(2):
        with pytest.raises(ValueError, match='x-name'):
            serialize.response_head(200, [('x-name', 'a\r\nb')], None, 1,
                                    True)


def test_the_remembered_heads_are_bounded():
    serialize._HEADS.clear()
    for number in range(serialize._HEADS_MAX * 3):
        serialize.response_head(200, [('x-id', str(number))], None, 1, True)
    assert len(serialize._HEADS) <= serialize._HEADS_MAX
