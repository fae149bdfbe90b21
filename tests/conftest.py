"""pytest fixtures over the harness (tests/harness.py).

`app_server('name', *args, env={...})` starts `tests/apps/<name>.py` and
returns a started AppServer; teardown kills the whole session by its pid.
"""

import pytest

from harness import AppServer

@pytest.fixture
def app_server():
    """Factory: app_server('basic', *args, env={...}) -> started AppServer."""
    started = []

    def start(name, *args, env=None, cwd=None, timeout=15):
        server = AppServer(name, args, env, cwd)
        started.append(server)
        return server.start(timeout)

    yield start
    for server in started:
        server.cleanup()


@pytest.fixture(scope='module')
def module_server(request):
    """Module-wide server: set `APP = 'name'` (and optional `APP_ARGS`,
    `APP_ENV`) in the test module."""
    name = getattr(request.module, 'APP')
    server = AppServer(name, getattr(request.module, 'APP_ARGS', ()),
                       getattr(request.module, 'APP_ENV', None))
    server.start()
    yield server
    server.cleanup()
