"""Response splitting attempts (tests/hardening/test_hard_splitting.py).

Worker routes /w/<kind>/<where> answer with CR/LF smuggled into a header
name or value or a cookie name or value, through a returned tuple, a
returned Response, request.respond() (deferred) or response_stream().
Sync routes /s/<kind>/<where> do the same with client.respond() and
client.response_stream(); do_check does it when asked by 'x-split-check'.
"""
import uhttp.workers as _workers
from status_app import StatusDispatcher

INJECT = {
    'crlf': 'a\r\nX-Injected: 1',
    'lf': 'a\nX-Injected: 1',
    'cr': 'a\rX-Injected: 1',
    'crlfcrlf': 'a\r\n\r\n<html>injected</html>',
}


def _parts(kind, where):
    """(headers, cookies) carrying the injection at `where`."""
    bad = INJECT[kind]
    if where == 'header-value':
        return {'X-A': bad}, None
    if where == 'header-name':
        return {'X-A' + bad.replace(' ', ''): 'v'}, None
    if where == 'cookie-value':
        return None, {'c': bad}
    if where == 'cookie-name':
        return None, {'c' + bad.replace(' ', ''): 'v'}
    if where == 'header-list':
        return [('X-A', 'ok'), ('X-B', bad)], None
    raise ValueError(where)


class SplitWorker(_workers.Worker):
    @_workers.api('/w/tuple/{kind}/{where}', 'GET')
    def as_tuple(self, request):
        headers, _ = _parts(request.path_params['kind'],
                            request.path_params['where'])
        return {'via': 'tuple'}, 200, headers

    @_workers.api('/w/response/{kind}/{where}', 'GET')
    def as_response(self, request):
        headers, cookies = _parts(request.path_params['kind'],
                                  request.path_params['where'])
        return _workers.Response(data={'via': 'response'}, status=200,
                                 headers=headers, cookies=cookies)

    @_workers.api('/w/respond/{kind}/{where}', 'GET')
    def via_respond(self, request):
        headers, cookies = _parts(request.path_params['kind'],
                                  request.path_params['where'])
        request.respond({'via': 'respond'}, headers=headers, cookies=cookies)
        return _workers.DEFERRED

    @_workers.api('/w/stream/{kind}/{where}', 'GET')
    def via_stream(self, request):
        headers, cookies = _parts(request.path_params['kind'],
                                  request.path_params['where'])
        request.response_stream(headers=headers, cookies=cookies)
        request.send_event(data='streamed')
        request.response_stream_end()
        return _workers.DEFERRED

    @_workers.api('/api/probe', 'GET')
    def probe(self, request):
        return {'ok': True}


class App(StatusDispatcher):
    def do_check(self, client):
        kind = client.headers.get('x-split-check')
        if kind:
            headers, cookies = _parts(kind, client.headers.get('x-where', 'header-value'))
            client.respond({'via': 'do_check'}, status=401, headers=headers,
                           cookies=cookies)
            raise _workers.RejectRequest()

    @_workers.sync('/s/respond/{kind}/{where}')
    def sync_respond(self, client, path_params):
        headers, cookies = _parts(path_params['kind'], path_params['where'])
        client.respond({'via': 'sync'}, headers=headers, cookies=cookies)

    @_workers.sync('/s/stream/{kind}/{where}')
    def sync_stream(self, client, path_params):
        headers, cookies = _parts(path_params['kind'], path_params['where'])
        client.response_stream(headers=headers, cookies=cookies)
        client.send_event(data='streamed')
        client.response_stream_end()



if __name__ == '__main__':
    App(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(SplitWorker, num_workers=2,
                            routes=['/w/**', '/api/**'])]).run()
