"""A steady load for the zero-downtime tests: `clients` keep-alive
connections asking `path` until finished, counting every status, every
connection error and what `note(body)` picks out of each answer."""

import collections
import http.client
import threading


class Load:
    def __init__(self, port, path, clients=8, note=None):
        self.port = port
        self.path = path
        self.note = note
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.statuses = []
        self.errors = []
        self.notes = collections.Counter()
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(clients)]
        for thread in self.threads:
            thread.start()

    def connect(self):
        return http.client.HTTPConnection('127.0.0.1', self.port, timeout=20)

    def run(self):
        connection = self.connect()
        while not self.stop_event.is_set():
            try:
                connection.request('GET', self.path)
                reply = connection.getresponse()
                body = reply.read()
                if reply.getheader('connection', '').lower() == 'close':
                    connection.close()   # the server said so: a new one next
            except Exception as err:  # pylint: disable=broad-except
                with self.lock:
                    self.errors.append(repr(err))
                connection.close()
                connection = self.connect()
                continue
            noted = self.note(body) if self.note and reply.status == 200 else None
            with self.lock:
                self.statuses.append(reply.status)
                if noted is not None:
                    self.notes[noted] += 1
        connection.close()

    def finish(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in self.threads)
        return self
