"""worker.py: class-level checks, handler tables, result and body handling."""

import json

import pytest

import uhttp.workers as workers
from uhttp.workers import messages as msg
from uhttp.workers.routing import class_routes
from uhttp.workers.messages import response_message as _response_message
from uhttp.workers.messages import split_result as _split_result
from uhttp.workers.workerloop import _parse_body
from uhttp.workers.workerloop import build_table as _build_table


def pattern_texts(cls):
    return sorted((name, pattern.text, methods)
                  for name, _, pattern, methods in class_routes(cls))


def headers_of(message):
    return {name.lower(): value for name, value in (message[3] or [])}


# -- class creation ---------------------------------------------------------------

class TestWorkerClassCreation:
    def test_routes_compiled_at_class_creation(self):
        class ItemWorker(workers.Worker):
            @workers.api('/api/items', 'GET')
            def list_items(self, request):
                return []

            @workers.api('/api/item/{id:int}', 'GET', 'DELETE')
            def item(self, request):
                return {}

        assert pattern_texts(ItemWorker) == [
            ('item', '/api/item/{id:int}', ('GET', 'DELETE')),
            ('list_items', '/api/items', ('GET',))]

    def test_bad_pattern_raises_at_class_creation(self):
        with pytest.raises(ValueError) as info:
            class BadWorker(workers.Worker):  # noqa: F841
                @workers.api('/item/{id:number}', 'GET')
                def get_item(self, request):
                    pass
        message = str(info.value)
        assert '/item/{id:number}' in message
        assert 'BadWorker.get_item' in message

    def test_unbalanced_pattern_raises_at_class_creation(self):
        with pytest.raises(ValueError) as info:
            class BadWorker(workers.Worker):  # noqa: F841
                @workers.api('/item/{id', 'GET')
                def get_item(self, request):
                    pass
        assert '/item/{id' in str(info.value)

    def test_handlers_must_be_a_list(self):
        class Handler(workers.ApiHandler):
            PATTERN = '/h'

        with pytest.raises(TypeError) as info:
            class BadWorker(workers.Worker):  # noqa: F841
                HANDLERS = Handler
        assert 'HANDLERS' in str(info.value)

    @pytest.mark.parametrize('item', [
        object, 'Handler', 5, None, workers.Worker])
    def test_handlers_must_be_api_handler_subclasses(self, item):
        with pytest.raises(TypeError) as info:
            class BadWorker(workers.Worker):  # noqa: F841
                HANDLERS = [item]
        assert 'HANDLERS' in str(info.value)

    def test_handler_instance_rejected(self):
        class Handler(workers.ApiHandler):
            PATTERN = '/h'

        with pytest.raises(TypeError):
            class BadWorker(workers.Worker):  # noqa: F841
                HANDLERS = [Handler(None)]

    def test_two_handlers_on_one_route_are_refused(self):
        # only the first in the table would ever run: a silent dead route
        class Users(workers.ApiHandler):
            PATTERN = '/api/user'

            @workers.api('', 'GET')
            def list_users(self, request):
                return []

        class People(workers.ApiHandler):
            PATTERN = '/api'

            @workers.api('/user', 'GET')
            def people(self, request):
                return []

            @workers.api('/user', 'POST')
            def add(self, request):
                return {}

        with pytest.raises(ValueError) as info:
            class BadWorker(workers.Worker):  # noqa: F841
                HANDLERS = [Users, People]
        assert "'/api/user' (GET)" in str(info.value)
        assert 'People.people' in str(info.value)
        assert 'Users.list_users' in str(info.value)
        with pytest.raises(ValueError) as info:
            class OwnToo(workers.Worker):  # noqa: F841
                HANDLERS = [Users]

                @workers.api('/api/user', 'GET')
                def users(self, request):
                    return []
        assert 'OwnToo.users' in str(info.value)

        class Fine(workers.Worker):  # other methods, other prefixes
            HANDLERS = [Users]

            @workers.api('/api/user', 'POST')
            def add(self, request):
                return {}

        class Admin(Users):
            PATTERN = '/admin/user'

        class AlsoFine(workers.Worker):
            HANDLERS = [Users, Admin]

        assert Fine and AlsoFine

    def test_a_handler_listed_twice_is_refused(self):
        class Handler(workers.ApiHandler):
            PATTERN = '/h'

        with pytest.raises(TypeError) as info:
            class BadWorker(workers.Worker):  # noqa: F841
                HANDLERS = [Handler, Handler]
        assert 'Handler more than once' in str(info.value)

    def test_subclass_inherits_and_overrides_routes(self):
        class Base(workers.Worker):
            @workers.api('/a', 'GET')
            def a(self, request):
                pass

            @workers.api('/b', 'GET')
            def b(self, request):
                pass

        class Child(Base):
            @workers.api('/b2', 'POST')
            def b(self, request):
                pass

        assert pattern_texts(Child) == [
            ('a', '/a', ('GET',)), ('b', '/b2', ('POST',))]
        assert pattern_texts(Base) == [
            ('a', '/a', ('GET',)), ('b', '/b', ('GET',))]


