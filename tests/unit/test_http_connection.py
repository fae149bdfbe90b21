"""The connection and server glue over a socket pair: parse and serialize
driven through uhttp-server's classes, and the state accessors."""

import select
import socket
import threading
import time

import pytest

from uhttp.workers import http as _http
from uhttp.workers.http import server as _http_server

from connection_pair import accepted, feed, received, serving


@pytest.fixture
def server():
    yield from serving(max_content_length=64, keep_alive_max_requests=3)


@pytest.fixture
def pair(server):
    connection, peer = accepted(server)
    yield connection, peer
    connection.close()
    peer.close()


def test_a_request_through_the_glue(pair):
    connection, peer = pair
    assert connection.is_open and connection.is_idle
    assert not connection.response_started
    ready = feed(connection, peer, b'POST /a%20b?x=1&x=2 HTTP/1.1\r\n'
                 b'Host: h\r\nContent-Type: application/json\r\n'
                 b'Content-Length: 7\r\n\r\n{"a":1}')
    assert ready is connection
    assert (connection.method, connection.path, connection.query) == (
        'POST', '/a b', {'x': ['1', '2']})
    assert connection.headers['content-type'] == 'application/json'
    assert connection.body == b'{"a":1}'
    assert connection.data == {'a': 1}
    assert connection.content_length == 7
    assert not connection.is_idle
    assert connection.send_response(200, [('X-A', 'b')], b'done')
    assert received(peer) == (b'HTTP/1.1 200 OK\r\nX-A: b\r\n'
                              b'content-length: 4\r\nconnection: keep-alive'
                              b'\r\n\r\ndone')
    assert connection.is_open and connection.is_idle  # reset for the next


def test_the_privates_the_accessors_stand_for(pair):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    assert connection.method == connection._method
    assert connection.path == connection._path
    assert connection.query == connection._query
    assert connection.headers is connection._headers
    assert connection.body is connection._data
    assert connection.max_send_buffer_size == connection._max_send_buffer_size
    connection.hold()
    connection.send_response(204, [], b'')
    assert connection.response_started is connection._response_started is True
    connection.release()
    connection.close()
    assert connection.is_open is False and connection.socket is None


def test_head_gets_the_length_without_the_body(pair):
    connection, peer = pair
    feed(connection, peer, b'HEAD / HTTP/1.1\r\nHost: h\r\n\r\n')
    connection.send_response(200, [], b'hello', head=True)
    assert received(peer) == (b'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n'
                              b'connection: keep-alive\r\n\r\n')


@pytest.mark.parametrize('status', [204, 304])
def test_bodiless_statuses_send_no_body(pair, status):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    connection.send_response(status, [], b'ignored')
    assert received(peer).endswith(b'connection: keep-alive\r\n\r\n')


def test_respond_to_head_has_length_but_no_body(pair):
    connection, peer = pair
    feed(connection, peer, b'HEAD / HTTP/1.1\r\nHost: h\r\n\r\n')
    connection.respond({'a': 1})
    data = received(peer)
    assert b'content-length: 8\r\n' in data and data.endswith(b'\r\n\r\n')


def test_a_refusal_is_answered_with_its_message_and_closes(pair):
    connection, peer = pair
    assert feed(connection, peer, b'GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n') \
        is None
    data = received(peer)
    assert data.startswith(b'HTTP/1.1 400 Bad Request\r\n')
    assert data.endswith(b'\r\n\r\n400 Bad Request: Invalid URL path encoding'
                         b'<EOF>')
    assert not connection.is_open


def test_a_refused_head_request_gets_no_body(pair):
    connection, peer = pair
    feed(connection, peer, b'HEAD /%zz HTTP/1.1\r\nHost: h\r\n\r\n')
    data = received(peer)
    assert data.startswith(b'HTTP/1.1 400 ') and data.endswith(b'\r\n\r\n<EOF>')


