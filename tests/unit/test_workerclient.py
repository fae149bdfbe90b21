"""WorkerClient: a worker's handlers in the test's own process, through
the same path as in a worker process (no dispatcher, no fork)."""

import pytest

import uhttp.workers as _workers
from uhttp.workers.testing import WorkerClient


class ItemHandler(_workers.ApiHandler):
    PATTERN = '/api/item'

    @_workers.api('/{id:int}', 'GET')
    def get_item(self, request):
        item = self.worker.items.get(request.path_params['id'])
        if item is None:
            return {'error': 'Not found'}, 404
        return item

    @_workers.api('/{id:int}', 'PUT')
    def put_item(self, request):
        self.worker.items[request.path_params['id']] = request.data
        return request.data, 201, {'X-Stored': 'yes'}


class ItemWorker(_workers.Worker):
    HANDLERS = [ItemHandler]

    def setup(self):
        self.items = {1: {'id': 1}}
        self.setups = getattr(self, 'setups', 0) + 1
        self.waiting = []
        self.rate = None
        self.streams = {}

    def do_check(self, request):
        if request.headers.get('x-key') == 'bad':
            raise _workers.RejectRequest({'error': 'no'}, 401)
        return None

    def on_config(self, config):
        self.rate = config['rate']

    @_workers.api('/api/pid', 'GET')
    def pid(self, request):
        self.log.info('pid asked, query %s', request.query)
        return {'query': request.query, 'rate': self.rate,
                'kwargs': self.kwargs, 'remote': request.remote_address}

    @_workers.api('/api/text', 'GET')
    def text(self, request):
        return '<p>hi</p>'

    @_workers.api('/api/boom', 'GET')
    def boom(self, request):
        raise KeyError('gone')

    @_workers.api('/api/later', 'GET')
    def later(self, request):
        self.waiting.append(request)
        return _workers.DEFERRED

    @_workers.api('/api/events', 'GET')
    def events(self, request):
        request.response_stream()
        self.streams[request.request_id] = request
        request.send_event(data={'n': 1}, event='tick')
        return _workers.DEFERRED

    @_workers.api('/api/forward', 'POST')
    def send_on(self, request):
        self.forward('/internal/save', request.data)
        return None

    def on_idle(self):
        for request in self.waiting:
            request.respond({'done': True}, status=202)
        self.waiting = []
        for request in self.streams.values():
            request.send_event(data='two\nlines')
            request.response_stream_end()
        self.streams = {}

    def on_disconnect(self, request_id):
        self.streams.pop(request_id, None)


def test_routes_and_return_forms():
    client = WorkerClient(ItemWorker, region='north')
    reply = client.get('/api/item/1')
    assert reply.status == 200 and reply.data == {'id': 1}
    assert client.get('/api/item/9').status == 404
    reply = client.put('/api/item/2', json={'id': 2})
    assert reply.status == 201 and reply.headers['x-stored'] == 'yes'
    assert client.get('/api/item/2').json() == {'id': 2}
    assert client.get('/nowhere').status == 404
    reply = client.delete('/api/item/1')
    assert reply.status == 405 and 'GET' in reply.headers['allow']
    reply = client.get('/api/text')
    assert reply.data == '<p>hi</p>'
    assert reply.headers['content-type'].startswith('text/html')
    assert client.worker.setups == 1   # setup() once


def test_query_kwargs_config_and_logs():
    client = WorkerClient(ItemWorker, configs=[{'rate': 5}], region='north')
    reply = client.get('/api/pid?page=2&tag=a&tag=b')
    assert reply.data == {'query': {'page': '2', 'tag': ['a', 'b']},
                          'rate': 5, 'kwargs': {'region': 'north'},
                          'remote': '127.0.0.1'}
    client.config({'rate': 9})
    assert client.get('/api/pid').data['rate'] == 9
    assert any('pid asked' in record.message for record in client.logs)


