"""Worker side over real HTTP: ApiHandler prefixes and inheritance, routes
on the worker, setup()/kwargs/worker_id, every Request field, every return
form, URL converters, 404/405/400, HEAD, keep-alive, pipelining and the
worker's on_idle()."""
import json
import re
import socket
import time

import pytest

APP = 'core_api'


# -- raw HTTP helpers -----------------------------------------------------------

def read_responses(sock, count, head=(), timeout=10):
    """Read `count` responses from `sock`; indexes in `head` answer HEAD
    (no body). Returns [(status, headers, body)]."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    buffer = b''
    replies = []
    while len(replies) < count:
        end = buffer.find(b'\r\n\r\n')
        if end >= 0:
            lines = buffer[:end].decode('latin-1').split('\r\n')
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(':')
                headers[name.strip().lower()] = value.strip()
            length = 0 if len(replies) in head else int(
                headers.get('content-length', 0))
            if len(buffer) >= end + 4 + length:
                body = buffer[end + 4:end + 4 + length]
                buffer = buffer[end + 4 + length:]
                replies.append((status, headers, body))
                continue
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(replies)} of {count} responses; "
                                 f"left over: {buffer[:300]!r}")
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed after {len(replies)} of "
                                 f"{count} responses; left over: {buffer!r}")
        buffer += chunk
    return replies, buffer


def raw_request(method, path, body=None, headers=None):
    lines = [f'{method} {path} HTTP/1.1', 'Host: 127.0.0.1']
    for name, value in (headers or {}).items():
        lines.append(f'{name}: {value}')
    if body is not None:
        lines.append(f'Content-Length: {len(body)}')
    return ('\r\n'.join(lines) + '\r\n\r\n').encode() + (body or b'')


def connect(server):
    return socket.create_connection(('127.0.0.1', server.port), timeout=10)


# -- ApiHandler -----------------------------------------------------------------

def test_handler_routes_get_pattern_prefix(module_server):
    reply = module_server.get('/api/user')
    assert reply.status == 200
    assert reply.json == {'users': [{'id': 1, 'name': 'ann'},
                                    {'id': 2, 'name': 'bob'}],
                          'login': 'alice'}
    reply = module_server.get('/api/user/2')
    assert reply.json == {'id': 2, 'name': 'bob'}
    reply = module_server.get('/api/user/77')
    assert reply.status == 404
    assert reply.json == {'error': 'no such user'}


def test_second_handler_and_delete_method(module_server):
    assert module_server.get('/api/order').json == {'orders': []}
    assert module_server.get('/api/order/5').json == {'id': 5}
    reply = module_server.request('DELETE', '/api/user/2')
    assert reply.status == 200
    assert reply.json == {'deleted': 2, 'type': 'int'}


def test_handler_pattern_without_prefix_is_not_routed(module_server):
    # '/{id:int}' on UserHandler exists only as '/api/user/{id:int}'
    assert module_server.get('/api/5').status == 404
    assert module_server.get('/api/user/x').status == 404


def test_handler_reaches_worker(module_server):
    reply = module_server.get('/api/base')
    assert reply.status == 200
    assert reply.json == {'handler': 'BaseHandler', 'path': '/api/base',
                          'same_worker': True}


def test_subclass_handler_inherits_routes_under_own_pattern(module_server):
    reply = module_server.get('/api/derived')
    assert reply.status == 200
    assert reply.json == {'handler': 'DerivedHandler', 'path': '/api/derived',
                          'same_worker': True}
    reply = module_server.get('/api/derived/9')
    assert reply.json == {'handler': 'DerivedHandler', 'id': 9}
    reply = module_server.get('/api/derived/extra')
    assert reply.json == {'handler': 'DerivedHandler', 'extra': True}


def test_parent_handler_keeps_its_routes_only(module_server):
    reply = module_server.get('/api/base/9')
    assert reply.status == 200
    assert reply.json == {'handler': 'BaseHandler', 'id': 9}
    assert module_server.get('/api/base/extra').status == 404


# -- worker lifecycle -----------------------------------------------------------

def test_worker_route_kwargs_and_worker_id(module_server):
    reply = module_server.get('/api/whoami')
    assert reply.status == 200
    info = reply.json
    assert info['kwargs'] == {'db_login': 'alice', 'flavour': 'vanilla'}
    assert info['worker_id'] in (0, 1)
    assert info['pid'] != module_server.pid
    assert info['ppid'] == module_server.pid
    assert info['setup_pid'] == info['pid']
    assert info['setup_calls'] == 1


def test_setup_runs_once_per_worker_process(module_server):
    text = module_server.wait_log(r'setup ran worker_id=\d+ pid=\d+', count=2)
    seen = {}
    for _ in range(30):
        info = module_server.get('/api/whoami').json
        assert info['setup_calls'] == 1
        assert seen.setdefault(info['worker_id'], info['pid']) == info['pid']
    text = module_server.log()
    runs = re.findall(r'setup ran worker_id=(\d+) pid=(\d+)', text)
    assert len(runs) == 2, runs
    assert {int(worker_id) for worker_id, _ in runs} == {0, 1}
    pids = {int(worker_id): int(pid) for worker_id, pid in runs}
    assert len(set(pids.values())) == 2
    assert set(pids.values()) <= set(module_server.children())
    for worker_id, pid in seen.items():
        assert pids[worker_id] == pid


# -- the Request --------------------------------------------------------------

def echo(server, method='GET', path='/api/echo/x', **kwargs):
    reply = server.request(method, path, **kwargs)
    assert reply.status == 200, reply
    return reply.json


def test_request_basic_fields(module_server):
    info = echo(module_server, 'GET', '/api/echo/widget')
    assert info['method'] == 'GET'
    assert info['path'] == '/api/echo/widget'
    assert info['path_params'] == {'name': 'widget'}
    assert isinstance(info['request_id'], int) and info['request_id'] >= 0


def test_request_ids_differ(module_server):
    ids = [echo(module_server)['request_id'] for _ in range(6)]
    assert len(set(ids)) == 6


def test_query_none_without_query_string(module_server):
    info = echo(module_server)
    assert info['query'] is None


def test_query_dict_and_repeated_keys(module_server):
    info = echo(module_server, path='/api/echo/q?page=1&name=a%20b')
    assert info['query'] == {'page': '1', 'name': 'a b'}
    assert info['path'] == '/api/echo/q'
    info = echo(module_server, path='/api/echo/q?tag=a&other=z&tag=b&tag=c')
    assert info['query'] == {'tag': ['a', 'b', 'c'], 'other': 'z'}


def test_data_none_without_body(module_server):
    info = echo(module_server, 'GET')
    assert info['data'] == {'type': 'NoneType', 'value': None}
    info = echo(module_server, 'POST')
    assert info['data'] == {'type': 'NoneType', 'value': None}


def test_json_body_dict_and_list(module_server):
    info = echo(module_server, 'POST', json_body={'a': 1, 'b': [True, None]})
    assert info['data'] == {'type': 'dict', 'value': {'a': 1, 'b': [True, None]}}
    assert info['content_type'] == 'application/json'
    info = echo(module_server, 'PUT', json_body=[1, 'x', {'y': 2}])
    assert info['data'] == {'type': 'list', 'value': [1, 'x', {'y': 2}]}
    assert info['method'] == 'PUT'


def test_json_body_with_charset_parameter(module_server):
    info = echo(module_server, 'POST', body=b'{"k": "v"}',
                headers={'Content-Type': 'application/json; charset=utf-8'})
    assert info['data'] == {'type': 'dict', 'value': {'k': 'v'}}
    assert info['content_type'].startswith('application/json')


def test_binary_body_is_bytes(module_server):
    body = bytes(range(256))
    info = echo(module_server, 'POST', body=body,
                headers={'Content-Type': 'application/octet-stream'})
    assert info['data'] == {'type': 'bytes', 'value': body.decode('latin-1')}
    assert info['content_type'] == 'application/octet-stream'


def test_form_body_is_bytes(module_server):
    info = echo(module_server, 'POST', body=b'a=1&b=two',
                headers={'Content-Type': 'application/x-www-form-urlencoded'})
    assert info['data'] == {'type': 'bytes', 'value': 'a=1&b=two'}
    assert info['content_type'] == 'application/x-www-form-urlencoded'


def test_text_body_without_content_type_is_bytes(module_server):
    info = echo(module_server, 'PATCH', body=b'hello there')
    assert info['data'] == {'type': 'bytes', 'value': 'hello there'}
    assert info['method'] == 'PATCH'


def test_json_content_type_with_empty_body_is_none(module_server):
    info = echo(module_server, 'POST', body=b'',
                headers={'Content-Type': 'application/json'})
    assert info['data'] == {'type': 'NoneType', 'value': None}


def test_large_json_body(module_server):
    payload = {'blob': 'z' * 1_000_000, 'numbers': list(range(1000))}
    info = echo(module_server, 'POST', json_body=payload)
    assert info['data'] == {'type': 'dict', 'value': payload}


def test_headers_dict_with_lower_case_keys(module_server):
    info = echo(module_server, headers={'X-Custom-Thing': 'Some Value',
                                        'ACCEPT': 'text/plain'})
    headers = info['headers']
    assert isinstance(headers, dict)
    assert all(name == name.lower() for name in headers)
    assert headers['x-custom-thing'] == 'Some Value'
    assert headers['accept'] == 'text/plain'
    assert 'host' in headers


def test_cookies_parsed_from_cookie_header(module_server):
    info = echo(module_server, headers={'Cookie': 'session=abc123; theme=dark'})
    assert info['cookies'] == {'session': 'abc123', 'theme': 'dark'}
    info = echo(module_server)
    assert info['cookies'] == {}


def test_content_type_empty_without_body(module_server):
    info = echo(module_server)
    assert not info['content_type']


# -- return forms -----------------------------------------------------------

def test_return_dict_is_json(module_server):
    reply = module_server.get('/api/ret/dict')
    assert reply.status == 200
    assert reply.headers['content-type'].startswith('application/json')
    assert reply.json == {'kind': 'dict', 'n': 1}
    assert int(reply.headers['content-length']) == len(reply.body)


def test_return_list_is_json(module_server):
    reply = module_server.get('/api/ret/list')
    assert reply.status == 200
    assert reply.headers['content-type'].startswith('application/json')
    assert reply.json == [1, 'two', {'three': 3}]


def test_return_str_is_text(module_server):
    reply = module_server.get('/api/ret/str')
    assert reply.status == 200
    assert reply.headers['content-type'].startswith('text/')
    assert reply.text == 'plain text ☃'


def test_return_bytes_is_octet_stream(module_server):
    reply = module_server.get('/api/ret/bytes')
    assert reply.status == 200
    assert reply.headers['content-type'] == 'application/octet-stream'
    assert reply.body == b'\x00\x01binary\xff'


def test_return_none_is_empty_200(module_server):
    reply = module_server.get('/api/ret/none')
    assert reply.status == 200
    assert reply.body == b''
    assert reply.headers['content-length'] == '0'


def test_return_none_keeps_connection_usable(module_server):
    sock = connect(module_server)
    try:
        sock.sendall(raw_request('GET', '/api/ret/none'))
        (first,), rest = read_responses(sock, 1)
        assert first[0] == 200 and first[2] == b''
        assert first[1]['content-length'] == '0'
        sock.sendall(raw_request('GET', '/api/ret/dict'))
        (second,), _ = read_responses(sock, 1)
        assert rest == b''
        assert second[0] == 200
        assert json.loads(second[2]) == {'kind': 'dict', 'n': 1}
    finally:
        sock.close()


def test_return_none_with_status(module_server):
    reply = module_server.get('/api/ret/none-status')
    assert reply.status == 202
    assert reply.body == b''
    assert reply.headers['content-length'] == '0'


def test_return_bytes_with_headers(module_server):
    reply = module_server.get('/api/ret/bytes-headers')
    assert reply.status == 200
    assert reply.body == b'PNG?'
    assert reply.headers['content-type'] == 'image/png'
    assert reply.headers['x-size'] == '4'


def test_return_data_and_status(module_server):
    reply = module_server.post('/api/ret/status')
    assert reply.status == 201
    assert reply.json == {'created': True}
    reply = module_server.get('/api/ret/list-status')
    assert reply.status == 410
    assert reply.json == ['gone']


def test_return_data_status_headers(module_server):
    reply = module_server.get('/api/ret/headers')
    assert reply.status == 202
    assert reply.json == {'with': 'headers'}
    assert reply.headers['x-custom'] == 'yes'
    assert reply.headers['x-other'] == '42'
    assert reply.headers['content-type'].startswith('application/json')


def test_returned_content_type_header_wins(module_server):
    reply = module_server.get('/api/ret/text-type')
    assert reply.status == 200
    assert reply.headers['content-type'] == 'text/csv'
    assert reply.body == b'a,b\n1,2\n'


# -- URL patterns ---------------------------------------------------------------

@pytest.mark.parametrize('text, value', [('3.5', 3.5), ('10.25', 10.25),
                                         ('2', 2.0)])
def test_float_converter(module_server, text, value):
    reply = module_server.get(f'/api/price/{text}')
    assert reply.status == 200
    assert reply.json == {'amount': value, 'type': 'float'}


def test_float_converter_rejects_text(module_server):
    assert module_server.get('/api/price/cheap').status == 404


def test_int_converter(module_server):
    reply = module_server.get('/api/num/12')
    assert reply.json == {'id': 12, 'type': 'int'}
    assert module_server.get('/api/num/1.5').status == 404
    assert module_server.get('/api/num/twelve').status == 404


@pytest.mark.parametrize('method', ['GET', 'POST', 'PUT', 'DELETE', 'PATCH',
                                    'OPTIONS'])
def test_route_without_methods_takes_every_method(module_server, method):
    reply = module_server.request(method, '/api/tag/hot')
    assert reply.status == 200
    assert reply.json == {'name': 'hot', 'type': 'str', 'method': method}


def test_str_param_is_one_segment(module_server):
    assert module_server.get('/api/tag/a/b').status == 404


def test_unknown_path_in_pool_is_404(module_server):
    reply = module_server.get('/api/does/not/exist')
    assert reply.status == 404
    reply = module_server.post('/api/nothing-here', json_body={'x': 1})
    assert reply.status == 404


def allow_set(reply):
    return {part.strip() for part in reply.headers['allow'].split(',')}


def test_wrong_method_is_405_with_allow(module_server):
    reply = module_server.request('PUT', '/api/user/1')
    assert reply.status == 405
    allowed = allow_set(reply)
    assert {'GET', 'DELETE'} <= allowed
    assert 'PUT' not in allowed
    reply = module_server.get('/api/only-post')
    assert reply.status == 405
    assert 'POST' in allow_set(reply)
    assert 'GET' not in allow_set(reply)


def test_malformed_json_is_400_and_worker_keeps_serving(module_server):
    for _ in range(4):  # reach both workers
        reply = module_server.post('/api/echo/x', body=b'{"a": ',
                                   headers={'Content-Type': 'application/json'})
        assert reply.status == 400
        assert 'json' in reply.text.lower()
    for _ in range(6):
        reply = module_server.post('/api/echo/x', json_body={'fine': True})
        assert reply.status == 200
        assert reply.json['data']['value'] == {'fine': True}


def test_malformed_json_on_keep_alive_connection(module_server):
    sock = connect(module_server)
    try:
        sock.sendall(raw_request('POST', '/api/echo/x', b'[1, 2',
                                 {'Content-Type': 'application/json'}))
        (bad,), _ = read_responses(sock, 1)
        assert bad[0] == 400
        assert b'json' in bad[2].lower()
        sock.sendall(raw_request('GET', '/api/ret/dict'))
        (good,), _ = read_responses(sock, 1)
        assert good[0] == 200
    finally:
        sock.close()


# -- HEAD -----------------------------------------------------------------------

def test_head_to_api_route_sends_headers_only(module_server):
    full = module_server.get('/api/ret/dict')
    sock = connect(module_server)
    try:
        sock.sendall(raw_request('HEAD', '/api/ret/dict')
                     + raw_request('GET', '/api/ret/list'))
        (head, get), rest = read_responses(sock, 2, head={0})
        assert head[0] == 200
        assert head[1]['content-type'].startswith('application/json')
        assert int(head[1]['content-length']) == len(full.body)
        assert head[2] == b''
        # the next response starts right after the HEAD headers
        assert get[0] == 200
        assert json.loads(get[2]) == [1, 'two', {'three': 3}]
        assert rest == b''
    finally:
        sock.close()


def test_head_with_http_client(module_server):
    conn = module_server.connection()
    try:
        conn.request('HEAD', '/api/ret/str')
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == b''
        assert response.getheader('content-type').startswith('text/')
        conn.request('GET', '/api/order/3')
        response = conn.getresponse()
        assert json.loads(response.read()) == {'id': 3}
    finally:
        conn.close()


# -- connections ------------------------------------------------------------------

def test_keep_alive_many_requests_one_connection(module_server):
    conn = module_server.connection()
    try:
        conn.request('GET', '/_sync/ping')
        response = conn.getresponse()
        response.read()
        sock = conn.sock
        assert sock is not None
        for number in range(150):
            kind = number % 3
            if kind == 0:
                conn.request('GET', f'/api/order/{number}')
            elif kind == 1:
                conn.request('GET', '/_sync/ping')
            else:
                conn.request('POST', '/api/echo/k', body=json.dumps([number]),
                             headers={'Content-Type': 'application/json'})
            response = conn.getresponse()
            body = json.loads(response.read())
            assert response.status == 200
            assert response.getheader('connection', '').lower() != 'close'
            if kind == 0:
                assert body == {'id': number}
            elif kind == 1:
                assert body == {'pong': True}
            else:
                assert body['data']['value'] == [number]
            assert conn.sock is sock, f"reconnected at request {number}"
    finally:
        conn.close()


def test_pipelined_requests_answered_in_order(module_server):
    requests = [
        raw_request('GET', '/api/sleep/300'),
        raw_request('GET', '/api/echo/one?i=1'),
        raw_request('POST', '/api/echo/two', b'{"n": 2}',
                    {'Content-Type': 'application/json'}),
        raw_request('GET', '/_sync/ping'),
        raw_request('GET', '/api/not-a-route'),
        raw_request('GET', '/api/sleep/50'),
        raw_request('PUT', '/api/echo/three', b'raw-bytes'),
        raw_request('GET', '/api/order/8'),
        raw_request('POST', '/api/echo/bad', b'{"broken',
                    {'Content-Type': 'application/json'}),
        raw_request('DELETE', '/api/only-post'),
        raw_request('HEAD', '/api/ret/dict'),
        raw_request('GET', '/api/echo/end'),
    ]
    sock = connect(module_server)
    try:
        sock.sendall(b''.join(requests))
        replies, rest = read_responses(sock, len(requests), head={10})
    finally:
        sock.close()
    assert rest == b''
    statuses = [status for status, _, _ in replies]
    assert statuses == [200, 200, 200, 200, 404, 200, 200, 200, 400, 405, 200,
                        200]
    assert b'json' in replies[8][2].lower()
    assert 'POST' in replies[9][1]['allow']
    assert replies[10][2] == b''
    assert replies[10][1]['content-type'].startswith('application/json')
    assert json.loads(replies[11][2])['path'] == '/api/echo/end'
    bodies = [json.loads(body) for _, _, body in replies[:8]]
    assert bodies[0] == {'slept': 300}
    assert bodies[1]['path'] == '/api/echo/one'
    assert bodies[1]['query'] == {'i': '1'}
    assert bodies[2]['path'] == '/api/echo/two'
    assert bodies[2]['data'] == {'type': 'dict', 'value': {'n': 2}}
    assert bodies[3] == {'pong': True}
    assert bodies[5] == {'slept': 50}
    assert bodies[6]['method'] == 'PUT'
    assert bodies[6]['data'] == {'type': 'bytes', 'value': 'raw-bytes'}
    assert bodies[7] == {'id': 8}


# -- worker on_idle -----------------------------------------------------------------

def test_worker_on_idle_every_heartbeat_interval(module_server):
    # heartbeat_interval=0.2 in the app: about 5 calls a second
    deadline = time.monotonic() + 10
    checked = set()
    while len(checked) < 2 and time.monotonic() < deadline:
        info = module_server.get('/api/idle').json
        if info['uptime'] >= 1.5:
            rate = info['idle_calls'] / info['uptime']
            assert 2.5 <= rate <= 6.5, info
            checked.add(info['worker_id'])
        time.sleep(0.05)
    assert checked, "no worker reported on_idle calls"
    first = module_server.get('/api/idle').json
    time.sleep(1.0)
    for _ in range(20):
        later = module_server.get('/api/idle').json
        if later['worker_id'] == first['worker_id']:
            assert later['idle_calls'] - first['idle_calls'] >= 3, (first, later)
            break
    else:
        raise AssertionError("worker %s never answered again" % first['worker_id'])
