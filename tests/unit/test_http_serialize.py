"""uhttp.workers.http.serialize: response heads and the keep-alive rule."""

import itertools
import re

import pytest
from hypothesis import given, settings, strategies as st

import uhttp.server as _server
from uhttp.workers.http.serialize import (
    bodiless, keep_alive, named_upgrade, respond_headers, response_head,
    status_line, stream_head)


DATE = re.compile(r'date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} '
                  r'\d\d:\d\d:\d\d GMT$')


def lines(head, dated=True):
    """The header lines of a head (bytes), status line first, without the
    final empty line and its Date (checked: one, in IMF-fixdate form);
    checks the head ends with exactly one empty line."""
    assert head.endswith(b'\r\n\r\n') and b'\r\n\r\n' not in head[:-4]
    found = head[:-4].decode('utf-8').split('\r\n')
    dates = [line for line in found if line.startswith('date:')]
    assert len(dates) == (1 if dated else 0), found
    assert all(DATE.match(line) for line in dates), dates
    return [line for line in found if not line.startswith('date:')]


# -- status lines --------------------------------------------------------------

@pytest.mark.parametrize('status,line', [
    (200, 'HTTP/1.1 200 OK\r\n'),
    (204, 'HTTP/1.1 204 No Content\r\n'),
    (404, 'HTTP/1.1 404 Not Found\r\n'),
    (413, 'HTTP/1.1 413 Payload Too Large\r\n'),
    (418, "HTTP/1.1 418 I'm a Teapot\r\n"),
    (599, 'HTTP/1.1 599 \r\n'),            # unknown: empty reason phrase
    (299, 'HTTP/1.1 299 \r\n'),
])
def test_status_line(status, line):
    assert status_line(status) == line
    assert status_line(status) is status_line(status)  # built once


def test_status_lines_use_uhttp_servers_reason_phrases():
    for status, reason in _server.STATUS_CODES.items():
        assert status_line(status) == f'HTTP/1.1 {status} {reason}\r\n'


@pytest.mark.parametrize('status,expected', [
    (100, True), (101, True), (103, True), (199, True), (204, True), (304, True),
    (200, False), (201, False), (205, False), (206, False), (299, False),
    (300, False), (302, False), (303, False), (400, False), (404, False),
    (500, False), (503, False),
])
def test_bodiless(status, expected):
    assert bodiless(status) is expected


# -- keep-alive ----------------------------------------------------------------

def model(protocol, asked, served, max_requests, closing, answer):
    """The rule written out a second way, for the truth table."""
    if closing or (answer is not None and answer.lower() != 'keep-alive'):
        return False
    if served >= max_requests:
        return False
    options = {option.strip() for option in asked.lower().split(',')}
    if protocol == 'HTTP/1.1':
        return 'close' not in options
    return 'keep-alive' in options and 'close' not in options


PROTOCOLS = ['HTTP/1.0', 'HTTP/1.1']
ASKED = ['', 'close', 'Close', 'CLOSE', 'keep-alive', 'Keep-Alive', 'upgrade',
         'keep-alive, close', 'te', 'close, TE', 'TE,close', 'Keep-Alive, TE']
SERVED = [(0, 1), (1, 1), (2, 1), (1, 100), (99, 100), (100, 100), (101, 100)]
ANSWERS = [None, 'keep-alive', 'Keep-Alive', 'close', 'Close', 'upgrade', '']


def test_keep_alive_truth_table():
    wrong = []
    for protocol, asked, (count, limit), closing, answer in itertools.product(
            PROTOCOLS, ASKED, SERVED, [False, True], ANSWERS):
        args = (protocol, asked, count, limit, closing, answer)
        if keep_alive(*args) is not model(*args):
            wrong.append(args)
    assert not wrong


@pytest.mark.parametrize('args,expected', [
    (('HTTP/1.1', '', 0, 100), True),
    (('HTTP/1.1', 'close', 0, 100), False),
    (('HTTP/1.1', 'keep-alive', 0, 100), True),
    (('HTTP/1.0', '', 0, 100), False),
    (('HTTP/1.0', 'keep-alive', 0, 100), True),
    (('HTTP/1.0', 'close', 0, 100), False),
    (('HTTP/1.1', '', 100, 100), False),     # served its last request
    (('HTTP/1.1', '', 99, 100), True),
    (('HTTP/1.0', 'keep-alive', 1, 1), False),
])
def test_keep_alive_rows(args, expected):
    assert keep_alive(*args) is expected


def test_closing_server_closes_every_connection():
    assert keep_alive('HTTP/1.1', 'keep-alive', 0, 100, closing=True) is False