def test_a_head_request_with_a_bad_query_gets_no_body(pair):
    connection, peer = pair
    feed(connection, peer, b'HEAD /?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n')
    data = received(peer)
    assert data.startswith(b'HTTP/1.1 400 ') and data.endswith(b'\r\n\r\n<EOF>')
    assert b'content-length: 46\r\n' in data  # '400 Bad Request: Invalid query ...'


def test_a_get_with_a_bad_query_gets_the_message(pair):
    connection, peer = pair
    feed(connection, peer, b'GET /?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n')
    assert received(peer).endswith(
        b'\r\n\r\n400 Bad Request: Invalid query string encoding<EOF>')


def test_headers_too_large_is_431(server):
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    connection = _http.Connection(server, ours, ('127.0.0.1', 1),
                                  max_headers_length=64)
    connection.register()
    feed(connection, peer, b'GET / HTTP/1.1\r\nX: ' + b'a' * 45)  # 64 bytes
    data = received(peer)
    assert data.startswith(b'HTTP/1.1 431 ')
    assert b'Headers too large: 64 bytes (max 64)' in data
    peer.close()


def test_a_body_over_the_limit_is_413_without_100_continue(pair):
    # the client is told before it sends the body it asked about
    connection, peer = pair
    feed(connection, peer, b'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65'
         b'\r\nExpect: 100-continue\r\n\r\n')
    data = received(peer)
    assert data.startswith(b'HTTP/1.1 413 ') and b'100 Continue' not in data


def test_a_body_within_the_limit_gets_100_continue(pair):
    connection, peer = pair
    assert feed(connection, peer, b'POST / HTTP/1.1\r\nHost: h\r\n'
                b'Content-Length: 64\r\nExpect: 100-continue\r\n\r\n') is None
    assert received(peer) == b'HTTP/1.1 100 Continue\r\n\r\n'
    assert feed(connection, peer, b'x' * 64) is connection


def test_a_head_the_server_answers_gets_no_100_and_closes(server, pair):
    # the body it asked about is not wanted: the answer closes the
    # connection (the body would be read as the next request) and lingers
    connection, peer = pair
    server.owner.early = 404
    assert feed(connection, peer, b'POST / HTTP/1.1\r\nHost: h\r\n'
                b'Content-Length: 64\r\nExpect: 100-continue\r\n\r\n') is None
    data = received(peer)
    assert data.startswith(b'HTTP/1.1 404 ') and b'100 Continue' not in data
    assert b'connection: close' in data and data.endswith(b'<EOF>')
    assert not connection.is_open and server.owner.failed == []


def test_a_chunked_body_in_pieces(pair):
    connection, peer = pair
    assert feed(connection, peer, b'POST / HTTP/1.1\r\nHost: h\r\n'
                b'Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n') is None
    assert not connection.is_loaded
    ready = feed(connection, peer, b'2\r\nde\r\n0\r\n\r\n')
    assert ready is connection and connection.body == b'abcde'


def test_a_chunked_body_over_the_limit_is_413(pair):
    connection, peer = pair
    feed(connection, peer, b'POST / HTTP/1.1\r\nHost: h\r\n'
         b'Transfer-Encoding: chunked\r\n\r\n41\r\n')
    assert received(peer).startswith(b'HTTP/1.1 413 Payload Too Large\r\n')


@pytest.mark.parametrize('data, status', [
    (b'GET / HTTP/1.1\r\nBad Header\r\n\r\n', 400),
    (b'GET / HTTP/1.1\r\n\r\n', 400),                       # no Host
    (b'BREW / HTTP/1.1\r\nHost: h\r\n\r\n', 501),
    (b'GET / HTTP/2.0\r\nHost: h\r\n\r\n', 505),
    (b'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 65\r\n\r\n', 413),
    (b'POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n'
     b'41\r\n', 413),
    (b'GET /?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n', 400),
])
def test_refusals_are_told_to_the_owner_once(server, pair, data, status):
    connection, peer = pair
    feed(connection, peer, data)
    assert received(peer).startswith(b'HTTP/1.1 %d ' % status)
    assert server.owner.refused == [status]