class TestApiHandlerClassCreation:
    def test_pattern_prefixes_routes(self):
        class UserHandler(workers.ApiHandler):
            PATTERN = '/api/user'

            @workers.api('', 'GET')
            def list_users(self, request):
                pass

            @workers.api('/{id:int}', 'GET')
            def get_user(self, request):
                pass

        assert pattern_texts(UserHandler) == [
            ('get_user', '/api/user/{id:int}', ('GET',)),
            ('list_users', '/api/user', ('GET',))]

    def test_bad_pattern_raises_at_class_creation(self):
        with pytest.raises(ValueError) as info:
            class BadHandler(workers.ApiHandler):  # noqa: F841
                PATTERN = '/api/x'

                @workers.api('/{id:bogus}', 'GET')
                def get(self, request):
                    pass
        assert '/api/x/{id:bogus}' in str(info.value)
        assert 'BadHandler.get' in str(info.value)

    def test_bad_prefix_pattern_raises(self):
        with pytest.raises(ValueError) as info:
            class BadHandler(workers.ApiHandler):  # noqa: F841
                PATTERN = '/api/{x'

                @workers.api('/y', 'GET')
                def get(self, request):
                    pass
        assert '/api/{x/y' in str(info.value)

    def test_pattern_must_be_str(self):
        with pytest.raises(TypeError) as info:
            class BadHandler(workers.ApiHandler):  # noqa: F841
                PATTERN = 5
        assert 'PATTERN' in str(info.value)

    def test_pattern_must_start_with_slash(self):
        with pytest.raises(ValueError) as info:
            class BadHandler(workers.ApiHandler):  # noqa: F841
                PATTERN = 'api/user'
        assert 'api/user' in str(info.value)

    def test_subclass_gets_parent_routes_under_its_own_prefix(self):
        class UserHandler(workers.ApiHandler):
            PATTERN = '/api/user'

            @workers.api('', 'GET')
            def list_all(self, request):
                return {'kind': type(self).__name__}

            @workers.api('/{id:int}', 'GET')
            def get_one(self, request):
                return {'id': request.path_params['id']}

        class AdminHandler(UserHandler):
            PATTERN = '/api/admin'

            @workers.api('/stats', 'GET')
            def stats(self, request):
                pass

        assert pattern_texts(AdminHandler) == [
            ('get_one', '/api/admin/{id:int}', ('GET',)),
            ('list_all', '/api/admin', ('GET',)),
            ('stats', '/api/admin/stats', ('GET',))]
        # the parent keeps its own prefix
        assert pattern_texts(UserHandler) == [
            ('get_one', '/api/user/{id:int}', ('GET',)),
            ('list_all', '/api/user', ('GET',))]

    def test_subclass_without_pattern_keeps_parent_prefix(self):
        class Parent(workers.ApiHandler):
            PATTERN = '/p'

            @workers.api('/x')
            def x(self, request):
                pass

        class Child(Parent):
            pass

        assert pattern_texts(Child) == [('x', '/p/x', ())]


# -- _build_table on an instance --------------------------------------------------------