def test_rejections_and_errors():
    client = WorkerClient(ItemWorker)
    reply = client.get('/api/item/1', headers={'X-Key': 'bad'})
    assert reply.status == 401 and reply.data == {'error': 'no'}
    reply = client.get('/api/boom')
    assert reply.status == 500
    assert any("KeyError" in record.message and record.level == 40
               for record in client.logs)
    reply = client.put('/api/item/3', data=b'{not json',
                       headers={'Content-Type': 'application/json'})
    assert reply.status == 400


def test_deferred_answer_comes_later():
    client = WorkerClient(ItemWorker)
    reply = client.get('/api/later')
    assert reply.deferred and not reply.answered
    client.idle()
    assert reply.status == 202 and reply.data == {'done': True}


def test_streams_and_disconnects():
    client = WorkerClient(ItemWorker)
    reply = client.get('/api/events')
    assert reply.streaming and reply.status == 200
    assert reply.headers['content-type'] == 'text/event-stream'
    assert reply.events == [{'event': 'tick', 'data': '{"n": 1}'}]
    client.idle()
    assert reply.ended
    assert reply.events[1] == {'data': 'two\nlines'}
    other = client.get('/api/events')
    client.disconnect(other)
    assert other.request_id not in client.worker.streams


def test_forward_is_recorded():
    client = WorkerClient(ItemWorker)
    assert client.post('/api/forward', json={'x': 1}).status == 200
    assert client.forwarded == [('/internal/save', {'x': 1})]


def test_worker_init_without_super_is_named():
    # a user's __init__ that forgets super().__init__() left the worker
    # without log or state: "setup() failed: AttributeError('... no
    # attribute 'log'')" from inside the library, in a restart loop
    class CountingWorker(_workers.Worker):
        def __init__(self, **kwargs):
            self.count = 0

    with pytest.raises(TypeError) as caught:
        WorkerClient(CountingWorker)
    assert 'CountingWorker.__init__() did not call super().__init__' in str(
        caught.value)


def test_setup_errors_reach_the_test():
    class Broken(_workers.Worker):
        def setup(self):
            raise RuntimeError('no database')

    with pytest.raises(RuntimeError, match='no database'):
        WorkerClient(Broken)


class AnswerWorker(_workers.Worker):
    @_workers.api('/login', 'POST')
    def login(self, request):
        return {'ok': True}, 200, [('Set-Cookie', 'session=abc; HttpOnly'),
                                   ('Set-Cookie', 'theme=dark')]

    @_workers.api('/item', 'DELETE')
    def remove(self, request):
        return {'deleted': 1}, 204

    @_workers.api('/framed', 'GET')
    def framed(self, request):
        return 'hi', 200, {'Content-Length': '999', 'Transfer-Encoding': 'x'}

    @_workers.api('/huge', 'GET')
    def huge(self, request):
        raise MemoryError()

    @_workers.api('/ended', 'GET')
    def ended(self, request):
        request.response_stream()
        request.send_event(data='one')
        request.response_stream_end()
        self.after_end = [request.send_event(data='late'),
                          request.send_chunk(b'x'), request.send_ndjson({}),
                          request.response_stream_end()]
        return _workers.DEFERRED

    @_workers.api('/name', 'GET')
    def name(self, request):
        return 'hi', 200, {'X-Latin': b'caf\xe9', 'X-Text': 'na\u00efve',
                           'X-Utf': 'na\u00efve'.encode()}


def test_a_streams_sends_after_its_end_are_false():
    client = WorkerClient(AnswerWorker)
    reply = client.get('/ended')
    assert reply.ended and [event['data'] for event in reply.events] == ['one']
    assert client.worker.after_end == [False, False, False, False]


def test_bytes_header_values_read_as_a_client_reads_them():
    reply = WorkerClient(AnswerWorker).get('/name')
    assert reply.headers['x-latin'] == 'caf\u00e9'    # Latin-1 bytes
    assert reply.headers['x-text'] == 'na\u00efve'
    assert reply.headers['x-utf'] == 'na\u00efve'     # UTF-8 bytes
    assert ('X-Latin', 'caf\u00e9') in reply.header_list


