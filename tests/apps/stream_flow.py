"""Flow control and user file descriptors.

    python stream_flow.py SOCKET_DIR

Pools:
  FlowWorker   2 workers, /api/**: pause() on request; logs (INFO) what a
               paused worker still sees: on_config(), its own UNIX datagram
               socket SOCKET_DIR/flow-<id>.sock, on_idle()
  FlowExample  2 workers, /flow/**: the README's Flow Control example, with
               a limit of 3 subscribers per worker
  FdWorker     1 worker, /fd/**: register_reader on SOCKET_DIR/fdworker.sock,
               register_writer on a socketpair, unregister_* on request
The dispatcher registers SOCKET_DIR/dispatcher.sock as a reader and a pipe
as a writer; sync routes report what they saw.
"""
import os
import socket
import sys
import time

import uhttp.workers as _workers
from status_app import StatusDispatcher


def bind_datagram(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    return sock


class FlowWorker(_workers.Worker):
    def setup(self):
        self.paused_idle = 0
        self.sock = bind_datagram(os.path.join(
            self.kwargs['sock_dir'], f'flow-{self.worker_id}.sock'))
        self.register_reader(self.sock, self.on_datagram)

    @_workers.api('/api/whoami', 'GET')
    def whoami(self, request):
        return {'worker': self.worker_id, 'accepting': self._accepting}

    @_workers.api('/api/pause', 'POST')
    def pause_me(self, request):
        delay = float((request.data or {}).get('delay', 0))
        if delay:
            time.sleep(delay)  # busy: requests may be queued for it meanwhile
        self.paused_idle = 0
        self.pause()
        return {'worker': self.worker_id, 'accepting': self._accepting}

    def on_idle(self):
        if not self._accepting:
            self.paused_idle += 1
            if self.paused_idle == 3:
                self.log.info("worker=%d on_idle while paused accepting=%s",
                              self.worker_id, self._accepting)

    def on_config(self, config):
        self.log.info("worker=%d on_config %r accepting=%s", self.worker_id,
                      config, self._accepting)
        if config.get('resume') == self.worker_id:
            self.resume()
            self.log.info("worker=%d resumed accepting=%s", self.worker_id,
                          self._accepting)

    def on_datagram(self, sock):
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        self.log.info("worker=%d datagram %r accepting=%s", self.worker_id,
                      data, self._accepting)


class FlowExample(_workers.Worker):
    """The Flow Control example: pause at `limit` subscribers, resume when
    one leaves."""

    def setup(self):
        self._subscribers = {}
        self.limit = self.kwargs['limit']

    @_workers.api('/flow/events', 'GET')
    def subscribe(self, request):
        request.response_stream()
        self._subscribers[request.request_id] = request
        request.send_event(
            data={'worker': self.worker_id, 'request_id': request.request_id,
                  'count': len(self._subscribers)}, event='hello')
        if len(self._subscribers) >= self.limit:
            self.pause()
        return _workers.DEFERRED

    def on_disconnect(self, request_id):
        self._subscribers.pop(request_id, None)
        if not self._accepting and len(self._subscribers) < self.limit:
            self.resume()


class FdWorker(_workers.Worker):
    def setup(self):
        self.received = []
        self.sock = bind_datagram(os.path.join(
            self.kwargs['sock_dir'], 'fdworker.sock'))
        self.register_reader(self.sock, self.on_datagram)
        self.writes = 0
        self.write_limit = 0
        self.pair = None

    def on_datagram(self, sock):
        try:
            self.received.append(sock.recv(4096).decode())
        except BlockingIOError:
            pass

    @_workers.api('/fd/received', 'GET')
    def get_received(self, request):
        return {'received': self.received}

    @_workers.api('/fd/unregister', 'POST')
    def unregister(self, request):
        self.unregister_reader(self.sock)
        return {'ok': True}

    @_workers.api('/fd/register', 'POST')
    def register(self, request):
        self.register_reader(self.sock, self.on_datagram)
        return {'ok': True}

    @_workers.api('/fd/writer', 'POST')
    def start_writer(self, request):
        self.pair = socket.socketpair()
        for end in self.pair:
            end.setblocking(False)
        self.writes = 0
        self.pair_read = b''
        self.write_limit = int((request.data or {}).get('n', 5))
        self.register_writer(self.pair[0], self.on_writable)
        return {'ok': True}

    def on_writable(self, sock):
        sock.send(b'w')
        self.writes += 1
        if self.writes >= self.write_limit:
            self.unregister_writer(sock)

    @_workers.api('/fd/writer', 'GET')
    def writer_state(self, request):
        while True:
            try:
                chunk = self.pair[1].recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.pair_read += chunk
        return {'writes': self.writes, 'read': self.pair_read.decode()}


class App(StatusDispatcher):
    def __init__(self, sock_dir, **kwargs):
        super().__init__(**kwargs)
        self.fd_received = []
        self.fd_sock = bind_datagram(os.path.join(sock_dir, 'dispatcher.sock'))
        self.register_reader(self.fd_sock, self.on_datagram)
        self.pipe = None
        self.writes = 0
        self.write_limit = 0
        self.pipe_read = b''

    def on_datagram(self, sock):
        try:
            self.fd_received.append(sock.recv(4096).decode())
        except BlockingIOError:
            pass

    def on_writable(self, fd):
        os.write(fd, b'd')
        self.writes += 1
        if self.writes >= self.write_limit:
            self.unregister_writer(fd)


    @_workers.sync('/_fd', 'GET')
    def fd_state(self, client, path_params):
        client.respond({'received': self.fd_received})

    @_workers.sync('/_fd/unregister', 'POST')
    def fd_unregister(self, client, path_params):
        self.unregister_reader(self.fd_sock)
        client.respond({'ok': True})

    @_workers.sync('/_fd/register', 'POST')
    def fd_register(self, client, path_params):
        self.register_reader(self.fd_sock, self.on_datagram)
        client.respond({'ok': True})

    @_workers.sync('/_writer', 'POST')
    def writer_start(self, client, path_params):
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self.pipe = (read_fd, write_fd)
        self.writes = 0
        self.pipe_read = b''
        self.write_limit = int((client.data or {}).get('n', 5))
        self.register_writer(write_fd, self.on_writable)
        client.respond({'ok': True})

    @_workers.sync('/_writer', 'GET')
    def writer_state(self, client, path_params):
        while True:
            try:
                chunk = os.read(self.pipe[0], 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.pipe_read += chunk
        client.respond({'writes': self.writes, 'read': self.pipe_read.decode()})

    @_workers.sync('/_config', 'POST')
    def config(self, client, path_params):
        for pool in self._pools:
            if pool.name == 'FlowWorker':
                pool.send_config(client.data)
        client.respond({'ok': True})


if __name__ == '__main__':
    SOCK_DIR = sys.argv[1]
    os.makedirs(SOCK_DIR, exist_ok=True)
    App(SOCK_DIR, port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(FlowWorker, num_workers=2, routes=['/api/**'],
                            heartbeat_interval=0.2, log_level=_workers.LOG_INFO,
                            sock_dir=SOCK_DIR),
        _workers.WorkerPool(FlowExample, num_workers=2, routes=['/flow/**'],
                            heartbeat_interval=0.2, limit=3),
        _workers.WorkerPool(FdWorker, num_workers=1, routes=['/fd/**'],
                            heartbeat_interval=0.2, sock_dir=SOCK_DIR),
    ]).run()