class TestBuildTable:
    def make_worker(self):
        class UserHandler(workers.ApiHandler):
            PATTERN = '/api/user'

            @workers.api('', 'GET')
            def list_users(self, request):
                return {'users': [], 'owner': self.worker.kwargs.get('tag')}

            @workers.api('/{id:int}', 'GET')
            def get_user(self, request):
                return {'id': request.path_params['id']}

            @workers.api('/{id:int}', 'DELETE')
            def delete_user(self, request):
                return {'deleted': request.path_params['id']}

        class AdminHandler(UserHandler):
            PATTERN = '/api/admin'

        class MyWorker(workers.Worker):
            HANDLERS = [UserHandler, AdminHandler]

            @workers.api('/api/ping')
            def ping(self, request):
                return {'pong': self.worker_id}

        return MyWorker(worker_id=3, pool_name='p', tag='t1')

    def test_worker_outside_a_pool(self):
        worker = self.make_worker()
        assert worker.worker_id == 3
        assert worker.pool_name == 'p'
        assert worker.kwargs == {'tag': 't1'}
        assert worker._accepting is True

    def test_worker_routes(self):
        worker = self.make_worker()
        table = _build_table(worker)
        handler, params = table.lookup('POST', '/api/ping')
        assert params == {}
        assert handler(msg.Request()) == {'pong': 3}

    def test_handler_routes_bound_to_handler_with_worker(self):
        worker = self.make_worker()
        table = _build_table(worker)
        handler, params = table.lookup('GET', '/api/user')
        assert handler.__self__.worker is worker
        assert handler(msg.Request()) == {'users': [], 'owner': 't1'}
        handler, params = table.lookup('GET', '/api/user/7')
        assert params == {'id': 7}
        assert handler(msg.Request(path_params=params)) == {'id': 7}

    def test_handler_whose_init_skips_super_still_has_its_worker(self):
        class CacheHandler(workers.ApiHandler):
            PATTERN = '/api/cache'

            def __init__(self, worker):     # no super().__init__(worker)
                self.cache = {'size': worker.kwargs['size']}

            @workers.api('', 'GET')
            def show(self, request):
                return {'cache': self.cache, 'tag': self.worker.kwargs['tag']}

        class EarlyHandler(workers.ApiHandler):
            PATTERN = '/api/early'

            def __init__(self, worker):     # self.worker before super()
                self.tag = self.worker.kwargs['tag']
                super().__init__(worker)

            @workers.api('', 'GET')
            def show(self, request):
                return {'tag': self.tag}

        class CacheWorker(workers.Worker):
            HANDLERS = [CacheHandler, EarlyHandler]

        worker = CacheWorker(size=5, tag='t')
        table = _build_table(worker)
        handler, _ = table.lookup('GET', '/api/cache')
        assert handler.__self__.worker is worker
        assert handler(msg.Request()) == {'cache': {'size': 5}, 'tag': 't'}
        handler, _ = table.lookup('GET', '/api/early')
        assert handler(msg.Request()) == {'tag': 't'}

    def test_inherited_handler_routes_under_subclass_prefix(self):
        worker = self.make_worker()
        table = _build_table(worker)
        handler, params = table.lookup('DELETE', '/api/admin/9')
        assert params == {'id': 9}
        assert type(handler.__self__).__name__ == 'AdminHandler'
        assert handler(msg.Request(path_params=params)) == {'deleted': 9}
        handler, _ = table.lookup('GET', '/api/admin')
        assert type(handler.__self__).__name__ == 'AdminHandler'

    def test_405_and_404(self):
        table = _build_table(self.make_worker())
        assert table.lookup('POST', '/api/user/1') == (
            None, ['DELETE', 'GET', 'HEAD'])
        assert table.lookup('GET', '/api/users') == (None, None)

    def test_head_served_by_get_handler(self):
        table = _build_table(self.make_worker())
        handler, params = table.lookup('HEAD', '/api/user/2')
        assert params == {'id': 2}
        assert handler.__name__ == 'get_user'

    def test_default_pool_name_is_class_name(self):
        class Plain(workers.Worker):
            pass
        assert Plain().pool_name == 'Plain'
        assert len(_build_table(Plain())) == 0

    def test_bad_log_name_falls_back(self, capsys):
        class Named(workers.Worker):
            LOG_NAME = '{nope}-{worker_id}'

        worker = Named(worker_id=1, pool_name='p')
        assert worker.log.name == 'p[1]'
        err = capsys.readouterr().err
        assert 'LOG_NAME' in err

    def test_custom_log_name(self):
        class Named(workers.Worker):
            LOG_NAME = '{pool_name}/{worker_id}'

        assert Named(worker_id=2, pool_name='pool').log.name == 'pool/2'


