"""Large bodies: uploads spooled to files, large answers through shared memory.

POST /api/hash           sha256 of request.body_file, read in pieces
POST /api/hash-data      sha256 of request.data (bytes-like, or JSON text)
POST /api/json           what a JSON body parsed to: its keys and size
POST /api/hold           writes its pid to $SPOOL_HOLD_FILE, then sleeps
                         (a test kills it while it holds the body)
POST /api/echo           answers the body (large: through shared memory)
GET  /api/big/{size}     `size` bytes of a pattern (?text=1: as str)
POST /lpr/read           the spec's recognition pool: answers a plate;
                         on_response forwards the image to the storage pool
GET  /internal/storage/last  what the storage pool stored last
GET  /seen               what on_response saw of the last /api/big answer
POST /sync/echo          a sync route answering client.data (a spooled body:
                         its SpooledBytes view), with X-Kind its type
GET  /sync/exhaust?free=N  the dispatcher opens files until it reaches its
                         open-file limit, then closes N of them
GET  /sync/restore       closes them again

Settings from the environment: SPOOL_DIR, SPOOL_THRESHOLD,
SPOOL_MAX_CONTENT, SPOOL_REQUEST_TIMEOUT; SPOOL_CERT / SPOOL_KEY serve HTTPS;
SPOOL_FSIZE caps the size of every file the processes write (RLIMIT_FSIZE:
a disk that fills up); SPOOL_WORKER_MEMORY_MB is the body pool's
worker_memory_limit_mb.
"""
import hashlib
import json
import os
import resource
import time

import uhttp.workers as _workers


def pattern(size):
    block = bytes(range(251)) * (65536 // 251 + 1)
    out = bytearray()
    while len(out) < size:
        out += block
    return bytes(out[:size])


def body_hash(file):
    digest = hashlib.sha256()
    size = 0
    while True:
        piece = file.read(1 << 20)
        if not piece:
            return digest.hexdigest(), size
        digest.update(piece)
        size += len(piece)


class BodyWorker(_workers.Worker):
    @_workers.api('/api/hash', 'POST')
    def hash(self, request):
        sha, size = body_hash(request.body_file)
        return {'sha256': sha, 'size': size, 'pid': os.getpid(),
                'kind': type(request.data).__name__}

    @_workers.api('/api/hash-data', 'POST')
    def hash_data(self, request):
        data = request.data
        if data is None:
            data = b''
        if not isinstance(data, (bytes, bytearray)) and hasattr(
                data, 'keys'):
            data = json.dumps(data).encode()
        return {'sha256': hashlib.sha256(data).hexdigest(), 'size': len(data),
                'kind': type(request.data).__name__,
                'head': bytes(data[:4]).hex()}

    @_workers.api('/api/json', 'POST')
    def json_body(self, request):
        items = request.data['items']
        again = json.load(request.body_file)
        return {'kind': type(request.data).__name__, 'count': len(items),
                'last': items[-1], 'same': again == request.data}

    @_workers.api('/api/hold', 'POST')
    def hold(self, request):
        with open(os.environ['SPOOL_HOLD_FILE'], 'w') as file:
            file.write(str(os.getpid()))
        time.sleep(60)
        return {'held': True}

    @_workers.api('/api/echo', 'POST')
    def echo(self, request):
        return request.data

    @_workers.api('/api/big/{size:int}', 'GET')
    def big(self, request):
        data = pattern(request.path_params['size'])
        if (request.query or {}).get('text') == '1':
            return data.hex()
        return data


class LprWorker(_workers.Worker):
    @_workers.api('/lpr/read', 'POST')
    def read(self, request):
        return {'plate': 'AB-123', 'size': len(request.data)}


class StorageWorker(_workers.Worker):
    def setup(self):
        self.last = None

    @_workers.api('/internal/storage/save', 'POST')
    def save(self, request):
        image = request.data['image']
        self.last = {'kind': type(image).__name__, 'size': len(image),
                     'sha256': hashlib.sha256(image).hexdigest(),
                     'result': request.data['result']}
        return None

    @_workers.api('/internal/storage/last', 'GET')
    def stored(self, request):
        return self.last or {}


class SpoolDispatcher(_workers.Dispatcher):
    seen = {}

    def on_response(self, response, pending):
        if response.status == 200 and pending.pool.name == 'LprWorker':
            storage_pool = self._find_pool('/internal/storage')
            storage_pool.request_queue.put(_workers.Request(
                request_id=-1,
                method='POST',
                path='/internal/storage/save',
                data={
                    'image': pending.client.data,
                    'result': response.data,
                }))
        elif pending.client.path.startswith('/api/big/'):
            data = response.data
            type(self).seen = {
                'kind': type(data).__name__, 'size': len(data),
                'sha256': hashlib.sha256(
                    data.encode() if isinstance(data, str) else data
                ).hexdigest()}

    @_workers.sync('/seen')
    def last_seen(self, client, path_params):
        client.respond(type(self).seen)

    exhausted = []

    @_workers.sync('/sync/exhaust')
    def exhaust(self, client, path_params):
        free = int((client.query or {}).get('free', 1))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        type(self).limits = (soft, hard)
        highest = max(int(name) for name in os.listdir('/proc/self/fd'))
        low = highest + 64
        if hard != resource.RLIM_INFINITY:
            low = min(low, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
        try:
            while True:
                self.exhausted.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            pass
        for _ in range(free):
            os.close(self.exhausted.pop())
        client.respond({'opened': len(self.exhausted)})

    @_workers.sync('/sync/restore')
    def restore(self, client, path_params):
        while self.exhausted:
            os.close(self.exhausted.pop())
        resource.setrlimit(resource.RLIMIT_NOFILE, type(self).limits)
        client.respond({'restored': True})

    @_workers.sync('/sync/echo', 'POST')
    def sync_echo(self, client, path_params):
        client.respond(client.data, headers={
            'X-Kind': type(client.data).__name__})


if __name__ == '__main__':
    env = os.environ
    if env.get('SPOOL_FSIZE'):
        import resource
        limit = int(env['SPOOL_FSIZE'])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    context = None
    if env.get('SPOOL_CERT'):
        import ssl
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(env['SPOOL_CERT'], env['SPOOL_KEY'])
    SpoolDispatcher(
        port=0, address='127.0.0.1', ssl_context=context,
        spool_dir=env.get('SPOOL_DIR') or None,
        spool_threshold=int(env.get('SPOOL_THRESHOLD', 256 * 1024)),
        max_content_length=int(env.get('SPOOL_MAX_CONTENT', 2 << 30)),
        request_timeout=float(env.get('SPOOL_REQUEST_TIMEOUT', 30)),
        pools=[
            _workers.WorkerPool(
                BodyWorker, num_workers=2, routes=['/api/**'], timeout=120,
                worker_memory_limit_mb=int(
                    env.get('SPOOL_WORKER_MEMORY_MB', 0)) or None),
            _workers.WorkerPool(LprWorker, num_workers=1,
                                routes=['/lpr/**']),
            _workers.WorkerPool(StorageWorker, num_workers=1,
                                routes=['/internal/storage/**']),
        ],
    ).run()
