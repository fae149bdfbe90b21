"""messages.py: Request, Response, DEFERRED, bodies, SSE events, checks."""

import copy
import json
import pickle
import types

import pytest

import uhttp.workers as workers
from uhttp.workers import messages as msg
from uhttp.workers.messages import (
    DEFERRED, RejectRequest, Request, Response, ResponseError, check_cookies,
    check_headers, decode_body, encode_body, format_event)


# -- Request ---------------------------------------------------------------------

class TestRequest:
    def test_defaults(self):
        request = Request()
        assert request.request_id == -1
        assert request.method == 'GET'
        assert request.path == '/'
        assert request.query is None
        assert request.data is None
        assert request.headers == {}
        assert request.path_params == {}
        assert request.content_type == ''
        assert request.cookies == {}
        assert request.remote_address is None
        assert request.context is None

    def test_request_id_none_means_minus_one(self):
        assert Request(request_id=None).request_id == -1

    def test_fields(self):
        request = Request(
            request_id=4, method='POST', path='/p', query={'a': '1'},
            data={'x': 1}, headers={'x-h': 'v'}, remote_address=('1.2.3.4', 5),
            context={'user': 'u'}, path_params={'id': 3})
        assert request.request_id == 4
        assert request.method == 'POST'
        assert request.path == '/p'
        assert request.query == {'a': '1'}
        assert request.data == {'x': 1}
        assert request.headers == {'x-h': 'v'}
        assert request.remote_address == ('1.2.3.4', 5)
        assert request.context == {'user': 'u'}
        assert request.path_params == {'id': 3}

    def test_default_containers_not_shared(self):
        first, second = Request(), Request()
        first.headers['x'] = '1'
        first.path_params['y'] = 2
        assert second.headers == {}
        assert second.path_params == {}

    def test_content_type_from_headers(self):
        request = Request(headers={'content-type': 'application/json'})
        assert request.content_type == 'application/json'

    def test_explicit_content_type_wins(self):
        request = Request(headers={'content-type': 'text/plain'},
                          content_type='application/json')
        assert request.content_type == 'application/json'

    def test_content_type_setter(self):
        request = Request()
        request.content_type = 'text/csv'
        assert request.content_type == 'text/csv'

    def test_cookies_parsed(self):
        request = Request(headers={'cookie': 'a=1; b=two;c = 3 '})
        assert request.cookies == {'a': '1', 'b': 'two', 'c': '3'}

    def test_cookie_quoted_values(self):
        request = Request(headers={'cookie': 'q="quoted value"; e=""; h="x'})
        assert request.cookies['q'] == 'quoted value'
        assert request.cookies['e'] == ''
        assert request.cookies['h'] == '"x'

    def test_cookie_duplicates_first_wins(self):
        request = Request(headers={'cookie': 'a=1; a=2; b=3'})
        assert request.cookies == {'a': '1', 'b': '3'}

    def test_cookie_value_with_equals(self):
        request = Request(headers={'cookie': 'tok=abc==; x=1'})
        assert request.cookies == {'tok': 'abc==', 'x': '1'}

    def test_cookie_junk_ignored(self):
        request = Request(headers={'cookie': 'junk; =v; ;a=1'})
        assert request.cookies == {'a': '1'}

    def test_cookies_parsed_lazily(self):
        request = Request(headers={'cookie': 'a=1'})
        assert request._cookies is None
        request.headers['cookie'] = 'a=2'
        assert request.cookies == {'a': '2'}
        # parsed once: later header changes do not re-parse
        request.headers['cookie'] = 'a=3'
        assert request.cookies == {'a': '2'}

    def test_pickle_round_trip(self):
        request = Request(
            request_id=-1, method='POST', path='/internal/save',
            query={'q': '1'}, data={'image': b'\x00\x01', 'n': [1, 2]},
            headers={'cookie': 'a=1', 'content-type': 'text/plain'},
            content_type='application/json', remote_address=('10.0.0.1', 80),
            context={'k': 'v'}, path_params={'id': 5})
        copy_ = pickle.loads(pickle.dumps(request))
        assert copy_ is not request
        assert isinstance(copy_, Request)
        for name in ('request_id', 'method', 'path', 'query', 'data',
                     'headers', 'content_type', 'remote_address', 'context',
                     'path_params', 'cookies'):
            assert getattr(copy_, name) == getattr(request, name), name

    def test_pickle_every_protocol(self):
        request = Request(request_id=3, path='/x')
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            again = pickle.loads(pickle.dumps(request, protocol))
            assert (again.request_id, again.path) == (3, '/x')

    def test_unpickled_request_has_no_worker(self):
        again = pickle.loads(pickle.dumps(Request()))
        with pytest.raises(RuntimeError):
            again.respond({'x': 1})

    def test_respond_outside_worker(self):
        with pytest.raises(RuntimeError):
            Request().respond()
        with pytest.raises(RuntimeError):
            Request().response_stream()

    def test_stream_calls_outside_worker(self):
        for call in (lambda r: r.send_event(data='x'),
                     lambda r: r.send_chunk(b'x'), lambda r: r.send_ndjson({}),
                     lambda r: r.response_stream_end()):
            with pytest.raises(RuntimeError, match='a worker received'):
                call(Request())

    def test_open_state(self):
        request = Request()
        assert request.is_open
        assert not request.is_streaming

    def test_public_export(self):
        assert workers.Request is Request
        assert workers.Response is Response