# -- _split_result -------------------------------------------------------------------------

class TestSplitResult:
    def test_plain_data(self):
        assert _split_result({'a': 1}) == ({'a': 1}, 200, None)
        assert _split_result(None) == (None, 200, None)
        assert _split_result('x') == ('x', 200, None)

    def test_data_status(self):
        assert _split_result(({'e': 1}, 404)) == ({'e': 1}, 404, None)

    def test_data_status_headers(self):
        assert _split_result(('x', 201, {'X-A': '1'})) == ('x', 201, {'X-A': '1'})

    def test_list_is_data_not_status(self):
        assert _split_result([{'a': 1}, 404]) == ([{'a': 1}, 404], 200, None)

    def test_tuple_without_int_status_is_data(self):
        assert _split_result(('a', 'b')) == (('a', 'b'), 200, None)

    def test_bool_is_not_a_status(self):
        assert _split_result(('a', True)) == (('a', True), 200, None)

    def test_other_tuple_lengths_are_data(self):
        assert _split_result((1,)) == ((1,), 200, None)
        assert _split_result((1, 200, None, 4)) == ((1, 200, None, 4), 200, None)


# -- _response_message ------------------------------------------------------------------------

class TestResponseMessage:
    def test_dict(self):
        message = _response_message(7, {'a': 1}, 200)
        assert message[0] == msg.W_RESPONSE
        assert message[1] == 7
        assert message[2] == 200
        assert json.loads(message[4]) == {'a': 1}
        assert message[5] == msg.BODY_JSON
        assert headers_of(message)['content-type'] == 'application/json'
        assert message[6] is None

    def test_list(self):
        message = _response_message(1, [1, 'x'], 200)
        assert json.loads(message[4]) == [1, 'x']
        assert headers_of(message)['content-type'] == 'application/json'

    def test_str(self):
        message = _response_message(1, 'héllo', 200)
        assert message[4] == 'héllo'.encode('utf-8')
        assert message[5] == msg.BODY_TEXT
        assert headers_of(message)['content-type'].startswith('text/')

    def test_bytes(self):
        message = _response_message(1, b'\x00\xff', 200)
        assert message[4] == b'\x00\xff'
        assert message[5] == msg.BODY_BYTES
        assert headers_of(message)['content-type'] == 'application/octet-stream'

    def test_none(self):
        message = _response_message(1, None, 204)
        assert message[2] == 204
        assert message[4] == b''
        assert message[5] == msg.BODY_NONE
        assert 'content-type' not in headers_of(message)

    def test_int(self):
        message = _response_message(1, 42, 200)
        assert json.loads(message[4]) == 42
        assert message[5] == msg.BODY_JSON

    def test_data_status_tuple_via_split(self):
        data, status, headers = _split_result(({'error': 'x'}, 404))
        message = _response_message(1, data, status, headers)
        assert message[2] == 404
        assert json.loads(message[4]) == {'error': 'x'}

    def test_headers_kept_and_content_type_added(self):
        data, status, headers = _split_result(('ok', 201, {'X-Thing': 'v'}))
        message = _response_message(1, data, status, headers)
        assert message[2] == 201
        found = headers_of(message)
        assert found['x-thing'] == 'v'
        assert found['content-type'].startswith('text/')

    def test_explicit_content_type_not_overridden(self):
        message = _response_message(
            1, 'a,b', 200, {'Content-Type': 'text/csv'})
        types = [value for name, value in message[3]
                 if name.lower() == 'content-type']
        assert types == ['text/csv']

    def test_header_values_become_str(self):
        message = _response_message(1, None, 200, {'X-Count': 5})
        assert headers_of(message)['x-count'] == '5'

    def test_response_object(self):
        response = workers.Response(
            None, data={'made': True}, status=201, headers={'X-A': '1'},
            cookies={'session': 'abc'})
        message = _response_message(9, response, 200)
        assert message[1] == 9
        assert message[2] == 201
        assert json.loads(message[4]) == {'made': True}
        assert headers_of(message)['x-a'] == '1'
        assert message[6] == {'session': 'abc'}

    def test_response_object_defaults(self):
        message = _response_message(2, workers.Response(data='t'), 500)
        assert message[2] == 200
        assert message[4] == b't'

    def test_cookies(self):
        message = _response_message(1, None, 200, None,
                                    {'a': '1', 'gone': None})
        assert message[6] == {'a': '1', 'gone': None}

    @pytest.mark.parametrize('headers', [
        {'X-A': 'v\r\nSet-Cookie: evil=1'}, {'X-A': 'v\nx'}, {'X-A': 'v\rx'},
        {'X-A\r\nEvil': 'v'}, {'Bad:Name': 'v'}, {'': 'v'}])
    def test_bad_headers_raise(self, headers):
        with pytest.raises(msg.ResponseError):
            _response_message(1, 'x', 200, headers)

    @pytest.mark.parametrize('cookies', [
        {'a': 'v\r\nX: y'}, {'a': 'v\n'}, {'a\r': 'v'}, {'a=b': 'v'},
        {'': 'v'}, ['a', 'b']])
    def test_bad_cookies_raise(self, cookies):
        with pytest.raises(msg.ResponseError):
            _response_message(1, 'x', 200, None, cookies)

    def test_response_object_with_bad_header_raises(self):
        response = workers.Response(data='x', headers={'X': 'a\nb'})
        with pytest.raises(msg.ResponseError):
            _response_message(1, response, 200)

    @pytest.mark.parametrize('status', [99, 600, 0, -200, '200', 200.0, True,
                                        None, 100, 101, 199])
    def test_bad_status_raises(self, status):
        # (an interim 1xx as the answer: the client would take the next
        # response on the connection for this request's)
        with pytest.raises(msg.ResponseError):
            _response_message(1, 'x', status)

    @pytest.mark.parametrize('status', [700, 99, '201', None])
    def test_response_object_with_bad_status_raises(self, status):
        with pytest.raises(msg.ResponseError):
            _response_message(1, workers.Response(data='x', status=status), 200)

    def test_unserializable_data_raises(self):
        with pytest.raises(msg.ResponseError):
            _response_message(1, {'x': object()}, 200)

    def test_response_error_is_value_error(self):
        assert issubclass(msg.ResponseError, ValueError)