def test_too_many_connections_is_a_503_told_to_the_owner():
    for server in serving(max_waiting_clients=1):
        busy = socket.create_connection(server.socket.getsockname(), timeout=2)
        newcomer = None
        try:
            server._accept()
            (first,) = list(server.connections)
            busy.sendall(b'GET / HTTP/1.1\r\n')  # a head under way: kept
            first.handle_event(first.socket, _http.EVENT_READ)
            newcomer = socket.create_connection(server.socket.getsockname(),
                                                timeout=2)
            server._accept()
            assert newcomer.recv(4096).startswith(b'HTTP/1.1 503 ')
            assert server.owner.refused == [503]
        finally:
            busy.close()
            if newcomer is not None:
                newcomer.close()


def test_a_connection_whose_first_request_has_not_come_yet_is_not_evicted():
    """Accepted in the same burst as the newcomer: not an idle keep-alive
    connection but one whose request is on the way. The newcomer is
    refused; once the first has been answered and is idle, or stayed
    silent past FRESH_GRACE, it is the one closed."""
    for server in serving(max_waiting_clients=1):
        first_client = socket.create_connection(server.socket.getsockname(),
                                                timeout=2)
        clients = [first_client]
        try:
            server._accept()
            (first,) = list(server.connections)
            clients.append(socket.create_connection(
                server.socket.getsockname(), timeout=2))
            server._accept()
            assert clients[-1].recv(4096).startswith(b'HTTP/1.1 503 ')
            assert first.is_open
            first.accepted_at -= _http_server.FRESH_GRACE + 0.1  # silent
            clients.append(socket.create_connection(
                server.socket.getsockname(), timeout=2))
            server._accept()
            assert not first.is_open and first_client.recv(4096) == b''
            assert server.owner.refused == [503]
        finally:
            for client in clients:
                client.close()


def test_a_refused_pipelined_request_is_told_too(server, pair):
    connection, peer = pair
    feed(connection, peer, b'GET /1 HTTP/1.1\r\nHost: h\r\n\r\n'
         b'GET /2 HTTP/1.1\r\nBad Header\r\n\r\n')
    connection.send_response(200, [], b'one')
    (scheduled,) = server.take_scheduled()
    assert scheduled.process_pipelined() is None
    assert received(peer).endswith(b'Bad Header\'<EOF>')
    assert server.owner.refused == [400]


def test_answered_requests_are_not_refusals(server, pair):
    connection, peer = pair
    assert feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    connection.send_response(404, [], b'no')
    assert server.owner.refused == []


def test_pipelined_requests_wait_their_turn(server, pair):
    connection, peer = pair
    ready = feed(connection, peer, b'GET /1 HTTP/1.1\r\nHost: h\r\n\r\n'
                 b'GET /2 HTTP/1.1\nHost: h\n\n')
    assert ready.path == '/1'
    assert not server.has_scheduled
    connection.send_response(200, [], b'one')
    assert server.has_scheduled
    (scheduled,) = server.take_scheduled()
    assert not server.has_scheduled
    assert scheduled.process_pipelined() is connection
    assert connection.path == '/2'


def test_keep_alive_ends_at_the_request_limit(pair):
    connection, peer = pair
    for count in range(1, 4):
        feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
        connection.send_response(200, [], b'')
        last = received(peer)
        assert connection.is_open is (count < 3)
    assert b'connection: close\r\n\r\n<EOF>' in last


def test_a_closing_server_closes_after_the_response(pair):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    connection.send_response(200, [], b'x', close=True)
    assert received(peer).endswith(b'connection: close\r\n\r\nx<EOF>')


