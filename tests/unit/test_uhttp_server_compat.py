"""The installed uhttp-server has every name uhttp-workers relies on.

uhttp-workers is pinned to the uhttp-server series it is tested with
(pyproject.toml). Its HTTP glue (uhttp/workers/http/connection.py,
its mixins and server.py) subclasses uhttp-server's HttpConnection and HttpServer and uses
some of their private names; they are listed here, and nowhere else in the
library may use them. When a test here fails, the message names what the
installed uhttp-server lacks, and its version.
"""

import ast
import importlib.metadata
import os
import re

import pytest

import uhttp.server as _server
from uhttp.workers.http import parse as _parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
HTTP = os.path.join(ROOT, 'uhttp', 'workers', 'http')
PIN = '>=3.2,<3.3'

# module names (all public), used across the library
MODULE = (
    'HttpServer', 'HttpConnection', 'ClientError', 'HttpError',
    'HttpErrorWithResponse', 'STATUS_CODES', 'METHODS', 'PROTOCOLS',
    'HttpDisconnected', 'CONTENT_LENGTH', 'CONTENT_TYPE_JSON',
    'CONTENT_TYPE_XFORMDATA',
    'parse_query', 'unmap_ipv4', 'encode_response_data')

# HttpConnection's public API: the `client` users get in sync handlers and
# hooks, and what the glue and the dispatcher call
CONNECTION_PUBLIC = (
    'respond', 'respond_file', 'respond_redirect', 'response_stream',
    'response_stream_end', 'send_chunk', 'send_event', 'response_ndjson',
    'send_ndjson', 'method', 'url', 'protocol', 'path', 'query', 'headers',
    'headers_get', 'headers_get_attribute', 'headers_all', 'data', 'cookies',
    'content_type', 'content_length', 'host', 'full_url', 'remote_address',
    'remote_addresses', 'socket_address', 'addr', 'is_secure', 'socket',
    'context', 'is_loaded', 'is_timed_out', 'is_websocket',
    'has_data_to_send', 'send_buffer_size', 'try_send', 'process_request',
    'handle_event', 'reset', 'close', 'update_activity')

# HttpConnection's private names that http/connection.py uses
CONNECTION_PRIVATE = (
    # state set by HttpConnection.__init__ and reset()
    '_server', '_addr', '_socket', '_buffer', '_send_buffer', '_interest',
    '_detached', '_method', '_url', '_protocol', '_headers',
    '_headers_repeated', '_data', '_data_loaded', '_path', '_query',
    '_content_length', '_is_streaming', '_response_started',
    '_response_keep_alive', '_file_handle', '_requests_count',
    '_request_start', '_headers_scanned',
    '_max_headers_length', '_max_content_length', '_max_send_buffer_size',
    '_request_timeout',
    # methods called
    '_recv_to_buffer', '_send', '_update_interest',
    '_register',
    # methods overridden: uhttp-server must still call them by these names
    '_read_headers', '_process_data', '_prepare_response',
    '_build_response_header', '_finalize_sent_response')

# HttpConnection's private names that http/takeover.py (the WebSocket
# hand-over, a mixin of Connection) uses
TAKEOVER_PRIVATE = (
    '_socket', '_buffer', '_read_paused', '_is_streaming',
    '_response_started', '_response_keep_alive', '_send', '_update_interest',
    '_interest', '_register')

# HttpConnection's private names that http/spoolbody.py (request bodies
# spooled to a file, a mixin of Connection) uses
SPOOLBODY_PRIVATE = (
    '_server', '_buffer', '_data', '_data_loaded', '_socket', '_addr',
    '_content_length', '_rx_bytes_counter', '_last_activity',
    '_recv_to_buffer')  # overridden: process_request() calls it

# HttpConnection's private names that http/bodyinto.py (large in-memory
# bodies read into their own buffer, a mixin of Connection) uses
BODYINTO_PRIVATE = (
    '_method', '_content_length', '_data', '_data_loaded', '_buffer',
    '_socket', '_rx_bytes_counter',
    '_recv_to_buffer')  # overridden: process_request() calls it

# HttpConnection's private names that http/keepalive.py (the keep-alive
# cycle's common case, a mixin of Connection) uses
KEEPALIVE_PRIVATE = (
    '_server', '_response_started', '_is_streaming', '_socket', '_detached',
    '_buffer', '_addr', '_rx_bytes_counter', '_last_activity',
    '_file_handle', '_body_file_handle', '_max_headers_length',
    '_read_paused', '_update_interest', '_should_keep_alive',
    '_request_start', '_headers', '_protocol', '_requests_count',
    '_keep_alive_max_requests', '_interest')

