"""Chromium's own WebSocket against the dispatcher and its workers: text,
binary, a message over the limit (1009), the worker closing with a code."""
import json
import time

import pytest

import uhttp.workers as _workers
from uhttp.workers.testing import TestServer
from browser import Browser, find_chromium
from ws_app import WsDispatcher, WsWorker

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="no Chromium installed")

SCRIPT = """
(async () => {
  const url = %(url)s;
  const opened = (path) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url + path, ['chat']);
    ws.binaryType = 'arraybuffer';
    const inbox = [];
    let waiting = null;
    ws.onmessage = (e) => {
      const v = typeof e.data === 'string' ? e.data
              : 'bytes:' + Array.from(new Uint8Array(e.data)).join(',');
      if (waiting) { const w = waiting; waiting = null; w(v); } else inbox.push(v);
    };
    ws.next = () => new Promise((r) => {
      if (inbox.length) r(inbox.shift()); else waiting = r; });
    ws.closed = new Promise((r) => { ws.onclose = (e) => r([e.code, e.reason]); });
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error('websocket error'));
  });
  const out = {};
  const ws = await opened('/ws/echo/browser');
  out.protocol = ws.protocol;
  out.hello = await ws.next();
  ws.send('text from chromium ✓');
  out.text = await ws.next();
  ws.send(new Uint8Array([0, 1, 2, 255]).buffer);
  out.binary = await ws.next();
  ws.send('close');
  out.closed = await ws.closed;
  const big = await opened('/ws/echo/big');
  await big.next();
  big.send('x'.repeat(70000));
  out.big = await big.closed;
  return JSON.stringify(out);
})()
"""


@pytest.fixture
def server(tmp_path):
    pool = _workers.WorkerPool(WsWorker, num_workers=2, routes=['/ws/**'],
                               close_log=str(tmp_path / 'closes.txt'))
    server = TestServer(WsDispatcher, [pool], port=0, address='127.0.0.1',
                        ws_max_message_size=64 * 1024)
    server.start()
    yield server, tmp_path / 'closes.txt'
    server.stop()


def test_chromium_websocket(server):
    server, closes = server
    with Browser() as browser:
        page = browser.new_page()
        url = json.dumps(f'ws://127.0.0.1:{server.port}')
        result = json.loads(browser.evaluate(page, SCRIPT % {'url': url},
                                             timeout=30))
    assert result['protocol'] == 'chat'
    assert result['hello'].startswith('hello browser ')
    assert result['text'] == 'text from chromium ✓'
    assert result['binary'] == 'bytes:0,1,2,255'
    assert result['closed'] == [4000, 'asked']
    assert result['big'][0] == 1009
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if closes.exists() and len(closes.read_text().splitlines()) == 2:
            break
        time.sleep(0.05)
    codes = sorted(int(line.split()[1]) for line in
                   closes.read_text().splitlines())
    assert codes == [1009, 4000]
