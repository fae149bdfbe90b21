"""The dispatcher's connection to a remote pool's broker, in two threads.

The dispatcher's loop never waits on Redis. It hands what it sends to
`submit()` / `control()` (a queue the sender thread drains, with one
pipelined round trip per batch) and reads what arrived from `take()`
after the link woke it (`wake`, the loop's wake-up). The reader thread
blocks in XREAD on the pool's answer and event streams, reads the roster
every heartbeat interval, and tells the loop when the broker goes down or
comes back.
"""

import collections as _collections
# (imported here, not by a link thread's first getaddrinfo(): a process
# forked while a thread holds an import's lock would wait on it for ever)
import encodings.idna  # noqa: F401  pylint: disable=unused-import
import threading as _threading
import time as _time

from . import broker as _broker
from . import brokerurl as _brokerurl
from .remotewatch import alive_key, alive_ms

_monotonic = _time.monotonic

RETRY_DELAY = 0.5      # between two attempts to reach a broker that is down
BATCH = 512            # entries written in one round trip at most
READ_COUNT = 1000      # entries read in one round trip at most
IDLE_CHECK = 0.5       # a connection idle this long is pinged before use


def connect(url, timeout=3.0, name=None):
    """A redis client for `url` that fails fast (no retries of its own:
    the link decides what a failure means); `name`: its CLIENT SETNAME."""
    import redis  # pylint: disable=import-outside-toplevel
    from redis.backoff import NoBackoff  # pylint: disable=import-outside-toplevel
    from redis.retry import Retry  # pylint: disable=import-outside-toplevel
    return redis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=min(timeout, 2.0),
        retry=Retry(NoBackoff(), 0), health_check_interval=0,
        client_name=name)


def let_go(client):
    """Close `client` now, not once collected: Redis frees at once what its
    connection held (the input buffer of a large entry it refused)."""
    try:
        client.close()
    except Exception:  # pylint: disable=broad-except
        pass


def refused_credentials(err):
    """True when the broker refused this client's password or user (a
    setting to fix, not an outage to wait out)."""
    from redis import exceptions  # pylint: disable=import-outside-toplevel
    if isinstance(err, (exceptions.AuthenticationError,
                        exceptions.AuthenticationWrongNumberOfArgsError)):
        return True
    text = str(err)
    return text.startswith(('WRONGPASS', 'NOAUTH', 'NOPERM'))


def refused_url(err):
    """True when the broker refuses what the URL asks of it: its
    credentials, or a database it does not have (both settings to fix)."""
    return refused_credentials(err) or 'DB index is out of range' in str(err)


def describe(err, url=None):
    """A broker error, as the logs and status() tell it: the broker's or
    the system's own words (`Connection refused`, `DB index is out of
    range`), never a password of `url`."""
    if refused_credentials(err):
        text = f"the broker refused the URL's credentials: {err}"
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return text if url is None else _brokerurl.scrub(text, url)


def persistence(client):
    """What Redis keeps on disk (`save '3600 1'`, `appendonly yes`), or
    None: nothing, or CONFIG is refused (then nobody can tell)."""
    from redis import ResponseError  # pylint: disable=import-outside-toplevel
    try:
        save = client.config_get('save').get('save') or ''
        append = client.config_get('appendonly').get('appendonly') or 'no'
    except ResponseError:
        return None
    found = [f"save {save.strip()!r}"] if save.strip() else []
    found += ['appendonly yes'] if append.lower() == 'yes' else []
    return ', '.join(found) or None


def broker_errors():
    import redis  # pylint: disable=import-outside-toplevel
    return (redis.RedisError, OSError)