def test_the_answer_can_only_close():
    assert keep_alive('HTTP/1.1', '', 0, 100, answer='keep-alive') is True
    assert keep_alive('HTTP/1.1', '', 0, 100, answer='close') is False
    # a response saying keep-alive does not reopen what the request closes
    assert keep_alive('HTTP/1.1', 'close', 0, 100, answer='keep-alive') is False
    assert keep_alive('HTTP/1.0', '', 0, 100, answer='keep-alive') is False


# -- complete responses --------------------------------------------------------

def test_a_plain_response_head():
    head, keep = response_head(200, [('Content-Type', 'text/plain'),
                                     ('X-A', 'b')], None, 5, True)
    assert keep is True
    assert lines(head) == ['HTTP/1.1 200 OK', 'Content-Type: text/plain',
                           'X-A: b', 'content-length: 5',
                           'connection: keep-alive']


def test_closing_head():
    head, keep = response_head(404, [], None, 0, False)
    assert keep is False
    assert lines(head) == ['HTTP/1.1 404 Not Found', 'content-length: 0',
                           'connection: close']


def test_headers_keep_their_order_case_and_repeats():
    head, _ = response_head(200, [('X-B', '1'), ('x-a', '2'), ('X-B', '3')],
                            None, 0, True)
    assert lines(head)[1:4] == ['X-B: 1', 'x-a: 2', 'X-B: 3']


def test_no_headers_at_all():
    for headers in (None, [], ()):
        head, _ = response_head(200, headers, None, 3, True)
        assert lines(head) == ['HTTP/1.1 200 OK', 'content-length: 3',
                               'connection: keep-alive']


@pytest.mark.parametrize('name', ['Content-Length', 'content-length',
                                  'CONTENT-LENGTH'])
def test_the_callers_content_length_is_replaced(name):
    head, _ = response_head(200, [(name, '999')], None, 5, True)
    assert lines(head) == ['HTTP/1.1 200 OK', 'content-length: 5',
                           'connection: keep-alive']


@pytest.mark.parametrize('name', ['Transfer-Encoding', 'transfer-encoding'])
def test_the_callers_transfer_encoding_is_dropped(name):
    # a complete body has a Content-Length; both would desync the client
    head, _ = response_head(200, [(name, 'chunked'), ('X-A', 'b')], None, 5,
                            True)
    assert lines(head) == ['HTTP/1.1 200 OK', 'X-A: b', 'content-length: 5',
                           'connection: keep-alive']


@pytest.mark.parametrize('value,keep,expected', [
    ('keep-alive', True, True), ('Keep-Alive', True, True),
    ('close', True, False), ('Close', True, False), ('upgrade', True, False),
    ('keep-alive', False, False), ('close', False, False),
])
def test_the_callers_connection_can_only_close(value, keep, expected):
    head, kept = response_head(200, [('Connection', value)], None, 0, keep)
    assert kept is expected
    assert lines(head)[-1] == ('connection: keep-alive' if expected
                               else 'connection: close')
    assert sum(line.lower().startswith('connection:')
               for line in lines(head)) == 1


@pytest.mark.parametrize('status,keep', [(426, True), (426, False),
                                         (200, True), (204, False)])
def test_a_head_with_upgrade_names_it_in_connection(status, keep):
    for _ in range(2):  # built, then remembered
        head, kept = response_head(status, [('Upgrade', 'websocket')], None,
                                   7, keep)
        assert kept is keep
        assert lines(head)[-1] == ('connection: upgrade, keep-alive' if keep
                                   else 'connection: upgrade, close')
        assert 'Upgrade: websocket' in lines(head)


def test_respond_headers_with_upgrade_name_it_in_connection():
    headers, _ = respond_headers(426, {'Upgrade': 'websocket'}, None)
    headers['connection'] = 'keep-alive'   # as uhttp-server sets it
    assert named_upgrade(headers)['connection'] == 'upgrade, keep-alive'
    assert named_upgrade(headers)['connection'] == 'upgrade, keep-alive'
    given = {'upgrade': 'websocket', 'connection': 'Upgrade'}
    assert named_upgrade(dict(given)) == given
    assert named_upgrade({'connection': 'close'}) == {'connection': 'close'}
    streamed = {'upgrade': 'x'}
    assert named_upgrade(dict(streamed), streaming=True) == streamed


def test_every_connection_header_is_heeded():
    _, kept = response_head(200, [('Connection', 'keep-alive'),
                                  ('connection', 'close')], None, 0, True)
    assert kept is False


@pytest.mark.parametrize('status', [100, 101, 204, 304])
def test_bodiless_statuses_have_no_content_length(status):
    head, _ = response_head(status, [('Content-Length', '5')], None, 5, True)
    assert not any(line.lower().startswith('content-length')
                   for line in lines(head))