def test_cr_lf_in_a_header_sends_nothing(pair):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    with pytest.raises(ValueError, match="header 'X' contains CR or LF"):
        connection.send_response(200, [('X', 'a\r\nb')], b'')
    assert not connection.response_started and received(peer) == b''


def test_a_large_body_goes_out_whole(pair):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    body = bytes(range(256)) * 400
    connection.send_response(200, [], body)
    data = b''
    while len(data) < len(body):
        connection.try_send()
        data += received(peer)
    assert data.endswith(body)


def test_a_stream(pair):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    assert connection.start_stream(200, [], None)
    assert connection.response_started
    connection.send_chunk(b'data: 1\n\n')
    connection.end_stream()
    assert received(peer) == (b'HTTP/1.1 200 OK\r\n'
                              b'content-type: text/event-stream\r\n'
                              b'cache-control: no-cache\r\n'
                              b'connection: close\r\n\r\ndata: 1\n\n<EOF>')


def test_a_stream_that_asks_for_chunks(pair):
    # both ways a stream's bytes go out (stream_send for a local worker's,
    # send_chunk for a remote one's) are framed; the end adds the last one
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    assert connection.start_stream(
        200, [('Transfer-Encoding', 'chunked')], None)
    connection.stream_send(b'data: 1\n\n')
    connection.send_chunk('data: 22\n\n')
    connection.send_chunk(b'')
    connection.end_stream()
    assert received(peer) == (b'HTTP/1.1 200 OK\r\n'
                              b'content-type: text/event-stream\r\n'
                              b'cache-control: no-cache\r\n'
                              b'transfer-encoding: chunked\r\n'
                              b'connection: close\r\n\r\n'
                              b'9\r\ndata: 1\n\n\r\n'
                              b'a\r\ndata: 22\n\n\r\n0\r\n\r\n<EOF>')


def test_a_chunked_stream_cut_short_has_no_last_chunk(pair):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    assert connection.start_stream(
        200, {'transfer-encoding': 'chunked'}.items(), None)
    connection.stream_send(b'x')
    connection.end_stream(whole=False)
    assert received(peer).endswith(b'\r\n\r\n1\r\nx\r\n<EOF>')


def test_an_exception_while_handling_is_a_400_and_a_log(server, pair):
    connection, peer = pair

    def explode():
        connection.socket.recv(100)
        raise RuntimeError("boom")

    connection._read_headers = explode  # whichever way the head is read
    assert feed(connection, peer, b'GET / HTTP/1.1\r\n\r\n') is None
    assert [str(err) for err in server.owner.failed] == ['boom']
    assert received(peer).endswith(b'\r\n\r\nBad Request<EOF>')


def test_idle_and_overdue(pair):
    connection, peer = pair
    feed(connection, peer, b'GET / HTTP/1.1\r\n')
    assert not connection.is_idle
    started = connection._request_start
    assert not connection.request_overdue(started)
    assert connection.request_overdue(started + 3600)


def test_server_accessors(server):
    assert server.socket is server._socket and server.port
    assert server.connections == {}
    assert server.has_scheduled is False
    assert server.trusts_proxies is False
    server.stop_listening()
    assert server.socket is None and server.port is None


def test_a_pipeline_longer_than_the_header_limit_is_served_in_turn():
    """Requests that came while one was out (kept in the buffer) may add
    up to more than max_headers_length: each is still read in its turn."""
    for server in serving(max_headers_length=128):
        connection, peer = accepted(server)
        try:
            pipeline = b''.join(b'GET /%d HTTP/1.1\r\nHost: h\r\n\r\n' % n
                                for n in range(10))
            assert feed(connection, peer, pipeline).path == '/0'
            # the rest comes while /0 is out with a worker: kept for later
            connection.handle_event(connection.socket, _http.EVENT_READ)
            assert len(connection._buffer) > 128
            for n in range(1, 10):
                connection.send_response(200, [], b'%d' % (n - 1))
                (scheduled,) = server.take_scheduled()
                assert scheduled.process_pipelined() is connection
                assert connection.path == '/%d' % n
            assert server.owner.failed == [] and server.owner.refused == []
        finally:
            connection.close()
            peer.close()