# -- _parse_body -------------------------------------------------------------------------------

class TestParseBody:
    def parse(self, body, content_type, request_id=5):
        request = msg.Request(request_id=request_id, method='POST', path='/x')
        request.data = 'sentinel'
        reply = _parse_body(request, body, content_type)
        return request, reply

    def test_json(self):
        request, reply = self.parse(b'{"a": [1, 2]}', 'application/json')
        assert reply is None
        assert request.data == {'a': [1, 2]}

    @pytest.mark.parametrize('content_type', [
        'application/json; charset=utf-8', 'APPLICATION/JSON',
        ' application/json ', 'application/vnd.api+json',
        'application/problem+json; charset=UTF-8', 'application/ld+json'])
    def test_json_variants(self, content_type):
        request, reply = self.parse(b'[1, "x"]', content_type)
        assert reply is None
        assert request.data == [1, 'x']

    @pytest.mark.parametrize('body', [
        b'{"a": ', b'not json', b'{"a": 1}}', b'\xff\xfe', b'[' * 100000])
    def test_malformed_json_is_a_400(self, body):
        request, reply = self.parse(body, 'application/json', request_id=11)
        assert reply is not None
        assert reply[0] == msg.W_RESPONSE
        assert reply[1] == 11
        assert reply[2] == 400
        assert 'error' in json.loads(reply[4])
        assert headers_of(reply)['content-type'] == 'application/json'

    @pytest.mark.parametrize('content_type', [
        'text/plain', 'application/octet-stream', '', 'image/png',
        'application/jsonx', 'multipart/form-data; boundary=x'])
    def test_other_types_are_bytes(self, content_type):
        request, reply = self.parse(b'{"a": 1}', content_type)
        assert reply is None
        assert request.data == b'{"a": 1}'
        assert isinstance(request.data, bytes)

    @pytest.mark.parametrize('body', [b'', None])
    def test_empty_body_is_none(self, body):
        request, reply = self.parse(body, 'application/json')
        assert reply is None
        assert request.data is None

