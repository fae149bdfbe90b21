"""uhttp.workers.http.parse: request heads and chunked bodies, without sockets.

Every refusal is checked with its status and its exact message (the text a
client gets in the 400/431/501/505 body), heads with CRLF and with LF
endings, and the chunked decoder fed in one piece and byte by byte.
"""

import pytest
from hypothesis import given, settings, strategies as st

from uhttp.workers.http import parse
from uhttp.workers.http.parse import (
    CHUNKED, LENGTH, NO_BODY, ChunkedBody, ProtocolError, RequestHead)


def head(*lines, eol=b'\r\n', query=None):
    """parse_head() of the lines joined with `eol`, ended by an empty line."""
    return parse.parse_head(eol.join(lines) + eol + eol, query)


def refusal(block, query=None):
    with pytest.raises(ProtocolError) as err:
        parse.parse_head(block, query)
    return err.value.status, err.value.message


def refused(*lines, eol=b'\r\n', query=None):
    return refusal(eol.join(lines) + eol + eol, query)


def fields(request):
    return {name: getattr(request, name) for name in RequestHead.__slots__}


GET = b'GET / HTTP/1.1'
HOST = b'Host: example.com'


# -- ProtocolError -------------------------------------------------------------

def test_protocol_error_carries_status_and_message():
    err = ProtocolError(400, "Bad thing")
    assert (err.status, err.message) == (400, "Bad thing")
    assert str(err) == '400: Bad thing'


def test_protocol_error_without_message():
    err = ProtocolError(501)
    assert (err.status, err.message, str(err)) == (501, None, '501')


def test_methods_and_protocols():
    assert parse.METHODS == {'CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS',
                             'PATCH', 'POST', 'PUT', 'TRACE'}
    assert parse.PROTOCOLS == {'HTTP/1.0', 'HTTP/1.1'}


# -- head_end ------------------------------------------------------------------

@pytest.mark.parametrize('buffer,end', [
    (b'GET / HTTP/1.1\r\nHost: a\r\n\r\n', 27),
    (b'GET / HTTP/1.1\nHost: a\n\n', 24),
    (b'GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT', 27),
    (b'GET / HTTP/1.1\nHost: a\n\nGET / HTTP/1.1\r\n\r\n', 24),
    (b'GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\n\n', 18),
    (b'GET / HTTP/1.1\r\nHost: a\n\n', 25),      # mixed endings
    (b'GET / HTTP/1.1\nHost: a\r\n\r\n', 26),
    (b'\n\n', 2),
    (b'\r\n\r\n', 4),
])
def test_head_end_finds_the_first_empty_line(buffer, end):
    assert parse.head_end(buffer) == end


@pytest.mark.parametrize('buffer', [
    b'', b'GET / HTTP/1.1', b'GET / HTTP/1.1\r\n', b'GET / HTTP/1.1\r\nHost: a\r\n',
    b'GET / HTTP/1.1\r\n\r', b'GET / HTTP/1.1\r\r\n\r',
    b'GET / HTTP/1.1\r\nX: a\r\rb\r\n',          # a bare CR ends no line
])
def test_head_end_is_minus_one_while_incomplete(buffer):
    assert parse.head_end(buffer) == -1


def test_head_end_resumes_a_few_bytes_before_what_was_scanned():
    buffer = bytearray(b'GET / HTTP/1.1\r\nHost: a\r\n\r')
    assert parse.head_end(buffer) == -1
    scanned = len(buffer)
    buffer += b'\n'
    assert parse.head_end(buffer, scanned) == len(buffer)


def test_head_end_does_not_look_before_the_resume_point():
    # what was scanned already holds no empty line: only the new bytes count
    buffer = b'\n\nGET / HTTP/1.1\r\n\r\n'
    assert parse.head_end(buffer, 10) == len(buffer)


@pytest.mark.parametrize('eol', [b'\r\n', b'\n'])
def test_head_end_fed_byte_by_byte(eol):
    data = eol.join([GET, HOST, b'X: 1', b'']) + eol + b'BODY'
    expected = parse.head_end(data)
    buffer = bytearray()
    scanned = 0
    for byte in data:
        buffer.append(byte)
        end = parse.head_end(buffer, scanned)
        if end >= 0:
            break
        scanned = len(buffer)
    assert end == expected == len(data) - 4


def test_head_end_431_when_the_limit_is_reached_without_an_end():
    with pytest.raises(ProtocolError) as err:
        parse.head_end(b'GET / HTTP/1.1\r\nX: ' + b'a' * 81, limit=100)
    assert err.value.status == 431
    assert err.value.message == "Headers too large: 100 bytes (max 100)"


