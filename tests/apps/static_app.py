"""Static mounts next to sync handlers and a pool, for tests/e2e/test_static.py.

Directories come from the environment:
  STATIC_WWW   mounted at '/static/' and at '/files/'
  STATIC_DEEP  mounted at '/static/deep/' (a longer prefix inside '/static/')

Routing under test: static first, then sync handlers, then the pool that
owns '/static/**'; '/files/...' has neither sync handler nor pool, so a
miss there is a 404. do_check refuses pooled requests carrying 'x-deny'
(static files and sync handlers are not checked).
"""
import os

import uhttp.workers as _workers
from status_app import StatusDispatcher


class EchoWorker(_workers.Worker):
    """Answers whatever reaches the pool, so a test sees the fall-through."""

    def _echo(self, request):
        return {'pool': type(self).__name__, 'path': request.path,
                'method': request.method}

    @_workers.api('/static/{name}')
    def one(self, request):
        return self._echo(request)

    @_workers.api('/static/{a}/{b}')
    def two(self, request):
        return self._echo(request)


class StaticApp(StatusDispatcher):
    def do_check(self, client):
        if client.headers.get('x-deny'):
            client.respond({'error': 'denied'}, status=401)
            raise _workers.RejectRequest()

    @_workers.sync('/static/from-sync')
    def from_sync(self, client, path_params):
        client.respond({'sync': 'from-sync', 'method': client.method})

    @_workers.sync('/static/shadow.txt')
    def shadow(self, client, path_params):
        # a file of the same name exists: static files win
        client.respond({'sync': 'shadow'})



if __name__ == '__main__':
    www = os.environ['STATIC_WWW']
    deep = os.environ['STATIC_DEEP']
    # the shorter prefix is listed first on purpose
    routes = {'/static/': www, '/files/': www, '/static/deep/': deep}
    if os.environ.get('STATIC_SITE'):  # a site served from '/'
        routes = {'/': os.environ['STATIC_SITE']}
    StaticApp(
        port=0, address='127.0.0.1',
        static_routes=routes,
        pools=[_workers.WorkerPool(EchoWorker, num_workers=1,
                                   routes=['/static/**'])],
    ).run()
