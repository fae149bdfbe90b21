"""The Redis Streams protocol of a remote pool: key names, entry encoding
and the server-side scripts. Pure: nothing here opens a connection.

A pool named P lives under `uhttp:P:`:

    requests        stream, consumer group `workers`: the requests
    workers         sorted set: worker -> time of its last sign of life (ms)
    info            hash: worker -> its status (host, pid, current request)
    events          stream: logs, ready, routes, deaths (every dispatcher reads)
    control         stream: send_config() for every worker
    control:W       stream: messages for worker W (disconnects)
    config          string: the latest send_config(), for workers started later
    settings        string: the pool's settings, published by the dispatcher

and each dispatcher D reads a pool's answers on `uhttp:reply:D:<pool>`.

Payloads are pickles, as on the local pipes: the broker is trusted.
A request is started at most once because starting it is the acknowledgment
of its entry (the START script): XACK succeeds for one caller only, whether
the entry was read by `XREADGROUP` or taken over by `XAUTOCLAIM`.
"""

import pickle as _pickle

GROUP = 'workers'
PREFIX = 'uhttp'
# entries a stream keeps at most (approximately): a safety net, the
# readers trim what they have read
REPLY_MAXLEN = 1_000_000
EVENTS_MAXLEN = 10_000
REQUESTS_MAXLEN = 1_000_000
CONTROL_MAXLEN = 1_000
# a request delivered to a worker that has not started it this long is
# taken over by another (a live worker starts within a round trip)
CLAIM_IDLE_MS = 2_000
# workers silent this long are forgotten (dropped from the roster)
FORGET_MS = 3_600_000

# outcomes of the START script
STARTED = 1
TAKEN = 0       # acknowledged elsewhere: another worker started it
EXPIRED = 2     # older than its timeout: its dispatcher has answered 504
CANCELLED = 3   # its dispatcher answered it (503) before anyone started it
CANCEL_TTL = 3600
# an answer stream lives this long (s) unless its dispatcher, which renews
# it every heartbeat interval, still reads it: a late answer to a stopped
# dispatcher does not stay in Redis
REPLY_TTL = 120
# the largest request or answer body that crosses the broker (one stream
# entry each; Redis takes 512 MiB at most, and every byte sits in its
# memory until read): larger requests are answered 413, larger answers 500
BODY_LIMIT = 32 * 1024 * 1024
# request entries older than this many times the pool's timeout (plus
# STALE_MARGIN_MS) can only be refused as expired: the dispatcher drops them
STALE_FACTOR = 2
STALE_MARGIN_MS = 5_000


def stale_before(server_ms, timeout):
    """The stream id before which a pool with `timeout` (s) keeps no
    request entry, or None (no timeout: every entry may still start)."""
    if not timeout:
        return None
    return f'{max(0, server_ms - int(STALE_FACTOR * timeout * 1000) - STALE_MARGIN_MS)}-0'


# how long a re-queued request's guard is kept (a retried write finds it)
REQUEUE_GUARD_TTL = 3600

_PROTOCOL = _pickle.HIGHEST_PROTOCOL


class Keys:
    """The key names of pool `pool`."""

    def __init__(self, pool, prefix=PREFIX):
        base = f'{prefix}:{pool}:'
        self.prefix = prefix
        self.pool = pool
        self.requests = base + 'requests'
        self.workers = base + 'workers'
        self.info = base + 'info'
        self.events = base + 'events'
        self.control = base + 'control'
        self.config = base + 'config'
        self.settings = base + 'settings'
        self._control_of = base + 'control:'

    def control_of(self, worker):
        """The control stream of one worker."""
        return self._control_of + worker

    def reply(self, dispatcher):
        """The answer stream of dispatcher `dispatcher` for this pool."""
        return f'{self.prefix}:reply:{dispatcher}:{self.pool}'

    @staticmethod
    def cancelled(reply_stream):
        """The set of request ids a dispatcher answered before any worker
        started them (they must never start)."""
        return reply_stream + ':cancelled'


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def _field(fields, name):
    value = fields.get(name)
    if value is None:
        value = fields.get(name.encode())
    return value


# -- requests -----------------------------------------------------------------

def encode_request(message, reply_stream, timeout):
    """The fields of a request entry: `message` is the M_REQUEST tuple
    (its seq is set by the worker), `timeout` in seconds (None: none)."""
    return {
        'r': str(message[2]),
        'q': reply_stream,
        't': str(int(timeout * 1000) if timeout else 0),
        'm': _pickle.dumps(message, _PROTOCOL),
    }


class RemoteRequest:
    """A request entry, decoded: its entry id, request id, the stream its
    answers go to, its timeout (ms, 0: none) and the M_REQUEST tuple."""

    __slots__ = ('entry_id', 'request_id', 'reply', 'timeout_ms', 'message',
                 'fields')

    def __init__(self, entry_id, fields):
        self.entry_id = _text(entry_id)
        self.fields = fields
        self.request_id = int(_text(_field(fields, 'r')))
        self.reply = _text(_field(fields, 'q'))
        self.timeout_ms = int(_text(_field(fields, 't') or b'0'))
        self.message = _pickle.loads(_field(fields, 'm'))

    def with_seq(self, seq):
        """The M_REQUEST tuple with the worker's own sequence number."""
        return self.message[:1] + (seq,) + self.message[2:]


