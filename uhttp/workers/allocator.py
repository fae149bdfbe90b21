"""The C allocator's settings for the dispatcher (and the workers it forks).

Every large body the dispatcher holds (a request read into its buffer, an
answer read from a pipe) is a block of a few hundred KiB, freed a moment
later. glibc's malloc adapts its thresholds as such blocks come and go:
some are mapped and unmapped one by one, others are taken from the heap,
which is given back to the system whenever its free top grows past a small
limit. Either way the next body's pages are new to the process: a page
fault for each 4 KiB, plus the kernel's accounting, on the serial path of
every request. Fixed thresholds stop that churn: blocks up to MMAP_ABOVE
come from the heap, and up to KEEP_FREE bytes of freed heap stay with the
process for the next bodies (idle RSS does not change; after a burst it
may stay higher by up to that much).

Settings the user made through glibc's own environment variables are
left as they are; on a C library without mallopt() nothing is done.
"""

import ctypes as _ctypes
import os as _os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREE = 16 << 20    # freed heap kept for reuse (M_TRIM_THRESHOLD)
MMAP_ABOVE = 4 << 20    # blocks larger than this are mapped (M_MMAP_THRESHOLD)
_USER_SETTINGS = ('MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_',
                  'GLIBC_TUNABLES')


def user_settings(environ):
    """True when the environment already tunes malloc."""
    return any(name in environ for name in _USER_SETTINGS)


def keep_freed_memory(environ=None):
    """Fix malloc's thresholds for this process (and the ones it forks);
    True when they were set."""
    if user_settings(_os.environ if environ is None else environ):
        return False
    try:
        mallopt = _ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (_ctypes.c_int, _ctypes.c_int)
    mallopt.restype = _ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_FREE))