def test_head_end_no_431_below_the_limit_or_with_an_end_within_it():
    assert parse.head_end(b'x' * 99, limit=100) == -1
    block = b'GET / HTTP/1.1\r\n' + b'X: ' + b'a' * 77 + b'\r\n\r\n'
    assert parse.head_end(block, limit=100) == len(block) == 100
    # longer than the limit: refused even though its end is there
    with pytest.raises(parse.ProtocolError):
        parse.head_end(block + b'GET', limit=99)


@given(st.binary(max_size=300), st.integers(0, 300))
def test_head_end_never_raises_without_a_limit(data, scanned):
    end = parse.head_end(data, scanned)
    assert end == -1 or 2 <= end <= len(data)


@given(st.binary(max_size=200))
def test_head_end_byte_by_byte_matches_one_piece(data):
    whole = parse.head_end(data)
    buffer = bytearray()
    scanned = 0
    found = -1
    for byte in data:
        buffer.append(byte)
        found = parse.head_end(buffer, scanned)
        if found >= 0:
            break
        scanned = len(buffer)
    assert found == whole


# -- asks_head -----------------------------------------------------------------

@pytest.mark.parametrize('block,expected', [
    (b'HEAD / HTTP/1.1\r\n\r\n', True),
    (b'\r\nHEAD / HTTP/1.1\r\n\r\n', True),
    (b'HEAD  bad\r\n\r\n', True),
    (b'GET / HTTP/1.1\r\n\r\n', False),
    (b'head / HTTP/1.1\r\n\r\n', False),
    (b'HEADER / HTTP/1.1\r\n\r\n', False),
])
def test_asks_head(block, expected):
    assert parse.asks_head(block) is expected


# -- parse_head: a good head ---------------------------------------------------

def test_a_plain_get():
    request = head(GET, HOST)
    assert fields(request) == {
        'method': 'GET', 'target': '/', 'protocol': 'HTTP/1.1', 'path': '/',
        'raw_query': None, 'query': None, 'headers': {'host': 'example.com'},
        'repeated': None, 'framing': NO_BODY, 'content_length': None,
        'expect_continue': False}
    assert 'GET' in repr(request)


@pytest.mark.parametrize('eol', [b'\r\n', b'\n'])
def test_lf_and_crlf_heads_parse_alike(eol):
    lines = (b'POST /a/b?x=1 HTTP/1.1', HOST, b'Content-Length: 3',
             b'X-Many: 1', b'x-many: 2')
    assert fields(head(*lines, eol=eol)) == fields(head(*lines))


def test_mixed_line_endings():
    request = parse.parse_head(b'GET / HTTP/1.1\nHost: a\r\nX: b\n\r\n')
    assert request.headers == {'host': 'a', 'x': 'b'}


@pytest.mark.parametrize('before', [b'\r\n', b'\n'])
def test_one_empty_line_before_the_request_line_is_skipped(before):
    request = parse.parse_head(before + GET + b'\r\n' + HOST + b'\r\n\r\n')
    assert request.method == 'GET' and request.headers == {'host': 'example.com'}


@pytest.mark.parametrize('method', sorted(parse.METHODS))
def test_every_method(method):
    target = b'*' if method == 'OPTIONS' else b'/'
    request = head(method.encode() + b' ' + target + b' HTTP/1.1', HOST)
    assert request.method == method


def test_http_1_0_needs_no_host():
    request = head(b'GET / HTTP/1.0')
    assert request.protocol == 'HTTP/1.0' and request.headers == {}


def test_header_names_lower_case_values_stripped():
    request = head(GET, b'HoSt:example.com', b'X-Pad: \t v a l \t ', b'X-Empty:',
                   b'X-Colon: a:b: c')
    assert request.headers == {'host': 'example.com', 'x-pad': 'v a l',
                               'x-empty': '', 'x-colon': 'a:b: c'}


def test_every_token_character_is_a_name():
    name = b"!#$%&'*+-.^_`|~09azAZ"
    request = head(GET, HOST, name + b': v')
    assert request.headers[name.decode().lower()] == 'v'


def test_repeated_headers_are_joined_with_a_comma():
    request = head(GET, HOST, b'Accept: a', b'accept: b', b'ACCEPT: c')
    assert request.headers['accept'] == 'a, b, c'
    assert request.repeated == {'accept': ['a', 'b', 'c']}


def test_repeated_cookies_are_joined_with_a_semicolon():
    request = head(GET, HOST, b'Cookie: a=1', b'Cookie: b=2')
    assert request.headers['cookie'] == 'a=1; b=2'
    assert request.repeated == {'cookie': ['a=1', 'b=2']}