def decode_request(entry_id, fields):
    """A RemoteRequest, or None for an entry that is not one (deleted)."""
    if not fields:
        return None
    return RemoteRequest(entry_id, fields)


# -- answers and events ---------------------------------------------------------

def encode_reply(worker, number, message):
    """An answer entry: `number` counts the worker's entries, so that an
    entry written twice (a retried write) is recognised and dropped."""
    return {'w': worker, 'n': str(number),
            'm': _pickle.dumps(message, _PROTOCOL)}


def encode_death(worker, reason, left=False, exitcode=None):
    """A worker's death, reported by the command that ran it; `left`: it
    ended as it was asked to (the command stopping), not unexpectedly;
    `exitcode` as waitpid told it (negative: the signal), if known."""
    fields = {'w': worker, 'x': reason}
    if left:
        fields['l'] = '1'
    if exitcode is not None:
        fields['c'] = str(exitcode)
    return fields


def encode_keepalive(worker):
    """The notice that `worker` called keep_alive(): its requests' deadlines
    move on as a local worker's do (sent at once, not with the heartbeat).
    A dispatcher that predates it reads a START of no request: a no-op."""
    return {'w': worker, 'k': '1', 's': '-1'}


class Reply:
    """An entry of an answer or events stream, decoded. `kind` is
    'message' (with `message` and `number`), 'started' (with
    `request_id`), 'keepalive' or 'death' (with `reason`, `exitcode` when
    known, and `left` when the worker ended as it was asked to)."""

    __slots__ = ('entry_id', 'worker', 'kind', 'message', 'number',
                 'request_id', 'reason', 'left', 'exitcode')

    def __init__(self, entry_id, fields):
        self.entry_id = _text(entry_id)
        self.worker = _text(_field(fields, 'w'))
        self.message = self.number = self.request_id = self.reason = None
        self.exitcode = None
        self.left = False
        started = _field(fields, 's')
        death = _field(fields, 'x')
        if _field(fields, 'k') is not None:
            self.kind = 'keepalive'
        elif started is not None:
            self.kind = 'started'
            self.request_id = int(_text(started))
        elif death is not None:
            self.kind = 'death'
            self.reason = _text(death)
            self.left = _field(fields, 'l') is not None
            code = _field(fields, 'c')
            self.exitcode = None if code is None else int(_text(code))
        else:
            self.kind = 'message'
            self.number = int(_text(_field(fields, 'n') or b'0'))
            self.message = _pickle.loads(_field(fields, 'm'))


def decode_reply(entry_id, fields):
    return Reply(entry_id, fields)


def encode_control(frame):
    """A control entry carries one channel frame (channel.pack())."""
    return {'f': frame}


def decode_control(fields):
    return _field(fields, 'f')


def frame_message(frame):
    """The message in one channel frame (a control entry's payload)."""
    return _pickle.loads(bytes(frame)[4:])


def encode_info(info):
    return _pickle.dumps(info, _PROTOCOL)


def decode_info(blob):
    try:
        return _pickle.loads(blob)
    except Exception:  # pylint: disable=broad-except
        return {}


def encode_settings(settings):
    return _pickle.dumps(settings, _PROTOCOL)


def decode_settings(blob):
    return _pickle.loads(blob)


def entry_ms(entry_id):
    """The millisecond part of a stream entry id."""
    return int(_text(entry_id).partition('-')[0])


def newer(entry_id, than):
    """True when stream id `entry_id` comes after `than`."""
    a, _, b = _text(entry_id).partition('-')
    c, _, d = _text(than).partition('-')
    return (int(a), int(b or 0)) > (int(c), int(d or 0))


# -- server-side scripts ----------------------------------------------------------

# KEYS: requests stream, reply stream, its cancelled set. ARGV: group,
# entry id, worker, request id, timeout ms, reply maxlen, reply ttl. Acknowledge (and
# delete) the entry; only the caller whose XACK removed it starts it, and
# tells the request's dispatcher so in the same step.
START_SCRIPT = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
if redis.call('SREM', KEYS[3], ARGV[4]) == 1 then return 3 end
local timeout = tonumber(ARGV[5])
if timeout > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local added = tonumber(string.match(ARGV[2], '^(%d+)'))
  if now - added > timeout then return 2 end
end
if ARGV[4] ~= '-1' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
             'w', ARGV[3], 's', ARGV[4])
  if redis.call('TTL', KEYS[2]) < 0 then
    redis.call('EXPIRE', KEYS[2], ARGV[7])
  end
end
return 1
"""

# KEYS: requests stream. ARGV: group, worker, reply maxlen, reply ttl. Read the next
# request (without blocking) and start it as START_SCRIPT does, in one round
# trip: false when there is none, else {outcome, entry id, fields}.
TAKE_SCRIPT = """
local got = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1,
                       'STREAMS', KEYS[1], '>')