@pytest.mark.parametrize('status', [200, 206, 400, 500])
def test_other_statuses_have_one(status):
    head, _ = response_head(status, [], None, 7, True)
    assert 'content-length: 7' in lines(head)


def test_reset_content_says_it_has_none():
    head, _ = response_head(205, [], None, 7, True)
    assert 'content-length: 0' in lines(head)


@pytest.mark.parametrize('headers, expected', [
    ([(b'X-Request-Id', b'42')], ['X-Request-Id: 42']),
    ([('Link', ['</a>; rel=next', '</b>; rel=prev'])],
     ['Link: </a>; rel=next', 'Link: </b>; rel=prev']),
    ([('X-Count', 3), ('X-Tab', 'a\tb')], ['X-Count: 3', 'X-Tab: a\tb']),
])
def test_header_values_are_sent_as_text(headers, expected):
    head, _ = response_head(200, headers, None, 0, True)
    assert lines(head)[1:1 + len(expected)] == expected


def test_bytes_header_values_are_sent_as_those_bytes():
    head, _ = response_head(200, [
        ('X-Tag', bytearray(b'caf\xe9')), ('X-Utf', 'na\u00efve'.encode()),
        ('X-Text', 'caf\u00e9')], None, 0, True)
    assert head.split(b'\r\n')[1:4] == [
        b'X-Tag: caf\xe9', 'X-Utf: na\u00efve'.encode(),
        'X-Text: caf\u00e9'.encode()]   # text as UTF-8


@pytest.mark.parametrize('headers, message', [
    ([('X-A', 'a\x00b')], "header 'X-A' contains a control character"),
    ([('X-A', 'a\x7f')], "header 'X-A' contains a control character"),
    ([('X-A', None)], "header 'X-A' has no value"),
    ([('X A', 'v')], "header name 'X A' is not a token"),
    ([('X:A', 'v')], "header name 'X:A' is not a token"),
    ([('', 'v')], "header name '' is not a token"),
])
def test_headers_that_would_break_the_head_are_refused(headers, message):
    with pytest.raises(ValueError, match=message):
        response_head(200, headers, None, 0, True)
    with pytest.raises(ValueError, match=message):
        stream_head(200, headers, None)


def test_a_date_given_is_sent_instead_of_our_own():
    for _ in range(2):      # built, then remembered
        head, _ = response_head(200, [('Date', 'Mon, 01 Jan 2024 00:00:00 '
                                       'GMT')], None, 0, True)
        assert [line for line in head.decode().split('\r\n')
                if line.lower().startswith('date:')] == [
                    'Date: Mon, 01 Jan 2024 00:00:00 GMT']
    head = stream_head(200, [('date', 'x')], None)
    assert head.decode().lower().count('date:') == 1


def test_head_requests_get_the_length_of_the_body_they_do_not_get():
    # the glue sends the head alone; the head says how long the body is
    get, _ = response_head(200, [('X', '1')], None, 1234, True)
    assert 'content-length: 1234' in lines(get)


def test_cookies():
    head, _ = response_head(200, [], {'sid': 'abc; Path=/', 'old': None,
                                      'n': 7}, 0, True)
    assert lines(head)[1:4] == ['set-cookie: sid=abc; Path=/',
                                'set-cookie: old=; Max-Age=0',
                                'set-cookie: n=7']


def test_values_are_text_and_utf_8():
    head, _ = response_head(200, [('X-N', 12), ('X-U', 'caf\u00e9')], None, 0,
                            True)
    assert b'X-N: 12\r\n' in head and 'X-U: caf\u00e9\r\n'.encode() in head


@pytest.mark.parametrize('headers,cookies,message', [
    ([('X-A', 'a\r\nX-Injected: 1')], None, "header 'X-A' contains CR or LF"),
    ([('X-A', 'a\nb')], None, "header 'X-A' contains CR or LF"),
    ([('X-A', 'a\rb')], None, "header 'X-A' contains CR or LF"),
    ([('X-\r\nA', 'v')], None, "header 'X-\\r\\nA' contains CR or LF"),
    ([('Content-Length', '1\r\n')], None,
     "header 'Content-Length' contains CR or LF"),
    ([('Connection', 'close\n')], None, "header 'Connection' contains CR or LF"),
    ([], {'s': 'v\r\nX: 1'}, "cookie 's' contains CR or LF"),
    ([], {'s\n': 'v'}, "cookie 's\\n' contains CR or LF"),
    ([], {'s\r': None}, "cookie 's\\r' contains CR or LF"),
])
def test_cr_or_lf_is_refused(headers, cookies, message):
    with pytest.raises(ValueError) as err:
        response_head(200, headers, cookies, 0, True)
    assert str(err.value) == message
    with pytest.raises(ValueError) as err:
        stream_head(200, headers, cookies)
    assert str(err.value) == message