def test_no_repeats_no_repeated_dict():
    assert head(GET, HOST, b'A: 1', b'B: 2').repeated is None


# -- parse_head: refusals, each with its status and message --------------------

@pytest.mark.parametrize('line', [
    b'get / HTTP/1.1',            # lower-case method
    b'GET  / HTTP/1.1',           # two spaces
    b'GET / HTTP/1.1 ',           # trailing space
    b' GET / HTTP/1.1',
    b'GET /',                     # HTTP/0.9
    b'GET / HTTP/1',
    b'GET / HTTP/11',
    b'GET / http/1.1',
    b'GET\t/ HTTP/1.1',
    b'GET /a b HTTP/1.1',
    b'GET /\x00 HTTP/1.1',
    b'GET /\x7f HTTP/1.1',
    b'GET /\xc3\xa9 HTTP/1.1',    # non-ASCII target
    b'GET / HTTP/1.1\r',          # bare CR before the CRLF
    b'G\rET / HTTP/1.1',
])
def test_malformed_request_line(line):
    assert refused(line, HOST) == (
        400, f"Malformed request line: {line.decode('utf-8', 'replace')!r}")


def test_empty_head_is_a_malformed_request_line():
    assert refusal(b'\r\n\r\n') == (400, "Malformed request line: ''")
    assert refusal(b'\n\n') == (400, "Malformed request line: ''")


def test_a_long_request_line_is_quoted_to_200_bytes():
    line = b'GET /' + b'a' * 300 + b' HTTP/1.1 x'
    status, message = refused(line)
    assert status == 400
    assert message == f"Malformed request line: {line[:200].decode()!r}"


@pytest.mark.parametrize('line', [
    b'Bad Header: x',             # space in the name
    b'X : v',                     # space before the colon
    b' folded',                   # obs-fold
    b'\tfolded',
    b'NoColon',
    b': empty name',
    b'X: a\x00b',                 # NUL
    b'X: a\rb',                   # bare CR
    b'X: a\x7fb',                 # DEL
    b'X: a\x01b',
    b'X\x00: v',
    b'X\xc3\xa9: v',              # non-ASCII name
])
def test_malformed_header_line(line):
    assert refused(GET, HOST, line) == (
        400, f"Malformed header line: {line.decode('utf-8', 'replace')!r}")


def test_obs_fold_after_a_field_is_refused_not_joined():
    assert refused(GET, b'X: a', b'  b', HOST) == (
        400, "Malformed header line: '  b'")


def test_first_bad_line_is_the_one_named():
    assert refused(GET, b'A: ok', b'B C', b'D\x00') == (
        400, "Malformed header line: 'B C'")


@pytest.mark.parametrize('value', [b'caf\xc3\xa9', b'\xff', b'\x80x'])
def test_non_ascii_header_value(value):
    line = b'X-Name: ' + value
    assert refused(GET, HOST, line) == (
        400, "Invalid non-ASCII characters in header: "
             f"{line.decode('utf-8', 'replace')}")


def test_a_block_without_its_empty_line_is_a_malformed_head():
    assert refusal(b'GET / HTTP/1.1\r\nHost: a\r\n') == (
        400, "Malformed request head")


@pytest.mark.parametrize('method', [b'FOO', b'PROPFIND', b'BREW'])
def test_unknown_method_is_501(method):
    assert refused(method + b' / HTTP/1.1', HOST) == (501, None)


@pytest.mark.parametrize('protocol', [b'HTTP/2.0', b'HTTP/0.9', b'HTTP/1.2',
                                      b'HTTP/3.0'])
def test_unknown_protocol_is_505(protocol):
    assert refused(b'GET / ' + protocol, HOST) == (505, None)


def test_method_is_checked_before_protocol():
    assert refused(b'FOO / HTTP/2.0')[0] == 501


@pytest.mark.parametrize('name', [b'Content-Length', b'Host'])
def test_duplicate_content_length_or_host(name):
    lines = [GET, name + b': 1', name.lower() + b': 1']
    if name != b'Host':
        lines.insert(1, HOST)
    assert refused(*lines) == (400, f"Duplicate {name.decode().lower()} header")


def test_http_1_1_without_host():
    assert refused(GET) == (400, "Host header is required for HTTP/1.1")


# -- targets -------------------------------------------------------------------