if not got then return false end
local entry = got[1][2][1]
local id, fields = entry[1], entry[2]
local f = {}
for i = 1, #fields, 2 do f[fields[i]] = fields[i + 1] end
redis.call('XACK', KEYS[1], ARGV[1], id)
redis.call('XDEL', KEYS[1], id)
if not f['q'] or not f['r'] then return {0, id, fields} end
if redis.call('SREM', f['q'] .. ':cancelled', f['r']) == 1 then
  return {3, id, fields}
end
local timeout = tonumber(f['t'] or '0')
if timeout > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if now - tonumber(string.match(id, '^(%d+)')) > timeout then
    return {2, id, fields}
  end
end
if f['r'] ~= '-1' then
  redis.call('XADD', f['q'], 'MAXLEN', '~', ARGV[3], '*',
             'w', ARGV[2], 's', f['r'])
  if redis.call('TTL', f['q']) < 0 then redis.call('EXPIRE', f['q'], ARGV[4]) end
end
return {1, id, fields}
"""


# KEYS: an answer stream. ARGV: maxlen, ttl, then the entry's fields.
# A worker's answers: the stream gets a lifetime if it has none (it was
# gone: its dispatcher stopped, so nobody renews it).
REPLY_SCRIPT = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                      unpack(ARGV, 3))
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return id
"""

# KEYS: requests stream, the answer stream, the guard of this re-queue.
# ARGV: guard ttl, requests maxlen, reply maxlen, reply ttl, the number of
# the bounce notice's fields, its fields, then the request entry's fields.
# A request a paused worker took goes back on the stream once only (a
# retried write finds the guard), and its dispatcher reads the bounce
# before any worker can start the copy.
REQUEUE_SCRIPT = """
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local n = tonumber(ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 6, 5 + n))
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIRE', KEYS[2], ARGV[4]) end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 6 + n))
return 1
"""


def flat(fields):
    """A fields dict as the flat list a script takes."""
    items = []
    for name, value in fields.items():
        items.extend((name, value))
    return items


def requeue_guard(keys, entry_id):
    """The key that makes re-queuing entry `entry_id` happen once."""
    return f'{keys.requests}:requeued:{_text(entry_id)}'


def parse_take(result):
    """(outcome, entry id, fields dict) from TAKE_SCRIPT's answer, or None."""
    if not result:
        return None
    outcome, entry_id, flat = result
    fields = {flat[index]: flat[index + 1] for index in range(0, len(flat) - 1, 2)}
    return int(outcome), entry_id, fields


# KEYS: workers set, info hash. ARGV: worker, age of its last sign of life
# (ms), its status blob. Scored with the server's clock, so that hosts'
# clocks do not matter.
HEARTBEAT_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now - tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return now
"""

# KEYS: workers set, info hash, requests stream. ARGV: forget after (ms),
# group. The server's time, then [worker, last sign of life, ...] and the
# info hash; workers silent for longer than the forget time are dropped
# first (from the consumer group too, once they hold nothing: a killed
# worker never left it).
ROSTER_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf',
                         now - tonumber(ARGV[1]))
for _, name in ipairs(stale) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
  local ok, held = pcall(redis.call, 'XPENDING', KEYS[3], ARGV[2], '-', '+',
                         1, name)
  if ok and #held == 0 then
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', KEYS[3], ARGV[2], name)
  end
end
return {now, redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'),
        redis.call('HGETALL', KEYS[2])}
"""

# KEYS: workers set, info hash, requests stream. ARGV: worker, group. A
# worker that leaves: off the roster, and out of the consumer group unless
# it still holds entries (others take those over, see CLAIM_IDLE_MS).
LEAVE_SCRIPT = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  local ok, held = pcall(redis.call, 'XPENDING', KEYS[3], ARGV[2], '-', '+',
                         1, ARGV[1])
  if ok and #held == 0 then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[3], ARGV[2], ARGV[1])
  end
end
return 1
"""


def parse_roster(result):
    """(server time ms, {worker: last sign of life ms}, {worker: info})
    from the ROSTER script's answer."""
    now, flat, info_flat = result
    beats = {}
    for index in range(0, len(flat) - 1, 2):
        beats[_text(flat[index])] = float(_text(flat[index + 1]))
    info = {}
    for index in range(0, len(info_flat) - 1, 2):
        info[_text(info_flat[index])] = decode_info(info_flat[index + 1])
    return int(now), beats, info


CONNECTION_PREFIX = 'uhttp-worker:'


def connection_name(worker):
    """The name a worker's heartbeat connection carries (CLIENT SETNAME)."""
    return CONNECTION_PREFIX + worker


def connected_workers(names):
    """The workers among CLIENT LIST's connection names."""
    size = len(CONNECTION_PREFIX)
    return {name[size:] for name in names
            if name and name.startswith(CONNECTION_PREFIX)}
