"""An event polled before its worker's pipes were closed (the worker reaped
earlier in the same loop turn) is dropped, not read: by then the number
may belong to a client socket accepted since, and reading it through the
dead worker's frame reader robbed that client of its request head (seen
about once in 10,000 uploads while SIGHUP reloads replaced workers)."""
import os
import socket

import uhttp.workers as workers
from uhttp.workers import channel
from uhttp.workers.dispatcher import core_of
from uhttp.workers.loop import EVENT_READ
from uhttp.workers.pool import WorkerHandle


class ItemWorker(workers.Worker):
    pass


def relay_and_handle():
    """A dispatcher's relay (not running) and a slot of its one pool."""
    pool = workers.WorkerPool(ItemWorker, routes=['/items/**'])
    core = core_of(workers.Dispatcher(pools=[pool], port=0))
    return core.relay, WorkerHandle(pool, 0)


def test_an_event_of_a_closed_pipe_reads_nothing_from_its_number():
    relay, handle = relay_and_handle()
    client, peer = socket.socketpair()
    try:
        # the handle's pipe had this number; it was closed and reaped, and
        # a client's socket got the number since
        handle.reader = channel.FrameReader(client.fileno())
        handle.closed()
        peer.sendall(b'POST /items HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc')
        relay.worker_event(handle, client.fileno(), EVENT_READ)
        client.setblocking(False)
        assert client.recv(100).startswith(b'POST /items HTTP/1.1')
    finally:
        client.close()
        peer.close()


def test_an_event_of_the_live_pipe_is_read():
    relay, handle = relay_and_handle()
    read_end, write_end = os.pipe()
    try:
        handle.from_fd = read_end
        handle.reader = channel.FrameReader(read_end)
        os.write(write_end, b'x')  # half a frame: read, kept for later
        relay.worker_event(handle, read_end, EVENT_READ)
        os.set_blocking(read_end, False)
        try:
            left = os.read(read_end, 10)
        except BlockingIOError:
            left = b''
        assert left == b''
    finally:
        os.close(read_end)
        os.close(write_end)