# -- RejectRequest, DEFERRED ------------------------------------------------------

class TestRejectRequest:
    def test_defaults(self):
        reject = RejectRequest()
        assert reject.data == {'error': 'Rejected'}
        assert reject.status == 403
        assert isinstance(reject, Exception)

    def test_custom(self):
        reject = RejectRequest(data={'error': 'forbidden'}, status=401)
        assert reject.data == {'error': 'forbidden'}
        assert reject.status == 401

    def test_positional(self):
        reject = RejectRequest('nope', 429)
        assert (reject.data, reject.status) == ('nope', 429)

    def test_raise_and_catch(self):
        with pytest.raises(workers.RejectRequest) as info:
            raise workers.RejectRequest(status=418)
        assert info.value.status == 418
        assert info.value.data == {'error': 'Rejected'}

    def test_default_data_not_shared(self):
        first = RejectRequest()
        first.data['extra'] = 1
        assert RejectRequest().data == {'error': 'Rejected'}


class TestDeferred:
    def test_singleton(self):
        assert type(DEFERRED)() is DEFERRED
        assert workers.DEFERRED is DEFERRED

    def test_survives_pickle(self):
        for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
            assert pickle.loads(pickle.dumps(DEFERRED, protocol)) is DEFERRED

    def test_survives_copy(self):
        assert copy.copy(DEFERRED) is DEFERRED
        assert copy.deepcopy(DEFERRED) is DEFERRED
        assert copy.deepcopy({'x': DEFERRED})['x'] is DEFERRED

    def test_repr(self):
        assert repr(DEFERRED) == 'DEFERRED'


# -- bodies -----------------------------------------------------------------------------

class TestBodies:
    @pytest.mark.parametrize('data', [
        {'a': 1, 'b': [1, 2, {'c': None}]}, [1, 'two', 3.5, True, None], 'text',
        'ünïcødé ✓', '', 0, 3.25, True, b'\x00\x01\xff', b''])
    def test_round_trip(self, data):
        body, kind, content_type = encode_body(data)
        assert isinstance(body, bytes)
        assert decode_body(body, kind) == data
        assert type(decode_body(body, kind)) is type(data)

    def test_none(self):
        body, kind, content_type = encode_body(None)
        assert (body, kind, content_type) == (b'', msg.BODY_NONE, None)
        assert decode_body(body, kind) is None

    def test_content_types(self):
        assert encode_body({})[2] == 'application/json'
        assert encode_body('x')[2].startswith('text/html')
        assert 'utf-8' in encode_body('x')[2].lower()
        assert encode_body(b'x')[2] == 'application/octet-stream'

    def test_bytes_like(self):
        assert encode_body(bytearray(b'ab'))[:2] == (b'ab', msg.BODY_BYTES)
        assert encode_body(memoryview(b'cd'))[:2] == (b'cd', msg.BODY_BYTES)

    def test_str_is_utf8(self):
        assert encode_body('é')[0] == 'é'.encode('utf-8')

    def test_unserializable(self):
        with pytest.raises(ResponseError):
            encode_body(object())
        with pytest.raises(ResponseError):
            encode_body({'s': {1, 2}})

    def test_nan_and_infinity_are_no_json(self):
        # json.dumps would write NaN / Infinity: not JSON, which a client
        # parsing application/json refuses
        for value in (float('nan'), float('inf'), -float('inf')):
            with pytest.raises(ResponseError, match='not JSON compliant'):
                encode_body({'ratio': value})
            with pytest.raises(ValueError):
                format_event(data=[value])
        assert encode_body({'ratio': 1.5})[0] == b'{"ratio": 1.5}'

    def test_circular(self):
        data = []
        data.append(data)
        with pytest.raises(ResponseError):
            encode_body(data)


