"""A tiny WSGI app for gunicorn (sync workers).

    gunicorn -k sync -w 2 -b 127.0.0.1:8080 --chdir benchmarks/apps wsgi_app:app

Serves /json, /cpu and /echo. SSE is not served: a sync worker holds one
connection at a time, so it cannot keep 1,000 streams open.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

_JSON = [('Content-Type', 'application/json')]
_BYTES = [('Content-Type', 'application/octet-stream')]


def _send(start_response, status, headers, body):
    start_response(status, headers + [('Content-Length', str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ.get('PATH_INFO', '')
    method = environ.get('REQUEST_METHOD', 'GET')
    if path == common.PATH_JSON and method == 'GET':
        body = json.dumps(common.JSON_BODY).encode('utf-8')
        return _send(start_response, '200 OK', _JSON, body)
    if path == common.PATH_CPU and method == 'GET':
        body = json.dumps(common.burn_cpu()).encode('utf-8')
        return _send(start_response, '200 OK', _JSON, body)
    if path == common.PATH_ECHO and method == 'POST':
        length = int(environ.get('CONTENT_LENGTH') or 0)
        body = environ['wsgi.input'].read(length) if length else b''
        return _send(start_response, '200 OK', _BYTES, body)
    body = json.dumps({'error': 'Not Found'}).encode('utf-8')
    return _send(start_response, '404 Not Found', _JSON, body)