@pytest.mark.parametrize('target,path,raw_query', [
    (b'/', '/', None),
    (b'/a/b', '/a/b', None),
    (b'/a?', '/a', b''),
    (b'/a?x=1&y', '/a', b'x=1&y'),
    (b'/a?x=%zz', '/a', b'x=%zz'),        # the query is the query parser's
    (b'/a?b?c', '/a', b'b?c'),
    (b'http://example.com/x/y?q=1', '/x/y', b'q=1'),
    (b'HTTP://EXAMPLE.COM:8080/x', '/x', None),
    (b'https://user@example.com/x', '/x', None),
    (b'HtTpS://h/x', '/x', None),
    (b'http://example.com', '/', None),
    (b'http://example.com?q', '/', b'q'),
    (b'http://', '/', None),
    (b'http://h/a%20b', '/a b', None),
])
def test_targets(target, path, raw_query):
    request = head(b'GET ' + target + b' HTTP/1.1', HOST)
    assert (request.target, request.path, request.raw_query) == (
        target.decode(), path, raw_query)


def test_asterisk_for_options():
    request = head(b'OPTIONS * HTTP/1.1', HOST)
    assert (request.target, request.path) == ('*', '*')


@pytest.mark.parametrize('method', [b'GET', b'HEAD', b'POST', b'DELETE'])
def test_asterisk_for_other_methods(method):
    assert refused(method + b' * HTTP/1.1', HOST) == (
        400, "Invalid request target: '*'")


@pytest.mark.parametrize('target', [b'a/b', b'example.com/x', b'ftp://h/x',
                                    b'https:/x', b'http:x', b'**', b'?x', b'?'])
def test_other_target_forms(target):
    assert refused(b'GET ' + target + b' HTTP/1.1', HOST) == (
        400, f"Invalid request target: {target.split(b'?')[0].decode()!r}")


def test_long_bad_target_is_quoted_to_200_characters():
    target = b'x' * 300
    assert refused(b'GET ' + target + b' HTTP/1.1', HOST) == (
        400, f"Invalid request target: {'x' * 200!r}")


@pytest.mark.parametrize('target,path', [
    (b'/a%20b', '/a b'),
    (b'/a+b', '/a+b'),                    # '+' is a plus sign in a path
    (b'/a%2Bb', '/a+b'),
    (b'/a%2bb', '/a+b'),
    (b'/%252e', '/%2e'),                  # decoded once
    (b'/%C3%A9t%C3%A9', '/\u00e9t\u00e9'),
    (b'/%c3%a9', '/\u00e9'),
    (b'/a%2Fb', '/a/b'),
    (b'/%00', '/\x00'),                   # static refuses NUL later
    (b'/%41%42', '/AB'),
    (b'/%e2%82%ac', '/\u20ac'),
    (b'/no-percent', '/no-percent'),
])
def test_path_percent_decoding(target, path):
    assert head(b'GET ' + target + b' HTTP/1.1', HOST).path == path


@pytest.mark.parametrize('target', [
    b'/%zz', b'/%4', b'/%', b'/a%', b'/%g0', b'/%0g', b'/%%41',
    b'/%C3%28',        # invalid UTF-8
    b'/%ff', b'/%80', b'/%C3',
    b'/%ED%A0%80',     # a surrogate
    b'http://h/%zz',
])
def test_bad_path_encoding(target):
    assert refused(b'GET ' + target + b' HTTP/1.1', HOST) == (
        400, "Invalid URL path encoding")


def test_percent_in_query_does_not_touch_the_path():
    request = head(b'GET /a?%zz HTTP/1.1', HOST)
    assert request.path == '/a' and request.raw_query == b'%zz'


def test_unquote_path_directly():
    assert parse.unquote_path('/a%20b+c') == '/a b+c'
    with pytest.raises(ProtocolError):
        parse.unquote_path('/%zz')


def test_origin_path_directly():
    assert parse.origin_path('http://h/x', 'GET') == '/x'
    assert parse.origin_path('*', 'OPTIONS') == '*'
    with pytest.raises(ProtocolError):
        parse.origin_path('*', 'GET')


# -- the query parser ----------------------------------------------------------

def test_query_is_built_by_the_given_parser():
    calls = []

    def parse_query(raw):
        calls.append(raw)
        return {'raw': raw}

    request = head(b'GET /a?x=1 HTTP/1.1', HOST, query=parse_query)
    assert request.query == {'raw': b'x=1'} and calls == [b'x=1']


def test_query_parser_runs_for_an_empty_query_only_after_a_mark():
    calls = []
    head(b'GET /a? HTTP/1.1', HOST, query=calls.append)
    head(b'GET /a HTTP/1.1', HOST, query=calls.append)
    assert calls == [b'']


def test_without_a_parser_the_query_stays_none():
    request = head(b'GET /a?x=1 HTTP/1.1', HOST)
    assert request.query is None and request.raw_query == b'x=1'