# -- SSE ---------------------------------------------------------------------------------

def parse_event(raw):
    """(fields as list of (name, value), comments) of one SSE event."""
    assert isinstance(raw, bytes)
    text = raw.decode('utf-8')
    assert text.endswith('\n\n')
    body = text[:-2]
    assert '\n\n' not in body
    fields = []
    for line in body.split('\n'):
        assert '\r' not in line
        name, _, value = line.partition(':')
        if value.startswith(' '):
            value = value[1:]
        fields.append((name, value))
    return fields


class TestFormatEvent:
    def test_data_only(self):
        assert format_event(data='hello') == b'data: hello\n\n'

    def test_all_fields(self):
        fields = parse_event(format_event(
            data='payload', event='update', event_id='42', retry=1500))
        assert sorted(fields) == sorted([
            ('id', '42'), ('event', 'update'), ('retry', '1500'),
            ('data', 'payload')])

    def test_int_id(self):
        assert ('id', '7') in parse_event(format_event(data='x', event_id=7))

    def test_dict_as_json(self):
        fields = parse_event(format_event(data={'a': 1, 'b': [1, 2]}))
        assert len(fields) == 1
        assert fields[0][0] == 'data'
        assert json.loads(fields[0][1]) == {'a': 1, 'b': [1, 2]}

    def test_list_as_json(self):
        fields = parse_event(format_event(data=[1, 2]))
        assert json.loads(fields[0][1]) == [1, 2]

    def test_bytes_data(self):
        assert format_event(data=b'raw') == b'data: raw\n\n'

    @pytest.mark.parametrize('data', [
        'one\ntwo\nthree', 'one\r\ntwo\r\nthree', 'one\rtwo\rthree',
        'one\r\ntwo\nthree', 'one\rtwo\r\nthree'])
    def test_multi_line_data(self, data):
        fields = parse_event(format_event(data=data))
        assert fields == [('data', 'one'), ('data', 'two'), ('data', 'three')]

    def test_blank_lines_inside_data(self):
        fields = parse_event(format_event(data='a\n\nb'))
        assert fields == [('data', 'a'), ('data', ''), ('data', 'b')]

    def test_trailing_newline_in_data(self):
        fields = parse_event(format_event(data='a\n'))
        assert fields == [('data', 'a'), ('data', '')]

    def test_empty_string_data_is_an_event(self):
        assert format_event(data='') == b'data: \n\n'

    @pytest.mark.parametrize('value', ['a\nb', 'a\rb', 'a\r\nb', '\n'])
    def test_cr_lf_in_event_name_raises(self, value):
        with pytest.raises(ValueError):
            format_event(data='x', event=value)

    @pytest.mark.parametrize('value', ['1\n2', '1\r', '\r\n'])
    def test_cr_lf_in_id_raises(self, value):
        with pytest.raises(ValueError):
            format_event(data='x', event_id=value)

    @pytest.mark.parametrize('field', ['event_id', 'event'])
    def test_nul_in_id_or_name_raises(self, field):
        # A browser ignores an id holding NUL (its Last-Event-ID would
        # never come back): refused where it is written, not lost.
        with pytest.raises(ValueError, match='NUL'):
            format_event(data='x', **{field: 'a\0b'})

    @pytest.mark.parametrize('retry', [-1, 'x', 1.5, True])
    def test_bad_retry_raises(self, retry):
        with pytest.raises(ValueError):
            format_event(data='x', retry=retry)

    def test_empty_event_is_a_comment(self):
        raw = format_event()
        assert raw.endswith(b'\n\n')
        assert all(line.startswith(b':') for line in raw.split(b'\n') if line)

    def test_retry_only(self):
        assert parse_event(format_event(retry=0)) == [('retry', '0')]


# -- header and cookie checks -------------------------------------------------------