class DispatcherLink:
    """One remote pool's traffic with its broker (see the module doc)."""

    def __init__(self, url, keys, reply_stream, interval, wake, settings,
                 timeout=None):
        self.url = url
        self.keys = keys
        self.reply_stream = reply_stream
        self.interval = interval
        self.wake = wake              # wakes the dispatcher's loop (thread-safe)
        self.settings = settings      # the pool's settings blob, published
        self.timeout = timeout        # the pool's request timeout (s)
        self.config = None            # the latest send_config() frame
        self._lock = _threading.Condition()
        self._outbox = _collections.deque()
        self._inbox = _collections.deque()
        self._closed = False
        self._threads = []
        self._last_write = 0.0
        self._no_client_list = False
        self._persistence_told = False
        self.errors = broker_errors()
        # renewed every interval: it outlives a few silent ones only
        self.reply_ttl = int(max(_broker.REPLY_TTL, 4 * interval))

    # -- from the loop -----------------------------------------------------------

    def start(self):
        for target, name in ((self._send_loop, 'broker-send'),
                             (self._read_loop, 'broker-read')):
            thread = _threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, request_id, fields):
        """Add a request entry to the pool's stream (asynchronously)."""
        self._put(('request', request_id, fields))

    def control(self, worker, frame):
        """A frame for one worker (its control stream)."""
        self._put(('control', self.keys.control_of(worker),
                   _broker.encode_control(frame)))

    def cancel(self, request_ids):
        """These requests were answered here before any worker started
        them: they must never start (kept until the broker takes them)."""
        if request_ids:
            self._put(('cancel', [str(rid) for rid in request_ids]))

    def broadcast(self, frame):
        """A frame for every worker (send_config()); kept for those that
        start later."""
        self.config = frame
        self._put(('config', frame))

    def take(self):
        """What arrived since the last call: a list of (kind, ...) tuples."""
        items = []
        inbox = self._inbox
        while inbox:
            items.append(inbox.popleft())
        return items

    def stop(self):
        """Tell the link's threads to end (close() waits for them)."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    def close(self, timeout=1.0):
        self.stop()
        deadline = _monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - _monotonic()))
        try:  # this dispatcher's answer stream is not read any more
            connect(self.url, timeout=0.5).delete(
                self.reply_stream, alive_key(self.reply_stream))
        except self.errors:
            pass

    def _put(self, item):
        with self._lock:
            self._outbox.append(item)
            self._lock.notify()

    def _post(self, item):
        self._inbox.append(item)
        self.wake()

    # -- the sender thread ----------------------------------------------------------

    def _send_loop(self):
        client = None
        while True:
            with self._lock:
                while not self._outbox and not self._closed:
                    self._lock.wait(1.0)
                if not self._outbox:
                    return  # closed, and everything went out
                batch = [self._outbox.popleft()
                         for _ in range(min(BATCH, len(self._outbox)))]
            try:
                client, refused = self._write_batch(client, batch)
            except self.errors as err:
                client = None
                self._lost(batch, describe(err, self.url))
                if self._closed:
                    return
                self._sleep(RETRY_DELAY)
                continue
            if refused:
                let_go(client)
                client = None
                self._refused(refused)

    def _lost(self, batch, reason):
        """The connection failed under `batch`: its requests may or may not
        be in the stream (they are answered 503 and cancelled); the rest
        (cancellations, a client's disconnect, send_config()) waits for the
        broker, to be written again: a disconnect written twice is ignored
        (one dropped would leave a worker holding a stream), a config may
        reach a worker twice."""
        lost = [item[1] for item in batch if item[0] == 'request']
        with self._lock:
            self._outbox.extendleft(
                item for item in reversed(batch) if item[0] != 'request')
        if lost:
            self._post(('unsent', lost, reason))

    def _refused(self, refused):
        """Entries the broker answered with an error (out of memory, say):
        they are not in Redis, and writing them again would fail again. Its
        requests are answered 503 with the broker's reason in the log."""
        requests = [item[1] for item, _ in refused if item[0] == 'request']
        reason = describe(refused[0][1], self.url)
        if requests:
            self._post(('refused', requests, reason))
        others = [item[0] for item, _ in refused if item[0] != 'request']
        if others:
            self._post(('error', f"the broker refused {len(others)} "
                        f"{'/'.join(sorted(set(others)))} entr"
                        f"{'y' if len(others) == 1 else 'ies'}: {reason}"))

    def _write_batch(self, client, batch):
        """Write `batch` (never twice: a request written twice could start
        twice). A connection idle for a while is checked first, so that one
        broken by a broker restart is replaced before anything is sent.
        Returns the client to use next and the (item, error) the broker
        refused."""
        now = _monotonic()
        if client is not None and now - self._last_write > IDLE_CHECK:
            try:
                client.ping()
            except self.errors:
                client = None
        if client is None:
            client = connect(self.url)
        refused = self._write(client, batch)
        self._last_write = now
        return client, refused

    def _write(self, client, batch):
        pipe = client.pipeline(transaction=False)
        commands = []             # how many commands each item queued
        for item in batch:
            before = len(pipe)
            self._queue_item(pipe, item)
            commands.append(len(pipe) - before)
        results = iter(pipe.execute(raise_on_error=False))
        refused = []
        for item, count in zip(batch, commands):
            errors = [result for result in (next(results) for _ in range(count))
                      if isinstance(result, Exception)]
            if errors:
                refused.append((item, errors[0]))
        return refused

    def _queue_item(self, pipe, item):
        keys = self.keys
        kind = item[0]
        if kind == 'request':
            pipe.xadd(keys.requests, item[2],
                      maxlen=_broker.REQUESTS_MAXLEN, approximate=True)
        elif kind == 'control':
            pipe.xadd(item[1], item[2], maxlen=_broker.CONTROL_MAXLEN,
                      approximate=True)
            pipe.expire(item[1], 3600)
        elif kind == 'cancel':
            cancelled = keys.cancelled(self.reply_stream)
            pipe.sadd(cancelled, *item[1])
            pipe.expire(cancelled, _broker.CANCEL_TTL)
        elif kind == 'config':
            pipe.set(keys.config, item[1])
            pipe.xadd(keys.control, _broker.encode_control(item[1]),
                      maxlen=_broker.CONTROL_MAXLEN, approximate=True)

    def _sleep(self, seconds):
        with self._lock:
            if not self._closed:
                self._lock.wait(seconds)

    # -- the reader thread ------------------------------------------------------------

    def _read_loop(self):
        client = None
        ids = None
        next_roster = 0.0
        while not self._closed:
            try:
                if client is None:
                    client = connect(self.url, timeout=min(self.interval, 1.0) + 3)
                    ids = self._prepare(client, ids)
                    self._post(('up',))
                block = int(max(10, min(self.interval, 1.0) * 1000))
                read = client.xread(ids, count=READ_COUNT, block=block)
                if read:
                    self._deliver(client, ids, read)
                now = _monotonic()
                if now >= next_roster:
                    next_roster = now + self.interval
                    client.expire(self.reply_stream, self.reply_ttl)
                    client.set(alive_key(self.reply_stream), '1',
                               px=alive_ms(self.interval))
                    result = client.eval(
                        _broker.ROSTER_SCRIPT, 3, self.keys.workers,
                        self.keys.info, self.keys.requests,
                        _broker.FORGET_MS, _broker.GROUP)
                    roster = _broker.parse_roster(result)
                    self._drop_stale(client, roster[0])
                    self._post(('roster',) + roster
                               + (self._connected(client),))
            except self.errors as err:
                if client is not None:
                    self._post(('down', describe(err, self.url)))
                client = None
                self._sleep(RETRY_DELAY)
            except Exception as err:  # pylint: disable=broad-except
                self._post(('error', describe(err, self.url)))
                client = None
                self._sleep(RETRY_DELAY)

    def _drop_stale(self, client, server_ms):
        """Request entries nobody took until long past their timeout (no
        worker was there) would only be refused: they go."""
        before = _broker.stale_before(server_ms, self.timeout)
        if before is not None:
            client.xtrim(self.keys.requests, minid=before, approximate=False)

    def _connected(self, client):
        """The workers with a connection to the broker now (their heartbeat
        connection is named), or None when the broker will not say."""
        if self._no_client_list:
            return None
        from redis import ResponseError  # pylint: disable=import-outside-toplevel
        try:
            clients = client.client_list()
        except ResponseError:  # (NOPERM: an ACL without CLIENT LIST; an
            self._no_client_list = True  # unknown command): for good;
            return None  # a lost connection goes the usual way
        return _broker.connected_workers(
            entry.get('name') for entry in clients)

    def _prepare(self, client, ids):
        """On (re)connecting: the group exists, the settings and the
        latest config are published; where to read from."""
        keys = self.keys
        try:
            client.xgroup_create(keys.requests, _broker.GROUP, id='0',
                                 mkstream=True)
        except self.errors as err:
            if 'BUSYGROUP' not in str(err):
                raise
        client.set(keys.settings, self.settings)
        if self.config is not None:
            client.set(keys.config, self.config)
        if not self._persistence_told:  # (once: at the first connection)
            kept = persistence(client)
            self._persistence_told = True
            if kept:
                self._post(('warning', f"it persists its data ({kept}): "
                            "restarted from that data, it would run requests "
                            "already answered again (set save \"\" and "
                            "appendonly no)"))
        if ids is None:
            last = client.xrevrange(keys.events, count=1)
            ids = {self.reply_stream: '0-0',
                   keys.events: last[0][0].decode() if last else '0-0'}
        return ids

    def _deliver(self, client, ids, read):
        for stream, entries in read:
            stream = stream.decode() if isinstance(stream, bytes) else stream
            replies = []
            for entry_id, fields in entries:
                try:
                    replies.append(_broker.decode_reply(entry_id, fields))
                except Exception as err:  # pylint: disable=broad-except
                    self._post(('error', f"undecodable entry {entry_id!r} on "
                                f"{stream}: {err!r}"))
            if entries:
                last = entries[-1][0]
                ids[stream] = last.decode() if isinstance(last, bytes) else last
            if stream == self.reply_stream:
                if entries:  # what was read is no longer needed
                    client.xtrim(stream, minid=ids[stream], approximate=False)
                self._post(('replies', replies))
            else:
                self._post(('events', replies))
