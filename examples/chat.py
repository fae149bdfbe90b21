"""A chat room over WebSockets, served by two worker processes.

    python3 examples/chat.py            # then open http://127.0.0.1:8080/

Each WebSocket belongs to the worker that accepted it, so a message that
arrives at one worker must reach the clients of the other too. The worker
hands it to the dispatcher with `self.forward()`; the dispatcher's
`on_forward()` passes it to every worker of the pool with
`pool.send_config()` (the library's one fan-out to all the workers of a
pool), and each worker sends it to its own clients in the room. A worker
started later (a restart) is given the latest config, so a message older
than the worker is skipped.
"""

import json
import os
import sys
import time

import uhttp.workers as _workers

PORT = int(os.environ.get('PORT', '8080'))

PAGE = """<!doctype html><meta charset="utf-8"><title>uhttp-workers chat</title>
<style>body{font:15px system-ui;max-width:40em;margin:2em auto}
#log{border:1px solid #ccc;height:20em;overflow:auto;padding:.5em}
.sys{color:#888}</style>
<h1>Room <span id="room"></span></h1><div id="log"></div>
<form id="f"><input id="text" size="50" autofocus> <button>Send</button></form>
<script>
const room = location.hash.slice(1) || 'lobby';
document.getElementById('room').textContent = room;
const log = document.getElementById('log');
const ws = new WebSocket(`ws://${location.host}/ws/chat/${room}`);
function show(text, cls) { const p = document.createElement('div');
  p.textContent = text; if (cls) p.className = cls; log.append(p);
  log.scrollTop = log.scrollHeight; }
ws.onmessage = (e) => { const m = JSON.parse(e.data);
  show(m.system ? m.system : `[worker ${m.worker}] ${m.text}`, m.system && 'sys'); };
ws.onclose = (e) => show(`closed (${e.code})`, 'sys');
document.getElementById('f').onsubmit = (e) => { e.preventDefault();
  const t = document.getElementById('text'); if (t.value) ws.send(t.value); t.value = ''; };
</script>"""


class ChatWorker(_workers.Worker):
    def setup(self):
        self.rooms = {}          # room -> {request_id: ws} of this worker
        self.started = time.time()

    @_workers.websocket('/ws/chat/{room}')
    def join(self, ws):
        ws.accept()
        room = ws.path_params['room']
        self.rooms.setdefault(room, {})[ws.request_id] = ws
        ws.send(json.dumps({'system': f"joined {room} (worker "
                                      f"{self.worker_id})"}))

    def on_ws_message(self, ws, message):
        if not isinstance(message, str) or not message.strip():
            return
        self.forward('/chat', {'room': ws.path_params['room'],
                               'text': message[:2000],
                               'worker': self.worker_id, 'time': time.time()})

    def on_config(self, config):
        said = config.get('said')
        if not said or said['time'] < self.started:
            return
        text = json.dumps(said)
        for ws in list(self.rooms.get(said['room'], {}).values()):
            ws.send(text)

    def on_ws_close(self, ws, code, reason):
        members = self.rooms.get(ws.path_params['room'], {})
        members.pop(ws.request_id, None)


class ChatDispatcher(_workers.Dispatcher):
    def on_forward(self, route, data):
        if route == '/chat':
            for pool in self._pools:
                pool.send_config({'said': data})

    @_workers.sync('/', 'GET')
    def page(self, client, path_params):
        client.respond(PAGE, headers={'content-type': 'text/html; charset=utf-8'})


def make():
    return ChatDispatcher(
        port=PORT, address=os.environ.get('ADDRESS', '127.0.0.1'),
        pools=[_workers.WorkerPool(ChatWorker, num_workers=2,
                                   routes=['/ws/**'])])


if __name__ == '__main__':
    print(f"chat: http://127.0.0.1:{PORT}/  (a room per #name)",
          file=sys.stderr)
    make().run()
