"""The HTTP layer: uhttp-server 3.x, configured and hardened for a dispatcher.

`Server` and `Connection` subclass uhttp-server's classes to:
- keep request bodies raw, so JSON is parsed by the worker, not here,
  and leave pipelined bytes for the next request instead of refusing them;
- never hand a connection back as a new request while its request is
  still with a worker, and notice the client leaving meanwhile;
- shield the loop: an exception while handling one connection answers 400
  or closes that connection, never the server;
- keep connections in a dict (O(1) removal), accept in batches, evict
  idle keep-alive connections before refusing new ones, and drop clients
  that stop reading a response.
"""


from .connection import (
    EVENT_READ, EVENT_WRITE, HTTP_OPTIONS, Connection, status_line)
from .parse import ChunkedBody, ProtocolError, RequestHead
from .server import ACCEPT_BATCH, Server

__all__ = ['ACCEPT_BATCH', 'EVENT_READ', 'EVENT_WRITE', 'HTTP_OPTIONS',
           'ChunkedBody', 'Connection', 'ProtocolError', 'RequestHead',
           'Server', 'status_line']
