"""Dispatcher hooks assigned on the object instead of defined in a
subclass: `dispatcher.do_check = check` before run(), and in a subclass's
__init__ after super().__init__(). argv[1] picks the way."""
import sys

import uhttp.workers as _workers


class SecretWorker(_workers.Worker):
    @_workers.api('/api/secret', 'GET')
    def secret(self, request):
        return {'secret': 42, 'context': request.context}


def check(client):
    if client.headers.get('x-api-key') != 'key':
        client.respond({'error': 'unauthorized'}, status=401)
        raise _workers.RejectRequest()


class AssigningDispatcher(_workers.Dispatcher):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.do_check = check
        self.on_request_accepted = lambda request_id, client, pool: 'ctx'
        self.on_response = lambda response, pending: self.log.warning(
            "on_response saw %d", response.status)


def main(way):
    settings = dict(port=0, address='127.0.0.1',
                    pools=[_workers.WorkerPool(SecretWorker)])
    if way == 'subclass':
        dispatcher = AssigningDispatcher(**settings)
    else:
        dispatcher = _workers.Dispatcher(**settings)
        dispatcher.do_check = check
        dispatcher.on_request_accepted = lambda request_id, client, pool: 'ctx'
        dispatcher.on_response = lambda response, pending: dispatcher.log.warning(
            "on_response saw %d", response.status)
    dispatcher.run()


if __name__ == '__main__':
    main(sys.argv[1])