def test_a_bad_query_is_refused_before_the_header_fields():
    def parse_query(raw):
        raise ProtocolError(400, "Invalid query string encoding")

    # the duplicate Host would be refused too; the query speaks first
    assert refused(b'GET /?%zz HTTP/1.1', HOST, HOST, query=parse_query) == (
        400, "Invalid query string encoding")


def test_the_query_parser_sees_nothing_of_a_bad_target():
    def parse_query(raw):
        raise AssertionError("called")

    assert refused(b'GET /%zz?x HTTP/1.1', HOST, query=parse_query)[0] == 400
    assert refused(b'FOO /?x HTTP/1.1', HOST, query=parse_query)[0] == 501


def test_with_uhttp_servers_query_parser():
    import uhttp.server as server  # the parser the connection glue passes
    request = head(b'GET /a?x=1&y=a+b&x=2&z HTTP/1.1', HOST,
                   query=server.parse_query)
    assert request.query == {'x': ['1', '2'], 'y': 'a b', 'z': None}


# -- body framing --------------------------------------------------------------

@pytest.mark.parametrize('lines,framing,length,expect', [
    ((), NO_BODY, None, False),
    ((b'Expect: 100-continue',), NO_BODY, None, False),
    ((b'Content-Length: 5',), LENGTH, 5, False),
    ((b'Content-Length: 0',), LENGTH, 0, False),
    ((b'Content-Length: 007',), LENGTH, 7, False),
    ((b'Content-Length:  12 ',), LENGTH, 12, False),
    ((b'Content-Length: 99999999999999999999',), LENGTH, 99999999999999999999,
     False),
    ((b'Content-Length: 5', b'Expect: 100-continue'), LENGTH, 5, True),
    ((b'Content-Length: 5', b'Expect: 100-Continue'), LENGTH, 5, True),
    ((b'Content-Length: 0', b'Expect: 100-continue'), LENGTH, 0, False),
    ((b'Content-Length: 5', b'Expect: 200-ok'), LENGTH, 5, False),
    ((b'Transfer-Encoding: chunked',), CHUNKED, None, False),
    ((b'Transfer-Encoding: Chunked',), CHUNKED, None, False),
    ((b'Transfer-Encoding:  CHUNKED ',), CHUNKED, None, False),
    ((b'Transfer-Encoding: chunked', b'Expect: 100-continue'), CHUNKED, None,
     True),
])
def test_framing(lines, framing, length, expect):
    request = head(b'POST / HTTP/1.1', HOST, *lines)
    assert (request.framing, request.content_length, request.expect_continue) \
        == (framing, length, expect)


@pytest.mark.parametrize('value', [b'+5', b'-1', b'5.0', b'0x5', b'', b'5 5',
                                   b'1e3', b'five', b'5,5'])
def test_content_length_must_be_digits(value):
    assert refused(b'POST / HTTP/1.1', HOST, b'Content-Length: ' + value) == (
        400, f"Wrong content length {value.decode().strip()}")


@pytest.mark.parametrize('value', [b'gzip, chunked', b'x, chunked',
                                   b'deflate, gzip, chunked'])
def test_codings_before_a_final_chunked_are_501(value):
    assert refused(b'POST / HTTP/1.1', HOST, b'Transfer-Encoding: ' + value) \
        == (501, "Transfer-Encoding other than chunked")


@pytest.mark.parametrize('value', [b'gzip', b'chunked, gzip', b'identity',
                                   b'chunked;q=1', b'x', b'chunked, chunked',
                                   b'gzip, chunked, chunked', b',', b' , ,'])
def test_no_final_chunked_or_chunked_twice_is_400(value):
    # RFC 9112 6.3: no final chunked, no length anyone can tell
    assert refused(b'POST / HTTP/1.1', HOST, b'Transfer-Encoding: ' + value) \
        == (400, "Transfer-Encoding must end with one chunked")


@pytest.mark.parametrize('value', [b'chunked,', b', chunked', b' ,chunked , ',
                                   b'Chunked'])
def test_empty_list_items_are_ignored(value):
    # RFC 9110 5.6.1: a recipient ignores empty list elements
    request = head(b'POST / HTTP/1.1', HOST, b'Transfer-Encoding: ' + value)
    assert request.framing == CHUNKED


def test_repeated_transfer_encoding_is_400():
    assert refused(b'POST / HTTP/1.1', HOST, b'Transfer-Encoding: chunked',
                   b'Transfer-Encoding: chunked') == (
        400, "Transfer-Encoding must end with one chunked")