def test_answers_are_what_the_server_would_send():
    client = WorkerClient(AnswerWorker)
    reply = client.post('/login')
    assert reply.headers['set-cookie'] == 'session=abc; HttpOnly, theme=dark'
    assert reply.header_list[:2] == [('Set-Cookie', 'session=abc; HttpOnly'),
                                     ('Set-Cookie', 'theme=dark')]
    framed = client.get('/framed')     # the dispatcher's own framing wins
    assert 'content-length' not in framed.headers
    assert 'transfer-encoding' not in framed.headers
    gone = client.delete('/item')
    assert gone.status == 204 and gone.content == b'' and gone.data is None
    assert client.exit_code is None
    oom = client.get('/huge')              # the worker would end, replaced
    assert oom.status == 500
    assert client.exit_code == 72
    assert client.post('/login').status == 200


class FileAnswers(_workers.Worker):
    path = None

    @_workers.api('/bytesio', 'GET')
    def bytesio(self, request):
        import io
        return _workers.FileResponse(io.BytesIO(b'hello world'))

    @_workers.api('/echo', 'POST')
    def echo(self, request):
        return _workers.FileResponse(request.body_file)

    @_workers.api('/read-first', 'GET')
    def read_first(self, request):
        file = open(self.path, 'rb')
        file.read(90)                   # sniffed before answering
        return _workers.FileResponse(file)


def test_file_answers_are_the_whole_file_whatever_its_position(tmp_path):
    """Read into the answer as a dispatcher would send it: from the start,
    not from where the file object (or the memory file made of a BytesIO)
    happens to stand."""
    path = tmp_path / 'a.txt'
    path.write_bytes(b'0123456789' * 10)
    FileAnswers.path = str(path)
    client = WorkerClient(FileAnswers)
    assert client.get('/bytesio').content == b'hello world'
    assert client.post('/echo', data=b'payload-bytes').content == (
        b'payload-bytes')
    assert client.get('/read-first').content == b'0123456789' * 10


class PlainNames(_workers.Worker):
    @_workers.api('/api/tag/{name}', 'GET')
    def tag(self, request):
        return {'name': request.path_params['name'], 'path': request.path}

    @_workers.api('/api/stop', 'POST')
    def stop_now(self, request):
        raise SystemExit(5)


def test_the_path_is_read_as_the_dispatcher_reads_it():
    client = WorkerClient(PlainNames)
    assert client.get('/api/tag/caf%C3%A9%20au%20lait').data == {
        'name': 'café au lait', 'path': '/api/tag/café au lait'}
    bad = client.get('/api/tag/%zz')
    assert bad.status == 400 and 'encoding' in bad.data['error']


def test_a_query_the_dispatcher_cannot_decode_is_a_400_reply():
    # served, '?x=%E9' (Latin-1, not UTF-8) is answered 400 before any
    # worker; the client gave that reply too instead of raising
    client = WorkerClient(PlainNames)
    for target in ('/api/tag/x?x=%E9', '/api/tag/x?%ff'):
        bad = client.get(target)
        assert bad.status == 400 and 'encoding' in bad.data['error']
    assert client.get('/api/tag/x?x=%C3%A9').status == 200


def test_sys_exit_in_a_handler_is_a_500_and_the_exit_code():
    client = WorkerClient(PlainNames)
    reply = client.post('/api/stop')
    assert (reply.status, reply.data) == (500, {'error': 'Worker died'})
    assert client.exit_code == 5


def test_head_gets_the_get_routes_answer_without_its_body():
    client = WorkerClient(PlainNames)
    reply = client.request('HEAD', '/api/tag/x')
    assert (reply.status, reply.content, reply.data) == (200, b'', None)


class CheckingWorker(_workers.Worker):
    def do_check(self, request):
        if request.headers.get('x-mode') == 'raise':
            raise LookupError('session store down')
        if request.headers.get('x-mode') == 'bad-refusal':
            return {'error': 'no'}, 99
        return None

    @_workers.api('/api/open', 'GET')
    def open_route(self, request):
        return {'open': True}


