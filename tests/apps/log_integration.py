"""Logging integration: with LOG_MODE=logging every record goes to the
standard library's logging (here a handler writing JSON lines to
LOG_FILE, as an application's own logging setup would); with
LOG_MODE=json the dispatcher prints one JSON object per line."""

import json
import logging
import os

import uhttp.workers as _workers
from status_app import StatusDispatcher


class JsonFileHandler(logging.Handler):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def emit(self, record):
        with open(self.path, 'a', encoding='utf-8') as file:
            file.write(json.dumps({
                'logger': record.name, 'levelno': record.levelno,
                'message': record.getMessage(),
                'pool': getattr(record, 'pool', 'missing'),
                'worker_id': getattr(record, 'worker_id', 'missing'),
                'pid': getattr(record, 'pid', 'missing')}) + '\n')


class NoteWorker(_workers.Worker):
    @_workers.api('/api/note/{text}', 'GET')
    def note(self, request):
        self.log.warning('note %s', request.path_params['text'])
        return {'pid': os.getpid(), 'worker': self.worker_id}

    @_workers.api('/api/boom', 'GET')
    def boom(self, request):
        raise ValueError('kaboom')


if __name__ == '__main__':
    mode = os.environ['LOG_MODE']
    options = {}
    if mode == 'logging':
        root = logging.getLogger()
        root.setLevel(logging.DEBUG)
        root.addHandler(JsonFileHandler(os.environ['LOG_FILE']))
        root.addHandler(logging.StreamHandler())  # the harness reads it
        options['use_logging'] = True
    else:
        options['log_format'] = 'json'
    StatusDispatcher(port=0, address='127.0.0.1', pools=[
        _workers.WorkerPool(NoteWorker, num_workers=2, routes=['/api/**'],
                            log_level=_workers.LOG_INFO)], **options).run()