def test_a_pipelined_body_after_a_long_buffer_is_read():
    """The head of a pipelined POST is in the buffer beyond the header
    limit, its body partly there: its head is read and the rest of its
    body comes from the socket."""
    for server in serving(max_headers_length=128, max_content_length=4096):
        connection, peer = accepted(server)
        try:
            body = bytes(range(256)) * 8
            post = (b'POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n'
                    b'\r\n' % len(body))
            assert feed(connection, peer, b'GET /0 HTTP/1.1\r\nHost: h\r\n\r\n'
                        + post + body[:1000]).path == '/0'
            connection.handle_event(connection.socket, _http.EVENT_READ)
            connection.send_response(200, [], b'zero')
            (scheduled,) = server.take_scheduled()
            assert scheduled.process_pipelined() is None  # body not all in
            ready = feed(connection, peer, body[1000:])
            assert ready is connection and connection.path == '/up'
            assert bytes(connection.body) == body
        finally:
            connection.close()
            peer.close()


def _chunked(body, size):
    return b''.join(b'%x\r\n' % len(body[at:at + size]) + body[at:at + size]
                    + b'\r\n' for at in range(0, len(body), size)) + b'0\r\n\r\n'


def test_chunked_reads_are_small_while_the_chunks_are():
    from uhttp.workers.http import spoolbody
    small, large = spoolbody.SMALL_CHUNKS_READ, spoolbody.CHUNKED_READ
    assert spoolbody.chunked_read_size(0, 0) == small  # nothing read yet
    wire = _chunked(b'x' * 1000, 1)
    chunks = _http.parse.ChunkedBody(1 << 30)
    chunks.feed(bytearray(wire))
    assert chunks.lines == 2 * 1000 + 2  # sizes, data ends, 0, the end
    assert spoolbody.chunked_read_size(chunks.lines, len(wire)) == small
    wire = _chunked(b'x' * 200000, 65536)
    chunks = _http.parse.ChunkedBody(1 << 30)
    chunks.feed(bytearray(wire))
    assert spoolbody.chunked_read_size(chunks.lines, len(wire)) == large
    # a read of data alone (the middle of a large chunk): large again
    assert spoolbody.chunked_read_size(0, small) == large


def test_a_spooled_body_of_one_byte_chunks(tmp_path):
    """1-byte chunks, spooled: each event reads a little of them (others
    get their turn between), and the file gets them joined, whole."""
    from uhttp.workers.http import spoolbody
    body = bytes(range(256)) * 1024
    wire = (b'POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n'
            b'\r\n' + _chunked(body, 1))
    for server in serving(max_content_length=1 << 20, spool_threshold=4096,
                          spool_dir=str(tmp_path)):
        connection, peer = accepted(server)
        try:
            # sendall's timeout is for the whole 1.5 MB, which a busy
            # machine parses in more than the pair's usual 2 s
            peer.settimeout(60)
            sender = threading.Thread(target=peer.sendall, args=(wire,))
            sender.start()
            events, ready = 0, None
            while ready is None and events < 10000:
                # as the loop does: an event only when there is something
                # to read (a sender slowed by a busy machine is waited for)
                assert select.select([connection.socket], [], [], 5)[0]
                before = connection._rx_bytes_counter
                ready = connection.handle_event(connection.socket,
                                                _http.EVENT_READ)
                assert (connection._rx_bytes_counter - before
                        <= spoolbody.SMALL_CHUNKS_READ)
                events += 1
            sender.join(5)
            assert ready is connection
            assert events >= len(wire) // spoolbody.SMALL_CHUNKS_READ
            assert bytes(connection.body) == body
        finally:
            connection.close()
            peer.close()


