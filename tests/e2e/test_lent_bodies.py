"""Bodies of 64 KiB and more lent to the pipes (pipelend.py) arrive intact
under concurrency, both ways, and through a worker killed mid-load: every
answer that comes back 200 carries exactly the bytes sent, and the server
keeps serving."""
import concurrent.futures as _futures
import hashlib
import http.client
import os
import random
import signal

import pytest

import uhttp.workers as workers
from uhttp.workers.testing import TestServer

SIZES = [64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 100_000, 200_003,
         256 * 1024]   # up to spool_threshold: all through the pipes


class Bodies(workers.Worker):
    @workers.api('/api/echo', 'POST')
    def echo(self, request):
        return bytes(request.data)          # bytes: lent on the way back

    @workers.api('/api/digest', 'POST')
    def digest(self, request):
        data = request.data
        return {'sha': hashlib.sha256(data).hexdigest(), 'size': len(data)}

    @workers.api('/api/pid', 'GET')
    def pid(self, request):
        return {'pid': os.getpid()}


@pytest.fixture
def server():
    pool = workers.WorkerPool(Bodies, num_workers=3, routes=['/api/**'],
                              timeout=20)
    with TestServer(workers.Dispatcher, [pool]) as running:
        yield running


def post(port, path, body):
    connection = http.client.HTTPConnection('127.0.0.1', port, timeout=30)
    try:
        connection.request('POST', path, body=body,
                           headers={'Content-Type': 'application/octet-stream'})
        reply = connection.getresponse()
        return reply.status, reply.read()
    finally:
        connection.close()


def one(port, index):
    rng = random.Random(index)
    body = rng.randbytes(rng.choice(SIZES))
    if index % 2:
        status, answer = post(port, '/api/echo', body)
        return status, status != 200 or answer == body
    status, answer = post(port, '/api/digest', body)
    expected = ('{"sha": "%s", "size": %d}' % (
        hashlib.sha256(body).hexdigest(), len(body))).encode()
    return status, status != 200 or answer == expected


def test_concurrent_bodies_arrive_intact_both_ways(server):
    with _futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(lambda index: one(server.port, index),
                                range(240)))
    assert [status for status, _ in results] == [200] * len(results)
    assert all(intact for _, intact in results)


def test_a_worker_killed_mid_load_corrupts_nothing(server):
    pids = {server.get('/api/pid').json()['pid'] for _ in range(12)}
    victim = sorted(pids)[0]
    with _futures.ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(one, server.port, index)
                   for index in range(300)]
        os.kill(victim, signal.SIGKILL)
        results = [future.result(timeout=60) for future in futures]
    assert all(intact for _, intact in results), 'a 200 with the wrong bytes'
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 500, 502, 503}, set(statuses)
    assert statuses.count(200) >= len(statuses) - 12  # the few it held
    assert one(server.port, 1000) == (200, True)
