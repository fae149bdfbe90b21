"""Reports, over HTTP, the attribute names the library's base classes have
at run time: in a worker process (Worker, ApiHandler instances) and in the
running dispatcher. tests/e2e/test_user_names.py names handlers after them."""

import uhttp.workers as _workers

from status_app import StatusDispatcher


def library_names(instance, base):
    """The names an instance of `base` has: its instance attributes and
    every member of the base class, without dunders."""
    names = set(vars(instance)) | set(dir(base))
    return sorted(name for name in names
                  if not (name.startswith('__') and name.endswith('__')))


class ProbeHandler(_workers.ApiHandler):
    PATTERN = '/probe'


class ProbeWorker(_workers.Worker):
    HANDLERS = [ProbeHandler]

    @_workers.api('/probe/names', 'GET')
    def probe_names(self, request):
        handler = ProbeHandler(self)
        names = set(library_names(self, _workers.Worker))
        names.discard('probe_names')
        return {'worker': sorted(names),
                'handler': library_names(handler, _workers.ApiHandler)}


class ProbeDispatcher(StatusDispatcher):
    @_workers.sync('/probe/dispatcher')
    def probe_dispatcher(self, client, path_params):
        names = set(library_names(self, _workers.Dispatcher))
        names -= {'probe_dispatcher', 'probe', 'status'}
        client.respond({'dispatcher': sorted(names)})


if __name__ == '__main__':
    ProbeDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(ProbeWorker, num_workers=1)]).run()
