"""pytest plugin (registered through the `pytest11` entry point): the
`uhttp_workers_server` fixture.

    def test_items(uhttp_workers_server):
        server = uhttp_workers_server(MyDispatcher, pools=[WorkerPool(ItemWorker)])
        assert server.get('/api/items').status == 200

Every server the factory starts is stopped at the end of the test.
"""

import pytest

from .testing import TestServer


@pytest.fixture
def uhttp_workers_server():
    """Factory: uhttp_workers_server(DispatcherClass, pools=[...], **kwargs)
    -> a started TestServer, stopped when the test ends."""
    started = []

    def start(dispatcher_class, pools=None, **kwargs):
        server = TestServer(dispatcher_class, pools, **kwargs)
        started.append(server)
        return server.start()

    yield start
    for server in reversed(started):
        server.stop()