def test_timeouts_are_looked_at_every_second_at_most():
    # half the shortest timeout (uhttp-server's rule) would let a 30 s
    # keep_alive_timeout close an idle connection only 45 s after it went idle
    for server in serving():
        assert server._maintenance_interval == 1.0
    for server in serving(keep_alive_timeout=1, request_timeout=5):
        assert server._maintenance_interval == 0.5


def test_an_idle_connection_closes_close_to_its_timeout():
    for server in serving(keep_alive_timeout=1.5, request_timeout=30):
        connection, peer = accepted(server)
        try:
            started = time.monotonic()
            server._last_maintenance = time.time()  # one look just now
            while connection.is_open and time.monotonic() - started < 5:
                server.maintenance()
                time.sleep(0.02)
            assert not connection.is_open
            assert 1.5 <= time.monotonic() - started < 1.5 + 0.75 + 0.2
        finally:
            connection.close()
            peer.close()


def test_respond_takes_a_capitalised_content_type_as_its_own(pair):
    connection, peer = pair
    assert feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    connection.respond('text', headers={'Content-Type': 'text/plain',
                                        'Content-Length': '4'})
    head = received(peer).split(b'\r\n\r\n')[0].lower().split(b'\r\n')
    assert [line for line in head if line.startswith(b'content-type')] == [
        b'content-type: text/plain']
    assert [line for line in head if line.startswith(b'content-length')] == [
        b'content-length: 4']


def test_respond_takes_a_date_given_as_its_own(pair):
    connection, peer = pair
    assert feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
    connection.respond('x', headers={'Date': 'Sun, 06 Nov 1994 08:49:37 GMT'})
    head = received(peer, dated=True).split(b'\r\n\r\n')[0].lower()
    assert [line for line in head.split(b'\r\n')
            if line.startswith(b'date')] == [
        b'date: sun, 06 nov 1994 08:49:37 gmt']


@pytest.mark.parametrize('asked', ['keep-alive, close', 'TE, close',
                                   'close,TE'])
def test_close_among_the_connection_options_closes(pair, asked):
    connection, peer = pair
    assert feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n'
                b'Connection: %s\r\n\r\n' % asked.encode())
    connection.respond('x')
    data = received(peer)
    assert b'connection: close' in data.lower() and data.endswith(b'<EOF>')


def test_every_kind_of_answer_carries_a_date(server):
    # RFC 9110 6.6.1: an origin server with a clock sends Date
    for answer in (lambda c: c.send_response(200, [], b'x'),
                   lambda c: c.respond('x'),
                   lambda c: c.start_stream(200, [], None)):
        connection, peer = accepted(server)
        try:
            assert feed(connection, peer, b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
            answer(connection)
            head = received(peer, dated=True).split(b'\r\n\r\n')[0]
            dates = [line for line in head.split(b'\r\n')
                     if line.lower().startswith(b'date: ')]
            assert len(dates) == 1 and dates[0].endswith(b' GMT'), head
        finally:
            connection.close()
            peer.close()


def test_connections_waiting_to_be_accepted_are_kept_when_listening_stops():
    # closing a listener resets what waits in its accept queue: those
    # clients are taken first, and their requests answered
    for server in serving():
        address = server.socket.getsockname()
        clients = [socket.create_connection(address, timeout=2)
                   for _ in range(3)]
        try:
            server.stop_listening()
            assert server.socket is None and len(server.connections) == 3
            for client in clients:
                client.sendall(b'GET / HTTP/1.1\r\nHost: h\r\n\r\n')
            time.sleep(0.05)  # (loopback: the requests are in)
            ready = [connection.handle_event(connection.socket,
                                             _http.EVENT_READ)
                     for connection in list(server.connections)]
            assert [connection.path for connection in ready] == ['/'] * 3
        finally:
            for client in clients:
                client.close()