def test_a_failing_do_check_is_named_in_the_log():
    # the ERROR used to say "failed in handler" (or "handler for ..."),
    # sending the reader to look for a route that never ran
    client = WorkerClient(CheckingWorker)
    assert client.get('/api/open', headers={'X-Mode': 'raise'}).status == 500
    assert client.get('/api/open', headers={'X-Mode': 'bad-refusal'}).status == 500
    errors = [record.message for record in client.logs if record.level == 40]
    assert len(errors) == 2, errors
    assert all('CheckingWorker.do_check' in text for text in errors), errors
    assert not any('in handler' in text or text.startswith('handler ')
                   for text in errors), errors
    assert client.get('/api/open').data == {'open': True}


class BodyWorker(_workers.Worker):
    @_workers.api('/api/body', 'POST')
    def body(self, request):
        return {'kind': type(request.data).__name__,
                'size': len(request.data),
                'first': bytes(request.body_file.read(3)).decode(),
                'spooled': isinstance(request.data, _workers.SpooledBytes)}

    @_workers.api('/api/echo', 'POST')
    def echo(self, request):
        return request.data


@pytest.mark.parametrize('size, spooled', [(256 * 1024, False),
                                           (256 * 1024 + 1, True)])
def test_a_body_above_the_spool_threshold_is_spooled_as_in_a_server(
        size, spooled):
    """A worker process gets a body above the dispatcher's spool_threshold
    (256 KiB by default) as a SpooledBytes view of its file: a handler
    tested here sees the same type it will see served."""
    client = WorkerClient(BodyWorker)
    data = b'abc' + b'x' * (size - 3)
    reply = client.post('/api/body', data=data)
    assert reply.data == {'kind': 'SpooledBytes' if spooled else 'bytes',
                          'size': size, 'first': 'abc', 'spooled': spooled}
    assert client.post('/api/echo', data=data).content == data
    reply = client.post('/api/body', data=data,
                        headers={'Content-Type': 'application/json'})
    assert reply.status == 400   # JSON bodies are parsed, spooled or not


def test_a_dict_as_data_is_sent_as_a_form_as_over_http():
    """The handler gets what a worker gets for a form: its raw bytes,
    never the dict itself."""
    client = WorkerClient(BodyWorker)
    reply = client.post('/api/echo', data={'q': 'a b', 'n': 1})
    assert reply.content == b'q=a+b&n=1'
    with pytest.raises(TypeError, match='data'):
        client.post('/api/echo', data=object())


def test_an_open_file_as_data_is_its_content(tmp_path):
    path = tmp_path / 'upload.bin'
    path.write_bytes(b'file content')
    client = WorkerClient(BodyWorker)
    with open(path, 'rb') as file:
        assert client.post('/api/echo', data=file).content == b'file content'


class ForgetfulWorker(_workers.Worker):
    def on_request_error(self, request, err):
        self.log.error("%s failed: %r", request.path, err)   # no return

    @_workers.api('/api/fails', 'GET')
    def fails(self, request):
        raise KeyError('gone')

    @_workers.api('/api/answers', 'GET')
    def answers(self, request):
        raise KeyError('gone')


class AnsweringOnError(ForgetfulWorker):
    def on_request_error(self, request, err):
        request.respond({'sorry': True}, status=503)   # answers itself


def test_an_error_hook_that_returns_nothing_still_answers_500():
    # it used to turn the failed request into a 200 with an empty body
    client = WorkerClient(ForgetfulWorker)
    reply = client.get('/api/fails')
    assert reply.status == 500 and reply.data == {
        'error': 'Internal Server Error'}
    assert any('failed' in record.message for record in client.logs)
    reply = WorkerClient(AnsweringOnError).get('/api/answers')
    assert (reply.status, reply.data) == (503, {'sorry': True})