def test_transfer_encoding_with_content_length():
    for lines in ((b'Transfer-Encoding: chunked', b'Content-Length: 5'),
                  (b'Content-Length: 5', b'Transfer-Encoding: chunked'),
                  (b'Content-Length: x', b'Transfer-Encoding: gzip')):
        assert refused(b'POST / HTTP/1.1', HOST, *lines) == (
            400, "Both Transfer-Encoding and Content-Length")


def test_transfer_encoding_in_http_1_0():
    assert refused(b'POST / HTTP/1.0', b'Transfer-Encoding: chunked',
                   b'Content-Length: 5') == (
        400, "Transfer-Encoding in an HTTP/1.0 request")


def test_host_is_checked_before_the_framing():
    assert refused(b'POST / HTTP/1.1', b'Transfer-Encoding: gzip') == (
        400, "Host header is required for HTTP/1.1")


def test_body_framing_directly():
    assert parse.body_framing('HTTP/1.0', {}) == (NO_BODY, None, False)
    assert parse.body_framing('HTTP/1.1', {'host': 'h', 'content-length': '3'}) \
        == (LENGTH, 3, False)


def test_100_continue_is_asked_in_http_1_1_only():
    # RFC 9110 10.1.1: an HTTP/1.0 request's 100-continue is ignored
    headers = {'host': 'h', 'content-length': '3', 'expect': '100-continue'}
    assert parse.body_framing('HTTP/1.1', headers) == (LENGTH, 3, True)
    assert parse.body_framing('HTTP/1.0', headers) == (LENGTH, 3, False)


# -- parse_head over arbitrary input ------------------------------------------

_TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefXYZ", min_size=1,
                 max_size=12)
_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7e)
                 | st.just('\t'), max_size=30)


@settings(max_examples=300)
@given(st.lists(st.tuples(_TOKEN, _VALUE), max_size=8),
       st.sampled_from([b'\r\n', b'\n']))
def test_any_well_formed_fields_parse_like_the_model(pairs, eol):
    pairs = [(name, value) for name, value in pairs
             if name.lower() not in ('host', 'content-length',
                                     'transfer-encoding')]
    lines = [GET, HOST] + [f'{n}:{v}'.encode() for n, v in pairs]
    request = head(*lines, eol=eol)
    expected = {'host': 'example.com'}
    for name, value in pairs:
        key, value = name.lower(), value.strip()
        if key in expected:
            value = expected[key] + ('; ' if key == 'cookie' else ', ') + value
        expected[key] = value
    assert request.headers == expected


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_arbitrary_bytes_parse_or_raise_protocol_error(data):
    block = data + b'\r\n\r\n'
    try:
        request = parse.parse_head(block, lambda raw: raw)
    except ProtocolError as err:
        assert err.status in (400, 501, 505)
    else:
        assert request.method in parse.METHODS


@settings(max_examples=300)
@given(st.lists(st.sampled_from([
    b'GET', b'FOO', b' ', b'/', b'/%41', b'%', b'*', b'?', b'q', b'http://h',
    b'HTTP/1.1', b'HTTP/1.0', b'\r\n', b'\n', b'\r', b'\x00', b'\xc3\xa9',
    b'Host: h', b'Content-Length: 1', b'Transfer-Encoding: chunked', b':',
    b'\t', b'X']), max_size=14))
def test_arbitrary_pieces_parse_or_raise_protocol_error(pieces):
    try:
        parse.parse_head(b''.join(pieces) + b'\n\n')
    except ProtocolError as err:
        assert err.status in (400, 501, 505)


# -- ChunkedBody ---------------------------------------------------------------

