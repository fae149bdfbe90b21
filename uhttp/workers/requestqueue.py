"""A pool's request queue as the user's code sees it
(`pool.request_queue.put(Request(...))`): fire-and-forget requests
(request_id=-1) for the pool's workers.

It lives in the dispatcher and is safe to use from any of its threads:
a request put from the loop's own thread (a hook, a sync handler) goes to
the pool's scheduler at once; one put from another thread while the
dispatcher runs is handed over and queued by the loop, which it wakes
(the scheduler is the loop's alone).
"""

import collections as _collections
import threading as _threading

from . import messages as _msg


class RequestQueue:
    """queue.Queue's put side for a pool's scheduler (never blocks: the
    queue is unbounded; forward() and on_forward() keep it in check)."""

    def __init__(self, scheduler):
        self._scheduler = scheduler
        self._loop_thread = None  # the running loop's thread ident
        self._wake = None         # wakes the running loop
        self._handed = _collections.deque()

    def put(self, request, block=True, timeout=None):
        """Queue a Request for this pool (fire and forget: request_id=-1)."""
        del block, timeout
        if not isinstance(request, _msg.Request):
            raise TypeError(
                f"request_queue.put() takes a Request, not "
                f"{type(request).__name__}")
        if request.request_id != -1:
            raise ValueError(
                "request_queue.put() takes requests with request_id=-1 (their "
                "answers are not sent anywhere); HTTP requests get their ids "
                "from the dispatcher")
        wake = self._wake
        if wake is not None and _threading.get_ident() != self._loop_thread:
            self._handed.append(request)
            wake()
            return
        self._scheduler.enqueue(request)

    put_nowait = put

    def qsize(self):
        return len(self._scheduler) + len(self._handed)

    def empty(self):
        return not self.qsize()

    def __len__(self):
        return self.qsize()

    # -- for the dispatcher's loop ---------------------------------------------

    def attach(self, wake):
        """The loop runs on this thread from now on; `wake()` wakes it."""
        self._loop_thread = _threading.get_ident()
        self._wake = wake

    def detach(self):
        """The loop stopped: puts go to the scheduler directly again."""
        self._wake = self._loop_thread = None

    def take_handed(self):
        """Queue what other threads put since the loop last looked."""
        handed = self._handed
        while handed:
            self._scheduler.enqueue(handed.popleft())
