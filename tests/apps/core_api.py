"""Handlers on one pool: ApiHandler groups and inheritance, routes on the
worker, setup()/kwargs/worker_id, every Request field, every return form,
URL pattern converters, worker on_idle(), slow routes for pipelining."""
import os
import time

import uhttp.workers as _workers


class Database:
    """A stand-in resource built in setup()."""

    def __init__(self, login):
        self.login = login
        self.users = {1: {'id': 1, 'name': 'ann'}, 2: {'id': 2, 'name': 'bob'}}

    def list_users(self):
        return list(self.users.values())

    def get_user(self, user_id):
        return self.users.get(user_id)

    def delete_user(self, user_id):
        self.users.pop(user_id, None)


class UserHandler(_workers.ApiHandler):
    PATTERN = '/api/user'

    @_workers.api('', 'GET')
    def list_users(self, request):
        return {'users': self.worker.db.list_users(),
                'login': self.worker.db.login}

    @_workers.api('/{id:int}', 'GET')
    def get_user(self, request):
        user = self.worker.db.get_user(request.path_params['id'])
        if user is None:
            return {'error': 'no such user'}, 404
        return user

    @_workers.api('/{id:int}', 'DELETE')
    def delete_user(self, request):
        return {'deleted': request.path_params['id'],
                'type': type(request.path_params['id']).__name__}


class OrderHandler(_workers.ApiHandler):
    PATTERN = '/api/order'

    @_workers.api('', 'GET')
    def list_orders(self, request):
        return {'orders': []}

    @_workers.api('/{id:int}', 'GET')
    def get_order(self, request):
        return {'id': request.path_params['id']}


class BaseHandler(_workers.ApiHandler):
    PATTERN = '/api/base'

    @_workers.api('', 'GET')
    def index(self, request):
        return {'handler': type(self).__name__, 'path': request.path,
                'same_worker': self.worker is self.worker.handler_owner()}

    @_workers.api('/{id:int}', 'GET')
    def item(self, request):
        return {'handler': type(self).__name__,
                'id': request.path_params['id']}


class DerivedHandler(BaseHandler):
    PATTERN = '/api/derived'

    @_workers.api('/extra', 'GET')
    def extra(self, request):
        return {'handler': type(self).__name__, 'extra': True}


def _describe(value):
    if isinstance(value, bytes):
        return {'type': 'bytes', 'value': value.decode('latin-1')}
    return {'type': type(value).__name__, 'value': value}


class ApiWorker(_workers.Worker):
    HANDLERS = [UserHandler, OrderHandler, BaseHandler, DerivedHandler]

    def setup(self):
        self.setup_calls = getattr(self, 'setup_calls', 0) + 1
        self.setup_pid = os.getpid()
        self.started = time.monotonic()
        self.idle_calls = 0
        self.db = Database(self.kwargs['db_login'])
        self.log.warning('setup ran worker_id=%d pid=%d', self.worker_id,
                         os.getpid())

    def handler_owner(self):
        return self

    def on_idle(self):
        self.idle_calls += 1

    # -- routes defined directly on the worker ---------------------------

    @_workers.api('/api/whoami', 'GET')
    def whoami(self, request):
        return {'worker_id': self.worker_id, 'pid': os.getpid(),
                'ppid': os.getppid(), 'setup_calls': self.setup_calls,
                'setup_pid': self.setup_pid, 'kwargs': self.kwargs}

    @_workers.api('/api/idle', 'GET')
    def idle(self, request):
        return {'worker_id': self.worker_id, 'idle_calls': self.idle_calls,
                'uptime': time.monotonic() - self.started}

    @_workers.api('/api/echo/{name}')
    def echo(self, request):
        return {
            'request_id': request.request_id,
            'method': request.method,
            'path': request.path,
            'path_params': request.path_params,
            'query': request.query,
            'data': _describe(request.data),
            'headers': request.headers,
            'cookies': request.cookies,
            'content_type': request.content_type,
        }

    @_workers.api('/api/sleep/{ms:int}', 'GET')
    def sleep(self, request):
        time.sleep(request.path_params['ms'] / 1000)
        return {'slept': request.path_params['ms']}

    # -- return forms -------------------------------------------------

    @_workers.api('/api/ret/dict', 'GET')
    def ret_dict(self, request):
        return {'kind': 'dict', 'n': 1}

    @_workers.api('/api/ret/list', 'GET')
    def ret_list(self, request):
        return [1, 'two', {'three': 3}]

    @_workers.api('/api/ret/str', 'GET')
    def ret_str(self, request):
        return 'plain text ☃'

    @_workers.api('/api/ret/bytes', 'GET')
    def ret_bytes(self, request):
        return b'\x00\x01binary\xff'

    @_workers.api('/api/ret/none', 'GET')
    def ret_none(self, request):
        return None

    @_workers.api('/api/ret/status', 'POST')
    def ret_status(self, request):
        return {'created': True}, 201

    @_workers.api('/api/ret/headers', 'GET')
    def ret_headers(self, request):
        return {'with': 'headers'}, 202, {'X-Custom': 'yes', 'X-Other': '42'}

    @_workers.api('/api/ret/text-type', 'GET')
    def ret_text_type(self, request):
        return 'a,b\n1,2\n', 200, {'Content-Type': 'text/csv'}

    @_workers.api('/api/ret/none-status', 'GET')
    def ret_none_status(self, request):
        return None, 202

    @_workers.api('/api/ret/bytes-headers', 'GET')
    def ret_bytes_headers(self, request):
        return b'PNG?', 200, {'Content-Type': 'image/png', 'X-Size': '4'}

    @_workers.api('/api/ret/list-status', 'GET')
    def ret_list_status(self, request):
        return ['gone'], 410

    # -- URL patterns ----------------------------------------------------

    @_workers.api('/api/price/{amount:float}', 'GET')
    def price(self, request):
        amount = request.path_params['amount']
        return {'amount': amount, 'type': type(amount).__name__}

    @_workers.api('/api/num/{id:int}', 'GET')
    def num(self, request):
        value = request.path_params['id']
        return {'id': value, 'type': type(value).__name__}

    @_workers.api('/api/tag/{name}')
    def tag(self, request):
        name = request.path_params['name']
        return {'name': name, 'type': type(name).__name__,
                'method': request.method}

    @_workers.api('/api/only-post', 'POST')
    def only_post(self, request):
        return {'posted': True}


class ApiDispatcher(_workers.Dispatcher):
    @_workers.sync('/_sync/ping')
    def ping(self, client, path_params):
        client.respond({'pong': True})


def main():
    ApiDispatcher(
        port=0, address='127.0.0.1',
        pools=[
            _workers.WorkerPool(
                ApiWorker, num_workers=2, routes=['/api/**'],
                heartbeat_interval=0.2, db_login='alice', flavour='vanilla'),
        ],
    ).run()


if __name__ == '__main__':
    main()
