"""WebSockets served by two workers: echo, rejections, crashes, counts.

Every on_ws_close() appends one line (request id, code, reason) to the
file named by the pool's `close_log` keyword, so a test can count them
across processes, dead ones included.
"""
import os
import time

import uhttp.workers as _workers


class Greeter(_workers.ApiHandler):
    PATTERN = '/ws/greet'

    @_workers.websocket('/{name}')
    def greet(self, ws):
        ws.accept()
        self.worker.sockets[ws.request_id] = ws
        ws.send(f"hi {ws.path_params['name']}")


class WsWorker(_workers.Worker):
    HANDLERS = [Greeter]

    def setup(self):
        self.close_log = self.kwargs['close_log']
        self.sockets = {}
        self.sunk = {}   # request_id -> [messages, bytes] (/ws/sink)

    @_workers.websocket('/ws/echo/{room}')
    def echo(self, ws):
        if ws.query and ws.query.get('refuse'):
            ws.reject({'error': 'refused'}, status=int(ws.query['refuse']))
            return
        chosen = 'chat' if 'chat' in ws.subprotocols else None
        ws.accept(subprotocol=chosen, headers={'X-Room': ws.path_params['room']})
        self.sockets[ws.request_id] = ws
        ws.send(f"hello {ws.path_params['room']} {self.worker_id}")

    @_workers.websocket('/ws/silent')
    def silent(self, ws):
        pass  # no decision: 403

    @_workers.api('/api/broadcast', 'POST')
    def broadcast(self, request):
        for ws in list(self.sockets.values()):
            ws.send(request.data['text'])
        return {'sent': len(self.sockets)}

    @_workers.websocket('/ws/sink')
    def sink(self, ws):
        """Counts what it receives; 'sleep N' blocks the worker N seconds,
        'count' answers 'count <messages> <bytes>'."""
        ws.accept()
        self.sockets[ws.request_id] = ws
        self.sunk[ws.request_id] = [0, 0]

    def on_ws_message(self, ws, message):
        if ws.path == '/ws/sink':
            self.sink_message(ws, message)
        elif message == 'close':
            ws.close(4000, 'asked')
        elif isinstance(message, str) and message.startswith('close '):
            code, _, reason = message[6:].partition(' ')
            try:
                ws.close(int(code), reason or 'with a code')
            except ValueError as err:
                ws.send(f'refused {code}' if not reason else str(err))
        elif message == 'crash':
            os._exit(3)
        elif message == 'pid':
            ws.send(str(os.getpid()))
        elif message == 'surrogate':
            for text in ('a\ud800', '\udcff'):
                try:
                    ws.send(text)
                except UnicodeEncodeError:
                    ws.send(f'refused {text!a}')
        elif message == 'endless':
            while ws.send('x' * 65536):  # until the connection closes
                pass
        elif isinstance(message, str) and message.startswith('lines '):
            until = time.monotonic() + float(message.split()[1])
            count = 0
            while time.monotonic() < until and ws.send(f'line {count}'):
                count += 1   # small messages, as fast as they go
            ws.send(f'done {count}')
        elif message == 'flood':
            chunk = 'x' * 65536
            for _ in range(400):
                if not ws.send(chunk):
                    break
        else:
            ws.send(message)

    def sink_message(self, ws, message):
        if message == 'count':
            got = self.sunk[ws.request_id]
            ws.send(f'count {got[0]} {got[1]}')
        elif isinstance(message, str) and message.startswith('sleep '):
            time.sleep(float(message.split()[1]))
        else:
            got = self.sunk[ws.request_id]
            got[0] += 1
            got[1] += len(message)

    def on_ws_close(self, ws, code, reason):
        self.sockets.pop(ws.request_id, None)
        with open(self.close_log, 'a', encoding='utf-8') as log:
            log.write(f"{ws.request_id} {code} {reason}\n")


class WsDispatcher(_workers.Dispatcher):
    def do_check(self, request):
        if request.headers.get('x-deny'):
            raise _workers.RejectRequest({'error': 'denied'}, status=401)

    @_workers.sync('/_status', 'GET')
    def status_route(self, request, params):
        request.respond(self.status())
