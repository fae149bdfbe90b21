"""worker_memory_limit_mb: a worker process caps its own address space.

Inside the cap it keeps a few MiB in reserve: a handler that hoards memory
until an allocation fails leaves none for the ERROR that names it, nor for
the 500 of its request, so the worker gives the reserve back first."""

import mmap as _mmap

from . import log as _log
from . import messages as _msg

RESERVE = 4 << 20   # mapped, never touched: address space, not memory
_reserve = []


def address_space():
    """Bytes of address space this process maps now (Linux), or None."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith('VmSize:'):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def limit_memory(spec, send, name):
    """Cap the address space (RLIMIT_AS) at spec.memory_limit_mb; what goes
    wrong is logged through `send` under the worker's `name`."""
    try:
        import resource  # pylint: disable=import-outside-toplevel
        limit = int(spec.memory_limit_mb * 1024 * 1024)
        used = address_space()
        if used and used >= limit:
            send((_msg.W_LOG, name, _log.LOG_WARNING,
                  f"worker_memory_limit_mb={spec.memory_limit_mb} is "
                  f"below the {used // (1024 * 1024)} MB the process "
                  "already maps; every allocation will fail"))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except OverflowError:   # more than an rlimit holds: no cap at all
        send((_msg.W_LOG, name, _log.LOG_WARNING,
              f"worker_memory_limit_mb={spec.memory_limit_mb} not applied: "
              "more than the system's limit can hold"))
    except (ImportError, ValueError, OSError) as err:
        send((_msg.W_LOG, name, _log.LOG_WARNING,
              f"worker_memory_limit_mb not applied: {err!r}"))
        return
    try:
        _reserve[:] = [_mmap.mmap(-1, RESERVE)]
    except OSError:
        pass   # (no room even for it: the WARNING above said so)


def release_reserve():
    """Give the reserve back (a MemoryError was caught): enough room to log
    what ran out and to answer its request."""
    while _reserve:
        _reserve.pop().close()