# HttpConnection's private names that http/continuation.py (100 Continue
# once the server wants the body, a mixin of Connection) uses
CONTINUATION_PRIVATE = ('_server', '_expect_continue', '_send_100_continue')

# HttpConnection's private names that http/streamdrain.py (streams queued
# whole while the dispatcher holds their worker back) uses
STREAMDRAIN_PRIVATE = ('_socket', '_send_buffer', '_file_handle', '_send',
                       '_is_streaming', '_response_started')
# ... and that http/closenotify.py (a TLS connection's close_notify) uses
CLOSENOTIFY_PRIVATE = ('_is_streaming',)

SERVER_PUBLIC = (
    'socket', 'selector', 'is_secure', 'close', 'handle_event',
    'remove_connection', 'maintenance')

# HttpServer's private names that http/server.py uses
SERVER_PRIVATE = (
    '_socket', '_kwargs', '_ssl_context', '_trusted_proxies',
    '_max_clients', '_waiting_connections', '_resume', '_last_maintenance',
    '_maintenance_interval',
    '_accept')  # overridden: HttpServer.handle_event() calls it

GLUE = {'connection.py': (_server.HttpConnection, CONNECTION_PRIVATE),
        'server.py': (_server.HttpServer, SERVER_PRIVATE),
        'takeover.py': (_server.HttpConnection, TAKEOVER_PRIVATE),
        'spoolbody.py': (_server.HttpConnection, SPOOLBODY_PRIVATE),
        'bodyinto.py': (_server.HttpConnection, BODYINTO_PRIVATE),
        'keepalive.py': (_server.HttpConnection, KEEPALIVE_PRIVATE),
        'streamdrain.py': (_server.HttpConnection, STREAMDRAIN_PRIVATE),
        'closenotify.py': (_server.HttpConnection, CLOSENOTIFY_PRIVATE),
        'continuation.py': (_server.HttpConnection, CONTINUATION_PRIVATE)}
# Connection and the mixins it is made of: the private names one of them
# defines are the others' own too
MIXINS = {'connection.py': ('takeover.py', 'sendfile.py', 'spoolbody.py',
                             'bodyinto.py', 'keepalive.py', 'streamdrain.py',
                             'closenotify.py', 'continuation.py'),
          'streamdrain.py': ('connection.py',),
          'keepalive.py': ('connection.py', 'spoolbody.py', 'bodyinto.py',
                           'continuation.py'),
          'spoolbody.py': ('connection.py',),
          'bodyinto.py': ('connection.py', 'spoolbody.py')}


def installed():
    try:
        return importlib.metadata.version('uhttp-server')
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'


def lacks(what, missing):
    return (f"uhttp-server {installed()} (at {_server.__file__}) lacks "
            f"{what}: {', '.join(missing)}. uhttp-workers is tested with "
            f"uhttp-server{PIN}.")


@pytest.fixture(scope='module')
def connection():
    return _server.HttpConnection(None, None, ('127.0.0.1', 0))


@pytest.fixture(scope='module')
def server():
    server = _server.HttpServer(address='127.0.0.1', port=0)
    yield server
    server.close()


def has(instance, name):
    """Defined on the class (methods, properties) or set on an instance."""
    return hasattr(type(instance), name) or name in vars(instance)


def test_module_names():
    missing = [name for name in MODULE if not hasattr(_server, name)]
    assert not missing, lacks("module names", missing)


def test_connection_names(connection):
    missing = [name for name in CONNECTION_PUBLIC + CONNECTION_PRIVATE
               if not has(connection, name)]
    assert not missing, lacks("HttpConnection names", missing)


def test_server_names(server):
    missing = [name for name in SERVER_PUBLIC + SERVER_PRIVATE
               if not has(server, name)]
    assert not missing, lacks("HttpServer names", missing)


def test_overridden_methods_are_methods(connection, server):
    for instance, names in ((connection, ('_read_headers', '_process_data',
                                          '_prepare_response',
                                          '_build_response_header',
                                          '_finalize_sent_response')),
                            (server, ('_accept',))):
        wrong = [name for name in names
                 if not callable(getattr(type(instance), name, None))]
        assert not wrong, lacks(f"{type(instance).__name__} methods", wrong)