class TestCheckHeaders:
    def test_empty(self):
        assert check_headers(None) is None
        assert check_headers({}) is None
        assert check_headers([]) is None

    def test_dict(self):
        assert check_headers({'X-A': '1', 'X-B': 2}) == [
            ('X-A', '1'), ('X-B', '2')]

    def test_a_repeated_name_is_joined_at_its_first_place(self):
        assert check_headers([('Link', 'a'), ('X', '1'), ('link', 'b')]) == [
            ('Link', 'a, b'), ('X', '1')]

    def test_set_cookie_stays_one_line_each(self):
        assert check_headers([('Set-Cookie', 'a=1'), ('Set-Cookie', 'b=2'),
                              ('Vary', ['Accept', 'Cookie'])]) == [
            ('Set-Cookie', 'a=1'), ('Set-Cookie', 'b=2'),
            ('Vary', 'Accept, Cookie')]

    def test_as_they_are_sent(self):
        checked = check_headers({b'X-Request-Id': b'42', 'X-Tag': bytearray(
            b'caf\xe9')})
        assert checked[0] == ('X-Request-Id', '42')
        # bytes kept byte for byte (sent with 'surrogateescape')
        assert checked[1][0] == 'X-Tag'
        assert checked[1][1].encode('utf-8', 'surrogateescape') == b'caf\xe9'
        assert check_headers({'Link': ['</a>', '</b>']}) == [
            ('Link', '</a>, </b>')]

    def test_any_mapping(self):
        assert check_headers(types.MappingProxyType({'X-A': '1'})) == [
            ('X-A', '1')]

    @pytest.mark.parametrize('headers', [
        {'X': 'a\r\nb'}, {'X': 'a\nb'}, {'X': 'a\rb'}, {'X\n': 'v'},
        {'X:Y': 'v'}, {'X Y': 'v'}, {'': 'v'}, [('X',)], [('a', 'b', 'c')],
        [5], 42, {'X': None}, {'X': 'a\x00b'}, {'X': ['a', 'b\x7f']}])
    def test_bad(self, headers):
        with pytest.raises(ResponseError):
            check_headers(headers)


class TestCheckCookies:
    def test_empty(self):
        assert check_cookies(None) is None
        assert check_cookies({}) is None

    def test_values(self):
        assert check_cookies({'a': '1', 'b': 2, 'gone': None}) == {
            'a': '1', 'b': '2', 'gone': None}

    @pytest.mark.parametrize('cookies', [
        {'a': 'v\r\n'}, {'a': '\nv'}, {'a': 'v\r'}, {'a\n': 'v'},
        {'a=b': 'v'}, {'a;b': 'v'}, {'': 'v'}, [('a', 'b')], 'a=b'])
    def test_bad(self, cookies):
        with pytest.raises(ResponseError):
            check_cookies(cookies)


# -- Response ----------------------------------------------------------------------------

class TestResponse:
    def test_plain(self):
        response = Response(None, data={'a': 1}, status=201,
                            headers={'X': '1'}, cookies={'c': 'v'})
        assert response.request_id is None
        assert response.data == {'a': 1}
        assert response.status == 201
        assert response.headers == {'X': '1'}
        assert response.cookies == {'c': 'v'}
        assert json.loads(response.body) == {'a': 1}

    def test_defaults(self):
        response = Response()
        assert response.status == 200
        assert response.data is None
        assert response.body == b''

    def test_from_wire_decodes_lazily(self):
        response = msg.response_from_wire(
            5, 200, [('content-type', 'application/json')], b'{"a": [1]}',
            msg.BODY_JSON, None)
        assert response._kind == msg.BODY_JSON   # not decoded yet
        assert response.request_id == 5
        assert response.headers == {'content-type': 'application/json'}
        assert response.body == b'{"a": [1]}'
        first = response.data
        assert first == {'a': [1]}
        assert response.data is first            # decoded once

    @pytest.mark.parametrize('data', ['text ✓', b'\x00bin', None, [1, 2]])
    def test_from_wire_kinds(self, data):
        body, kind, _ = encode_body(data)
        response = msg.response_from_wire(1, 200, None, body, kind, None)
        assert response.data == data
        assert response.headers == {}

    def test_from_wire_bad_json_falls_back_to_bytes(self):
        response = msg.response_from_wire(1, 200, None, b'{oops', msg.BODY_JSON,
                                       None)
        assert response.data == b'{oops'

    def test_data_setter(self):
        response = msg.response_from_wire(1, 200, None, b'{"a": 1}',
                                       msg.BODY_JSON, None)
        response.data = {'b': 2}
        assert response.data == {'b': 2}

    def test_data_setter_renews_the_body(self):
        response = Response(None, data={'a': 1})
        assert json.loads(response.body) == {'a': 1}
        response.data = {'b': 2}
        assert json.loads(response.body) == {'b': 2}
        wired = msg.response_from_wire(1, 200, None, b'{"a": 1}',
                                       msg.BODY_JSON, None)
        wired.data = 'text'
        assert wired.body == b'text'