def test_headers_are_checked_before_cookies():
    with pytest.raises(ValueError, match='header'):
        response_head(200, [('X', 'a\n')], {'c': '\n'}, 0, True)


_NAME = st.text(alphabet='abcXYZ-_0123456789', min_size=1, max_size=10)
_TEXT = st.text(st.characters(blacklist_characters='\r\n',
                              blacklist_categories=('Cs', 'Cc')), max_size=20)


@settings(max_examples=200)
@given(st.sampled_from([200, 201, 204, 304, 404, 500, 599]),
       st.lists(st.tuples(_NAME, _TEXT), max_size=6),
       st.dictionaries(_NAME, st.none() | _TEXT, max_size=3),
       st.integers(0, 10 ** 9), st.booleans())
def test_any_head_is_well_formed(status, headers, cookies, length, keep):
    head, kept = response_head(status, headers, cookies, length, keep)
    got = lines(head)
    assert got[0] == status_line(status)[:-2]
    assert got[-1] == ('connection: keep-alive' if kept else 'connection: close')
    lengths = [line for line in got if line.lower().startswith('content-length:')]
    assert lengths == ([] if bodiless(status) else [f'content-length: {length}'])
    sent = [(n, v) for n, v in headers
            if n.lower() not in ('content-length', 'connection')]
    assert got[1:1 + len(sent)] == [f'{n}: {v}' for n, v in sent]
    assert sum(line.startswith('set-cookie: ') for line in got) == len(cookies)


@given(st.sampled_from(PROTOCOLS), st.sampled_from(ASKED),
       st.sampled_from(SERVED), st.booleans(), st.sampled_from(ANSWERS))
def test_head_and_rule_agree_on_keep_alive(protocol, asked, served, closing,
                                           answer):
    count, limit = served
    headers = [] if answer is None else [('Connection', answer)]
    _, kept = response_head(200, headers, None, 0,
                            keep_alive(protocol, asked, count, limit, closing))
    assert kept is keep_alive(protocol, asked, count, limit, closing, answer)


# -- streams -------------------------------------------------------------------

def test_a_stream_head_defaults_to_server_sent_events():
    assert lines(stream_head(200, None, None)) == [
        'HTTP/1.1 200 OK', 'content-type: text/event-stream',
        'cache-control: no-cache', 'connection: close']


def test_a_stream_head_keeps_the_callers_type_and_cache_control():
    head = stream_head(200, [('Content-Type', 'application/x-ndjson'),
                             ('CACHE-CONTROL', 'no-store'), ('X-A', '1')],
                       None)
    assert lines(head) == ['HTTP/1.1 200 OK',
                           'Content-Type: application/x-ndjson',
                           'CACHE-CONTROL: no-store', 'X-A: 1',
                           'connection: close']


@pytest.mark.parametrize('name', ['Content-Length', 'connection',
                                  'Transfer-Encoding', 'TRANSFER-ENCODING'])
def test_a_stream_head_drops_framing_headers(name):
    head = stream_head(200, [(name, 'x')], None)
    assert [line for line in lines(head) if line.lower().startswith(
        name.lower())] == ([] if name.lower() != 'connection'
                           else ['connection: close'])


def test_a_stream_head_with_cookies_and_another_status():
    head = stream_head(206, [], {'a': '1', 'b': None})
    assert lines(head) == ['HTTP/1.1 206 Partial Content',
                           'content-type: text/event-stream',
                           'cache-control: no-cache', 'set-cookie: a=1',
                           'set-cookie: b=; Max-Age=0', 'connection: close']


# -- canned answers ------------------------------------------------------------

def test_canned_answer_is_the_response_head_and_body_once_serialized():
    from uhttp.workers.http.canned import Canned
    headers = [('retry-after', '1'), ('content-type', 'application/json')]
    body = b'{"error": "busy"}'
    canned = Canned(503, headers, body)
    for keep in (True, False):
        head, _ = response_head(503, headers, None, len(body), keep,
                                dated=False)  # (it is kept: no Date)
        assert canned.bytes(keep) == head + body
        assert canned.bytes(keep, head=True) == head
    assert b'connection: keep-alive' in canned.bytes(True)
    assert b'connection: close' in canned.bytes(False)


def test_the_date_is_now_and_formatted_once_a_second():
    import email.utils
    import time
    from uhttp.workers.http import serialize
    before = time.time()
    line = serialize.date_line()
    stamp = email.utils.parsedate_to_datetime(line[6:-2]).timestamp()
    assert int(before) - 1 <= stamp <= time.time()
    assert serialize.date_line() is serialize.date_line()  # the same second
    assert serialize.http_date() == line[6:-2]
