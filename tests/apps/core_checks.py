"""Worker-level validation (Worker.do_check), handler errors (default and
custom on_request_error) and results that cannot be serialised.

CheckWorker.do_check looks at the 'x-check' header:
  'tuple'          -> return ({'error': 'unauthorized'}, 401)
  'cookie'         -> return ({'error': 'no session'}, 401) without a
                      'session' cookie, else None
  'reject'         -> raise RejectRequest(data={'error': 'forbidden'}, status=403)
  'reject-custom'  -> raise RejectRequest({'error': 'teapot'}, 418)
  'reject-default' -> raise RejectRequest()
  anything else    -> None
Handlers count their calls; GET /check/calls reports the count.
"""
import uhttp.workers as _workers


class Unserialisable:
    pass


class DatabaseError(Exception):
    pass


class CheckWorker(_workers.Worker):
    def setup(self):
        self.calls = 0

    def do_check(self, request):
        mode = request.headers.get('x-check')
        if mode == 'tuple':
            return {'error': 'unauthorized'}, 401
        if mode == 'cookie':
            if not request.cookies.get('session'):
                return {'error': 'no session'}, 401
            return None
        if mode == 'reject':
            raise _workers.RejectRequest(data={'error': 'forbidden'}, status=403)
        if mode == 'reject-custom':
            raise _workers.RejectRequest({'error': 'teapot'}, 418)
        if mode == 'reject-default':
            raise _workers.RejectRequest()
        if mode == 'user':   # what the check found, for the handler
            request.user = {'name': request.headers.get('x-user')}
            request.started = 'checked'
        return None

    @_workers.api('/check/whoami', 'GET')
    def whoami(self, request):
        return {'user': getattr(request, 'user', None),
                'started': getattr(request, 'started', None)}

    @_workers.api('/check/open', 'GET')
    def open_route(self, request):
        self.calls += 1
        return {'ok': True, 'session': request.cookies.get('session')}

    @_workers.api('/check/calls', 'GET')
    def count(self, request):
        return {'calls': self.calls}


class ErrorWorker(_workers.Worker):
    """Default on_request_error(); handlers that raise or return junk."""

    @_workers.api('/err/boom', 'GET')
    def explode_default(self, request):
        raise ValueError('kaboom-marker-1')

    @_workers.api('/err/ok', 'GET')
    def fine(self, request):
        return {'ok': True, 'worker_id': self.worker_id}

    @_workers.api('/err/set', 'GET')
    def returns_set(self, request):
        return {1, 2, 3}

    @_workers.api('/err/object', 'GET')
    def returns_object(self, request):
        return Unserialisable()

    @_workers.api('/err/nested', 'GET')
    def returns_nested_set(self, request):
        return {'inner': {'a', 'b'}}, 200

    @_workers.api('/err/reject', 'GET')
    def rejects_in_handler(self, request):
        raise _workers.RejectRequest({'error': 'from handler'}, 409)


class CustomErrorWorker(_workers.Worker):
    """on_request_error() overridden, calling super() for most errors."""

    def setup(self):
        self.reconnects = 0
        self.seen = []

    def on_request_error(self, request, err):
        self.seen.append([request.path, type(err).__name__, str(err)])
        if isinstance(err, DatabaseError):
            self.reconnects += 1
        if isinstance(err, LookupError):
            return {'error': 'custom', 'missing': str(err)}, 503
        return super().on_request_error(request, err)

    @_workers.api('/custom/db', 'GET')
    def db_fails(self, request):
        raise DatabaseError('connection lost marker-2')

    @_workers.api('/custom/lookup', 'GET')
    def lookup_fails(self, request):
        raise LookupError('marker-3')

    @_workers.api('/custom/state', 'GET')
    def state(self, request):
        return {'reconnects': self.reconnects, 'seen': self.seen}


def main():
    _workers.Dispatcher(
        port=0, address='127.0.0.1',
        pools=[
            _workers.WorkerPool(CheckWorker, num_workers=1,
                                routes=['/check/**', '/nowhere/**']),
            _workers.WorkerPool(ErrorWorker, num_workers=1,
                                routes=['/err/**']),
            _workers.WorkerPool(CustomErrorWorker, num_workers=1,
                                routes=['/custom/**']),
        ],
    ).run()


if __name__ == '__main__':
    main()
