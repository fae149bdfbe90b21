"""File responses: handlers that answer with FileResponse.

GET /api/file/{size:int}    writes `size` bytes of a deterministic pattern
                            to a temp file, answers with it and deletes the
                            path at once (?download=NAME, ?deferred=1 to
                            answer through request.respond())
GET /api/file-object/{size:int}  the same through an open file object
GET /api/fixed              returns FileResponse of $EXT_FILES_FIXED (a
                            file that does not change: conditional GET)
GET /api/weak               the same with a weak ETag of its own
GET /api/status-file, /api/sys-file   /proc and /sys files (sizes that lie)
GET /api/missing            a path that does not exist (404)
GET /api/directory          a directory (500)
GET /api/write-only         a file object opened for writing only (500)
GET /api/typed              a named .txt file (content type from the name)
GET /api/exit/{size:int}    answers with a file, then the worker exits
GET /api/pid                the worker's pid
GET /sync/report, /sync/file/{size:int}, /sync/memory, /sync/missing,
    /sync/directory         the same from sync handlers (in the dispatcher)
GET /static/<name>          a static file of $EXT_FILES_FIXED's directory
                            (the dispatcher sends it itself)

EXT_FILES_CERT / EXT_FILES_KEY serve HTTPS with that certificate.
"""
import io
import os
import tempfile
import threading

import uhttp.workers as _workers


def pattern(size):
    block = bytes(range(251)) * (65536 // 251 + 1)
    out = bytearray()
    while len(out) < size:
        out += block
    return bytes(out[:size])


def temp_file(size, suffix=''):
    fd, path = tempfile.mkstemp(prefix='uw-file-', suffix=suffix)
    with os.fdopen(fd, 'wb') as file:
        file.write(pattern(size))
    return path


class FileWorker(_workers.Worker):
    @_workers.api('/api/file/{size:int}')
    def file(self, request):
        size = request.path_params['size']
        path = temp_file(size)
        query = request.query or {}
        response = _workers.FileResponse(
            path, download_name=query.get('download'),
            headers={'X-Size': str(size)})
        if query.get('deferred') == '1':
            def later():
                request.respond(response)
                os.unlink(path)
            threading.Thread(target=later).start()
            return _workers.DEFERRED
        request.respond(response)
        os.unlink(path)  # the dispatcher holds the file already
        return None

    @_workers.api('/api/fixed')
    def fixed(self, request):
        return _workers.FileResponse(os.environ['EXT_FILES_FIXED'])

    @_workers.api('/api/versioned')
    def versioned(self, request):   # its own validators, as a cache sees them
        return _workers.FileResponse(os.environ['EXT_FILES_FIXED'], headers={
            'ETag': '"v1"', 'Last-Modified': 'Sun, 01 Nov 2026 10:00:00 GMT'})

    @_workers.api('/api/weak')
    def weak(self, request):        # a weak ETag of its own (and range
        # headers, which are the server's)
        return _workers.FileResponse(os.environ['EXT_FILES_FIXED'], headers={
            'ETag': 'W/"v1"', 'Accept-Ranges': 'none',
            'Content-Range': 'bytes 0-1/2'})

    @_workers.api('/api/file-object/{size:int}')
    def file_object(self, request):
        path = temp_file(request.path_params['size'])
        handle = open(path, 'rb')
        os.unlink(path)
        return _workers.FileResponse(handle, content_type='application/x-test')

    @_workers.api('/api/body-back', 'POST')
    def body_back(self, request):
        # the body as a file: its spool file, or (small) a memory file
        return _workers.FileResponse(request.body_file,
                                     content_type='application/x-echo')

    @_workers.api('/api/report')
    def report(self, request):
        return _workers.FileResponse(io.BytesIO(b'name,items\nbolts,12\n'),
                                     download_name='report.csv')

    @_workers.api('/api/status-file')
    def status_file(self, request):
        # /proc files say they are empty (st_size 0) but are not
        return _workers.FileResponse('/proc/self/status',
                                     content_type='text/plain')

    @_workers.api('/api/sys-file')
    def sys_file(self, request):
        # sysfs files say they hold a page (4096 bytes) but are not
        return _workers.FileResponse('/sys/class/net/lo/mtu',
                                     content_type='text/plain')

    @_workers.api('/api/missing')
    def missing(self, request):
        return _workers.FileResponse('/nonexistent/uw-no-such-file')

    @_workers.api('/api/directory')
    def directory(self, request):
        return _workers.FileResponse(tempfile.gettempdir())

    @_workers.api('/api/write-only')
    def write_only(self, request):
        path = temp_file(1000)
        handle = open(path, 'ab')
        os.unlink(path)
        return _workers.FileResponse(handle)

    @_workers.api('/api/typed')
    def typed(self, request):
        fd, path = tempfile.mkstemp(prefix='uw-file-', suffix='.txt')
        os.write(fd, b'plain text\n')
        os.close(fd)
        request.respond(_workers.FileResponse(path))
        os.unlink(path)
        return None

    @_workers.api('/api/exit/{size:int}')
    def exit_after(self, request):
        path = temp_file(request.path_params['size'])
        request.respond(_workers.FileResponse(path))
        os.unlink(path)
        os._exit(0)

    @_workers.api('/api/pid')
    def pid_of(self, request):
        return {'pid': os.getpid()}


class FileDispatcher(_workers.Dispatcher):
    """Sync handlers that answer with a FileResponse themselves."""

    @_workers.sync('/sync/report')
    def report(self, client, path_params):
        client.respond(_workers.FileResponse(
            os.environ['EXT_FILES_FIXED'], download_name='report \u00e9.bin',
            headers={'X-From': 'sync'}))

    @_workers.sync('/sync/file/{size:int}')
    def file(self, client, path_params):
        path = temp_file(path_params['size'])
        client.respond(_workers.FileResponse(open(path, 'rb')))
        os.unlink(path)

    @_workers.sync('/sync/memory')
    def memory(self, client, path_params):
        client.respond(_workers.FileResponse(io.BytesIO(b'name,items\n'),
                                             content_type='text/csv'),
                       status=201)

    @_workers.sync('/sync/missing')
    def missing(self, client, path_params):
        client.respond(_workers.FileResponse('/nonexistent/items.bin'))

    @_workers.sync('/sync/directory')
    def directory(self, client, path_params):
        client.respond(_workers.FileResponse(tempfile.gettempdir()))


if __name__ == '__main__':
    context = None
    if os.environ.get('EXT_FILES_CERT'):  # HTTPS: the file goes in reads
        import ssl
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(os.environ['EXT_FILES_CERT'],
                                os.environ['EXT_FILES_KEY'])
    FileDispatcher(
        port=0, address='127.0.0.1', ssl_context=context,
        static_routes={'/static/': os.path.dirname(
            os.environ['EXT_FILES_FIXED'])},
        pools=[_workers.WorkerPool(FileWorker, num_workers=2,
                                   routes=['/api/**'])],
    ).run()