def test_methods_and_protocols_agree_with_the_parser():
    assert set(_server.METHODS) == _parse.METHODS, (
        f"uhttp-server {installed()} METHODS {sorted(_server.METHODS)} differ "
        f"from uhttp/workers/http/parse.py's {sorted(_parse.METHODS)}")
    assert set(_server.PROTOCOLS) == _parse.PROTOCOLS, (
        f"uhttp-server {installed()} PROTOCOLS {sorted(_server.PROTOCOLS)} "
        f"differ from uhttp/workers/http/parse.py's {sorted(_parse.PROTOCOLS)}")


def test_installed_version_is_the_tested_series():
    version = installed()
    found = re.match(r'(\d+)\.(\d+)', version)
    assert found and (3, 2) <= (int(found[1]), int(found[2])) < (3, 3), (
        f"uhttp-server {version} is installed; uhttp-workers is tested with "
        f"uhttp-server{PIN}")


def test_the_pin_is_declared():
    with open(os.path.join(ROOT, 'pyproject.toml'), encoding='utf-8') as file:
        assert f'"uhttp-server{PIN}"' in file.read()
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as file:
        readme = file.read()
    assert f'uhttp-server{PIN}' in readme
    assert not re.search(r'uhttp-server>=[^`]*,<4', readme)


# -- where the private names are used -------------------------------------------

def private_uses(path):
    """(name, on) for every `x._name` in a module (not dunders), `on` being
    'self', 'super()' or the source of x; and the private names it defines
    (functions, methods, and attributes assigned on self)."""
    with open(path, encoding='utf-8') as file:
        tree = ast.parse(file.read())
    uses = set()
    defined = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name.startswith('_') and not node.name.startswith('__'):
                defined.add(node.name)
                uses.add((node.name, 'self'))
        elif isinstance(node, ast.Attribute):
            if node.attr.startswith('_') and not node.attr.startswith('__'):
                on = ast.unparse(node.value)
                uses.add((node.attr, on))
                if on == 'self' and isinstance(node.ctx, ast.Store):
                    defined.add(node.attr)
    return uses, defined


def test_glue_uses_listed_privates_of_its_own_base_class_only(connection,
                                                              server):
    instances = {'connection.py': connection, 'server.py': server,
                 'takeover.py': connection, 'spoolbody.py': connection,
                 'bodyinto.py': connection, 'keepalive.py': connection,
                 'streamdrain.py': connection, 'closenotify.py': connection,
                 'continuation.py': connection}
    for name, (_, listed) in GLUE.items():
        uses, defined = private_uses(os.path.join(HTTP, name))
        for mixin in MIXINS.get(name, ()):  # Connection's own parts
            defined |= private_uses(os.path.join(HTTP, mixin))[1]
        base = instances[name]
        foreign = sorted(f'{on}.{attr}' for attr, on in uses
                         if on not in ('self', 'super()'))
        assert not foreign, (
            f"http/{name} reaches into other objects' private names: "
            f"{', '.join(foreign)}")
        used = {attr for attr, _ in uses}
        unlisted = sorted(attr for attr in used
                          if has(base, attr) and attr not in listed)
        assert not unlisted, (
            f"http/{name} uses uhttp-server private names not listed in "
            f"{os.path.relpath(__file__, ROOT)}: {', '.join(unlisted)}")
        unknown = sorted(attr for attr in used
                         if not has(base, attr) and attr not in defined)
        assert not unknown, lacks(f"names http/{name} uses", unknown)
        unused = sorted(set(listed) - used)
        assert not unused, (
            f"listed but not used by http/{name}: {', '.join(unused)}")


@pytest.mark.parametrize('name', ['__init__.py', 'parse.py', 'serialize.py'])
def test_the_protocol_modules_use_no_private_names_but_their_own(name):
    uses, _ = private_uses(os.path.join(HTTP, name))
    foreign = sorted(f'{on}.{attr}' for attr, on in uses
                     if on not in ('self', 'super()'))
    assert not foreign, f"http/{name} uses {', '.join(foreign)}"


def test_parse_does_not_import_uhttp_server():
    with open(os.path.join(HTTP, 'parse.py'), encoding='utf-8') as file:
        tree = ast.parse(file.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or '')
    assert not [module for module in imported if module.startswith('uhttp')]
