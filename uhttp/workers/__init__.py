"""uhttp-workers: a multi-process HTTP API server on uhttp-server.

One dispatcher process owns every connection, serves static files and sync
handlers, authenticates, and hands API requests to pools of worker
processes; it supervises them, streams their answers and prints their logs.
"""

from .bodyview import SpooledBytes
from .dispatcher import (
    Dispatcher, PENDING_COMPLETED, PENDING_DISCONNECTED, PENDING_SHUTDOWN,
    PENDING_STREAM_CLOSED, PENDING_TIMEOUT, PENDING_WORKER_DIED,
    _PendingRequest)
from .log import (
    LOG_CRITICAL, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARNING, Logger)
from .messages import DEFERRED, FileResponse, RejectRequest, Request, Response
from .metrics import Counter, Gauge, Histogram, MetricError, UnknownMetric
from .pool import WorkerPool
from .routing import api, sync, websocket
from .wsworker import WebSocket
from .worker import ApiHandler, Worker

__version__ = '1.2.0'

__all__ = [
    'ApiHandler', 'Counter', 'DEFERRED', 'Dispatcher', 'FileResponse', 'Gauge', 'Histogram', 'LOG_CRITICAL', 'LOG_DEBUG',
    'LOG_ERROR', 'LOG_INFO', 'LOG_WARNING', 'Logger', 'PENDING_COMPLETED',
    'PENDING_DISCONNECTED', 'PENDING_SHUTDOWN', 'PENDING_STREAM_CLOSED',
    'MetricError', 'PENDING_TIMEOUT', 'PENDING_WORKER_DIED', 'RejectRequest',
    'Request', 'Response', 'SpooledBytes', 'UnknownMetric', 'WebSocket',
    'Worker', 'WorkerPool', '_PendingRequest',
    'api', 'sync', 'websocket',
]
