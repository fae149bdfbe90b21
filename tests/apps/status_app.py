"""What many test apps share: a Dispatcher with the sync routes the tests
read, /probe (is the dispatcher serving?) and /_status (pools, pending
requests, open streams and connections, queued requests)."""

import uhttp.workers as _workers


class StatusDispatcher(_workers.Dispatcher):
    @_workers.sync('/probe')
    def probe(self, client, path_params):
        client.respond({'ok': True})

    @_workers.sync('/_status')
    def status(self, client, path_params):
        # a sync handler named `status` replaces Dispatcher.status() on this
        # class; the base class's method still gives the dispatcher's status
        client.respond(_workers.Dispatcher.status(self))
