"""HTTPS: the dispatcher with an ssl_context built from the certificate
and key in CORE_TLS_CERT / CORE_TLS_KEY."""
import os
import ssl

import uhttp.workers as _workers


class TlsWorker(_workers.Worker):
    @_workers.api('/api/hello', 'GET')
    def hello(self, request):
        return {'hello': 'tls', 'worker': self.worker_id}

    @_workers.api('/api/echo', 'POST')
    def echo(self, request):
        return {'data': request.data}


class TlsDispatcher(_workers.Dispatcher):
    @_workers.sync('/health')
    def health(self, client, path_params):
        client.respond({'status': 'ok'})


def main():
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(os.environ['CORE_TLS_CERT'],
                            os.environ['CORE_TLS_KEY'])
    TlsDispatcher(
        port=0, address='127.0.0.1', ssl_context=context, access_log=True,
        pools=[_workers.WorkerPool(TlsWorker, num_workers=2,
                                   routes=['/api/**'])],
    ).run()


if __name__ == '__main__':
    main()
