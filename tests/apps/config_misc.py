"""Dispatcher parameters seen at start and stop, for tests/e2e/test_config.py.

Usage: config_misc.py MODE [ARG]
  shutdown [SECONDS]  shutdown_timeout=SECONDS (the default without it)
  default-port        no port argument (the default port)
  tls                 ssl_context from TLS_CERT / TLS_KEY
"""
import os
import ssl
import sys
import time

import uhttp.workers as _workers


class SlowWorker(_workers.Worker):
    @_workers.api('/api/sleep/{ms:int}', 'GET')
    def sleep(self, request):
        time.sleep(request.path_params['ms'] / 1000.0)
        return {'slept': request.path_params['ms']}

    @_workers.api('/api/hello', 'GET')
    def hello(self, request):
        return {'hello': 'world'}


class MiscApp(_workers.Dispatcher):
    @_workers.sync('/sync/hello')
    def hello(self, client, path_params):
        client.respond({'sync': 'hello'})


def main():
    mode = sys.argv[1]
    pools = [_workers.WorkerPool(SlowWorker, routes=['/api/**'])]
    if mode == 'shutdown':
        kwargs = {}
        if len(sys.argv) > 2:
            kwargs['shutdown_timeout'] = float(sys.argv[2])
        MiscApp(port=0, address='127.0.0.1', pools=pools, **kwargs).run()
    elif mode == 'default-port':
        MiscApp(address='127.0.0.1', pools=pools).run()
    elif mode == 'tls':
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.environ['TLS_CERT'], os.environ['TLS_KEY'])
        MiscApp(port=0, address='127.0.0.1', pools=pools,
                ssl_context=context).run()
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == '__main__':
    main()
