"""worker_memory_limit_mb: a worker process caps its own address space."""

from . import log as _log
from . import messages as _msg


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
    except (ImportError, ValueError, OSError) as err:
        send((_msg.W_LOG, name, _log.LOG_WARNING,
              f"worker_memory_limit_mb not applied: {err!r}"))
