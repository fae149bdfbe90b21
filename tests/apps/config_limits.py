"""max_pending and HTTP server options passed through Dispatcher keyword
arguments, for tests/e2e/test_config.py."""
import time

import uhttp.workers as _workers


class LimitWorker(_workers.Worker):
    @_workers.api('/api/sleep/{ms:int}', 'GET')
    def sleep(self, request):
        time.sleep(request.path_params['ms'] / 1000.0)
        return {'slept': request.path_params['ms']}

    @_workers.api('/api/echo', 'POST')
    def echo(self, request):
        data = request.data
        return {'length': len(data) if data is not None else 0}

    @_workers.api('/api/hello', 'GET')
    def hello(self, request):
        return {'hello': 'world'}


class LimitsApp(_workers.Dispatcher):
    @_workers.sync('/sync/hello')
    def hello(self, client, path_params):
        client.respond({'sync': 'hello'})


if __name__ == '__main__':
    LimitsApp(port=0, address='127.0.0.1', max_pending=2,
              max_content_length=1024, keep_alive_max_requests=3,
              max_headers_length=2048,
              pools=[_workers.WorkerPool(LimitWorker, num_workers=2,
                                         routes=['/api/**'])]).run()