def decode(data, limit=1 << 20, step=None):
    decoder = ChunkedBody(limit)
    buffer = bytearray()
    pieces = [data] if step is None else [
        data[i:i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        buffer += piece
        used = decoder.feed(buffer)
        del buffer[:used]
        if decoder.done:
            break
    return decoder, bytes(buffer)


def chunked_refusal(data, limit=1 << 20, step=None):
    with pytest.raises(ProtocolError) as err:
        decode(data, limit, step)
    return err.value.status, err.value.message


STEPS = [None, 1, 2, 3, 7]


@pytest.mark.parametrize('step', STEPS)
def test_whole_body_and_rest_left_for_the_next_request(step):
    decoder, rest = decode(b'3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\nNEXT', step=step)
    assert decoder.done and decoder.body() == b'abcde'
    assert rest == (b'NEXT' if step is None else rest)


def test_the_rest_stays_in_the_buffer():
    decoder = ChunkedBody(100)
    buffer = bytearray(b'1\r\na\r\n0\r\n\r\nGET / HTTP/1.1\r\n')
    used = decoder.feed(buffer)
    assert decoder.done and buffer[used:] == b'GET / HTTP/1.1\r\n'


def test_feeding_after_done_uses_nothing():
    decoder, _ = decode(b'0\r\n\r\n')
    assert decoder.feed(bytearray(b'1\r\na\r\n')) == 0


@pytest.mark.parametrize('step', STEPS)
@pytest.mark.parametrize('data,body', [
    (b'0\r\n\r\n', b''),
    (b'0\n\n', b''),
    (b'5\nhello\n0\n\n', b'hello'),
    (b'5\r\nhello\n0\r\n\n', b'hello'),
    (b'A\r\n0123456789\r\n0\r\n\r\n', b'0123456789'),
    (b'a\r\n0123456789\r\n0\r\n\r\n', b'0123456789'),
    (b'0005\r\nhello\r\n0\r\n\r\n', b'hello'),
    (b'000000000000000a\r\n0123456789\r\n0\r\n\r\n', b'0123456789'),
    (b'5 \r\nhello\r\n0\r\n\r\n', b'hello'),
    (b'5\t;a=b\r\nhello\r\n0\r\n\r\n', b'hello'),
    (b'5;a=b;c="d e"\r\nhello\r\n0;last\r\n\r\n', b'hello'),
    (b'5;\r\nhello\r\n0\r\n\r\n', b'hello'),
    (b'2\r\n\r\n\r\n0\r\n\r\n', b'\r\n'),                 # data may hold CRLF
    (b'1\r\n\x00\r\n0\r\n\r\n', b'\x00'),
    (b'0\r\nTrailer: v\r\n\r\n', b''),
    (b'0\r\nA: 1\r\nb: \t2\r\nC:\r\n\r\n', b''),
    (b'3\r\nabc\r\n0\r\nX: caf\xc3\xa9\r\n\r\n', b'abc'),  # obs-text trailer
])
def test_chunked_bodies(data, body, step):
    decoder, rest = decode(data, step=step)
    assert decoder.done and decoder.body() == body and rest == b''


@pytest.mark.parametrize('data', [b'5\r\nab', b'5\r\nhello', b'5\r\nhello\r\n',
                                  b'0\r\n', b'0\r\nT: v\r\n', b'', b'5'])
def test_incomplete_body_is_not_done(data):
    decoder, _ = decode(data)
    assert not decoder.done


@pytest.mark.parametrize('step', STEPS)
@pytest.mark.parametrize('line', [
    b'x', b'', b' 5', b'-5', b'+5', b'0x5', b'5 5', b'5;\x00', b'5;a\x7f',
    b'\xff', b'5\x00',
])
def test_bad_chunk_size_line(line, step):
    assert chunked_refusal(line + b'\r\nhello\r\n0\r\n\r\n', step=step) == (
        400, f"Chunked body: bad chunk size line {line[:40]!r}")


def test_bad_chunk_size_line_is_quoted_to_40_bytes():
    line = b'z' * 100
    assert chunked_refusal(line + b'\r\n') == (
        400, f"Chunked body: bad chunk size line {line[:40]!r}")


def test_chunk_size_of_17_hex_digits_is_refused():
    line = b'0' * 16 + b'1'
    assert chunked_refusal(line + b'\r\nx\r\n0\r\n\r\n') == (
        400, f"Chunked body: bad chunk size line {line!r}")


@pytest.mark.parametrize('step', STEPS)
@pytest.mark.parametrize('data', [b'1\r\nab\r\n', b'2\r\nabc\r\n0\r\n\r\n',
                                  b'3\r\nabc0\r\n\r\n'])
def test_data_longer_than_its_chunk_size(data, step):
    assert chunked_refusal(data, step=step) == (
        400, "Chunked body: data longer than its chunk size")


@pytest.mark.parametrize('data', [b'5\r\nhelloXX', b'5\r\nhello\rX',
                                  b'1\r\nab'])
def test_data_longer_than_its_chunk_size_is_refused_without_its_newline(data):
    # no line end follows: the refusal cannot wait for one (a client that
    # then stops sending would otherwise get a 408 long after)
    with pytest.raises(ProtocolError) as info:
        ChunkedBody(1000).feed(bytearray(data))
    assert (info.value.status, info.value.message) == (
        400, "Chunked body: data longer than its chunk size")


@pytest.mark.parametrize('data', [b'5\r\nhello', b'5\r\nhello\r',
                                  b'5\r\nhello\n', b'5\r\nhello\r\n'])
def test_the_end_of_chunk_data_may_come_in_pieces(data):
    body = ChunkedBody(1000)
    assert body.feed(bytearray(data)) <= len(data)
    assert not body.done


@pytest.mark.parametrize('step', STEPS)
@pytest.mark.parametrize('trailer', [b'no colon', b'Bad Name: v', b' folded',
                                     b'X: a\x00', b'X: a\rb'])
def test_malformed_trailer(trailer, step):
    assert chunked_refusal(b'0\r\n' + trailer + b'\r\n\r\n', step=step) == (
        400, "Chunked body: malformed trailer")


@pytest.mark.parametrize('step', STEPS)
def test_body_over_the_limit_is_413(step):
    assert chunked_refusal(b'8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n',
                           limit=10, step=step) == (413, None)


def test_body_at_the_limit_is_accepted():
    decoder, _ = decode(b'5\r\n12345\r\n5\r\n67890\r\n0\r\n\r\n', limit=10)
    assert decoder.done and decoder.body() == b'1234567890'


def test_the_limit_is_checked_on_the_size_line_before_the_data():
    decoder = ChunkedBody(10)
    with pytest.raises(ProtocolError) as err:
        decoder.feed(bytearray(b'ffffffffffffffff\r\n'))
    assert err.value.status == 413


def test_a_line_too_long_is_refused():
    assert chunked_refusal(b'f' * 5000) == (400, "Chunked body: line too long")
    assert chunked_refusal(b'0\r\nX: ' + b'v' * 5000) == (
        400, "Chunked body: line too long")


def test_a_line_up_to_the_maximum_waits():
    decoder, _ = decode(b'0\r\nX: ' + b'v' * (ChunkedBody.MAX_LINE - 3))
    assert not decoder.done


def _encode(body, sizes, extensions, trailers, eol):
    """A chunked encoding of `body`, cut into chunks of `sizes` (cycled)."""
    out = []
    pos = 0
    index = 0
    while pos < len(body):
        size = sizes[index % len(sizes)]
        chunk = body[pos:pos + size]
        ext = extensions[index % len(extensions)] if extensions else b''
        out.append(b'%x%s%s%s%s' % (len(chunk), ext, eol, chunk, eol))
        pos += size
        index += 1
    out.append(b'0' + eol)
    out.extend(name + b': ' + value + eol for name, value in trailers)
    out.append(eol)
    return b''.join(out)


_EXT = st.sampled_from([b'', b';a', b';a=b', b';a="q"', b' ;x', b'\t;y=1'])
_TRAILER = st.tuples(st.sampled_from([b'X', b'Trailer-Name', b'a-b']),
                     st.binary(max_size=8).map(
                         lambda v: bytes(c for c in v if 0x21 <= c <= 0x7e)))


@settings(max_examples=300)
@given(body=st.binary(max_size=300),
       sizes=st.lists(st.integers(1, 70), min_size=1, max_size=5),
       extensions=st.lists(_EXT, max_size=3),
       trailers=st.lists(_TRAILER, max_size=3),
       eol=st.sampled_from([b'\r\n', b'\n']),
       cuts=st.lists(st.integers(0, 400), max_size=8),
       rest=st.sampled_from([b'', b'GET / HTTP/1.1\r\n\r\n']))
def test_round_trip_any_body_any_split(body, sizes, extensions, trailers, eol,
                                       cuts, rest):
    data = _encode(body, sizes, extensions, trailers, eol) + rest
    decoder = ChunkedBody(len(body))
    buffer = bytearray()
    points = sorted(set(min(cut, len(data)) for cut in cuts)) + [len(data)]
    prev = 0
    for point in points:
        buffer += data[prev:point]
        prev = point
        used = decoder.feed(buffer)
        del buffer[:used]
        if decoder.done:
            break
    assert decoder.done and decoder.body() == body
    buffer += data[prev:]
    assert bytes(buffer) == rest


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(1, 50))
def test_arbitrary_bytes_decode_or_raise_protocol_error(data, limit):
    try:
        decode(data, limit=limit, step=3)
    except ProtocolError as err:
        assert err.status in (400, 413)


def test_head_end_counts_only_the_first_limit_bytes():
    head = b'GET / HTTP/1.1\r\nHost: a\r\n\r\n'
    # a head within the limit, with a pipelined request after it
    assert parse.head_end(head + head, 0, len(head)) == len(head)
    # a head one byte over the limit is refused, however much came after
    with pytest.raises(parse.ProtocolError) as caught:
        parse.head_end(head + head, 0, len(head) - 1)
    assert caught.value.status == 431
    assert parse.head_end(head[:-1], 0, len(head)) == -1
