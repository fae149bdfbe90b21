"""uhttp-workers under the large-body benchmark (benchmarks/large.py).

POST /hash   sha256 of the body, read from request.body_file 1 MiB at a
             time (a spooled upload: the worker reads the spool file)
GET  /file   FileResponse of --file (sent by the dispatcher with sendfile)
GET  /static/<name>   --file as a static file of the dispatcher (its
             directory mounted at /static/; sendfile too)
GET  /ping   a small answer, to know the server is up

    python benchmarks/apps/large_app.py --port 8080 --file /tmp/big.bin
"""

import argparse
import hashlib
import os

import uhttp.workers as _workers


class LargeWorker(_workers.Worker):
    @_workers.api('/hash', 'POST')
    def hash(self, request):
        digest = hashlib.sha256()
        size = 0
        for piece in iter(lambda: request.body_file.read(1 << 20), b''):
            digest.update(piece)
            size += len(piece)
        return {'sha256': digest.hexdigest(), 'size': size}

    @_workers.api('/file', 'GET')
    def file(self, request):
        return _workers.FileResponse(self.kwargs['path'])

    @_workers.api('/ping', 'GET')
    def ping(self, request):
        return {'ok': True}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--host', default='127.0.0.1')
    parser.add_argument('--port', type=int, default=8080)
    parser.add_argument('--file', required=True)
    parser.add_argument('--spool-dir', default=None)
    args = parser.parse_args()
    _workers.Dispatcher(
        port=args.port, address=args.host, log_level=_workers.LOG_WARNING,
        max_content_length=16 << 30, spool_dir=args.spool_dir,
        static_routes={'/static/': os.path.dirname(
            os.path.abspath(args.file))},
        pools=[_workers.WorkerPool(LargeWorker, num_workers=2, timeout=600,
                                   path=args.file)],
    ).run()


if __name__ == '__main__':
    main()
