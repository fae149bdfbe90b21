"""Routes grouped with ApiHandler, two pools, the fallback pool, kwargs.

    python3 examples/handlers.py
    curl http://127.0.0.1:8080/api/user
    curl -X DELETE http://127.0.0.1:8080/api/user/2
    curl http://127.0.0.1:8080/admin/user/1        # inherited routes
    curl 'http://127.0.0.1:8080/api/compute/primes?n=100000'
    curl http://127.0.0.1:8080/anything/else        # the fallback pool
"""

import os

import uhttp.workers as _workers


class Database:
    """Stands in for a real database connection, opened per worker."""

    def __init__(self, login):
        self.login = login
        self.users = {1: 'ada', 2: 'linus', 3: 'grace'}


class UserHandler(_workers.ApiHandler):
    PATTERN = '/api/user'

    @_workers.api('', 'GET')
    def list_users(self, request):
        return {'users': self.worker.db.users, 'login': self.worker.db.login}

    @_workers.api('/{id:int}', 'GET')
    def get_user(self, request):
        name = self.worker.db.users.get(request.path_params['id'])
        return ({'name': name}, 200) if name else ({'error': 'no such user'}, 404)

    @_workers.api('/{id:int}', 'DELETE')
    def delete_user(self, request):
        self.worker.db.users.pop(request.path_params['id'], None)
        return {'deleted': request.path_params['id']}


class AdminUserHandler(UserHandler):
    """The same routes, under /admin/user."""
    PATTERN = '/admin/user'


class UserWorker(_workers.Worker):
    HANDLERS = [UserHandler, AdminUserHandler]

    def setup(self):
        self.db = Database(self.kwargs['db_login'])


class ComputeWorker(_workers.Worker):
    @_workers.api('/api/compute/primes', 'GET')
    def primes(self, request):
        n = int((request.query or {}).get('n', 1000))
        sieve = bytearray([1]) * (n + 1)
        sieve[0:2] = b'\0\0'
        for i in range(2, int(n ** 0.5) + 1):
            if sieve[i]:
                sieve[i * i::i] = bytes(len(range(i * i, n + 1, i)))
        return {'n': n, 'primes': sum(sieve), 'worker': self.worker_id}


class GeneralWorker(_workers.Worker):
    @_workers.api('/{rest:path}')
    def anything(self, request):
        return {'served_by': 'fallback', 'path': request.path}


def main():
    _workers.Dispatcher(
        port=int(os.environ.get('PORT', '8080')),
        address=os.environ.get('ADDRESS', '127.0.0.1'),
        pools=[
            _workers.WorkerPool(ComputeWorker, num_workers=2,
                                routes=['/api/compute/**'], timeout=60),
            _workers.WorkerPool(UserWorker, num_workers=1,
                                routes=['/api/user/**', '/admin/user/**'],
                                db_login='demo:demo'),
            _workers.WorkerPool(GeneralWorker),  # no routes: the fallback
        ],
    ).run()


if __name__ == '__main__':
    main()
