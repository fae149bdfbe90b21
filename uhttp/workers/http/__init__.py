"""The HTTP layer: our protocol code, and thin glue over uhttp-server 3.2.

- `parse`: request heads, targets and chunked bodies, parsed without I/O;
- `serialize`: response heads and the keep-alive rule, without I/O;
- `canned`: a complete response serialized once and sent as it is (the
  503 past max_pending);
- `connection`: `Connection`, uhttp-server's HttpConnection driving them: raw
  request bodies (JSON is parsed by the worker), pipelined requests kept
  for later, a request never parsed again while a worker has it, a client
  leaving meanwhile noticed, responses written in one send when they can;
- `server`: `Server`, uhttp-server's HttpServer with a server's policies:
  connections in a dict (O(1) removal), accepts in batches, idle
  keep-alive connections evicted before new ones are refused, clients
  that stop reading dropped, and an exception while handling one
  connection answered with 400 or a close, never raised into the loop.

uhttp-server's private names are used by `connection` (and the mixins it is
made of) and `server` only, each on its own base class; tests/unit/test_uhttp_server_compat.py lists them and
fails, naming what is missing, on a uhttp-server that lacks one.
"""

from .connection import EVENT_READ, EVENT_WRITE, HTTP_OPTIONS, Connection
from .parse import ChunkedBody, ProtocolError, RequestHead
from .serialize import status_line
from .server import ACCEPT_BATCH, Server

__all__ = ['ACCEPT_BATCH', 'EVENT_READ', 'EVENT_WRITE', 'HTTP_OPTIONS',
           'ChunkedBody', 'Connection', 'ProtocolError', 'RequestHead',
           'Server', 'status_line']
