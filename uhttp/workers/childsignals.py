"""A worker's signal dispositions, and those of the processes it forks.

A worker catches SIGTERM: while its dispatcher lives, the dispatcher drives
its stop (workerloop's handler). A process the worker's code forks (a
multiprocessing pool, os.fork()) must end on SIGTERM as it would anywhere
else, but it inherits that Python-level handler, and a SIGTERM arriving
between fork() and the interpreter's after-fork reset of pending signals
is forgotten: Pool.terminate() then waits for that child for ever (the
worker's request hangs). So SIGTERM is blocked across every fork the worker
makes, and the child sets the default action before it unblocks it; a
SIGTERM sent meanwhile waits in the kernel and ends the child at once.
"""

import os as _os
import signal as _signal
import sys as _sys

_TERM = {_signal.SIGTERM}
_registered = []


def install(on_sigterm):
    """In a new worker process: its SIGTERM handler, the default action for
    SIGCHLD and SIGALRM, and SIGTERM's default in the processes it forks."""
    _signal.signal(_signal.SIGTERM, on_sigterm)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    _signal.signal(_signal.SIGALRM, _signal.SIG_DFL)
    if not _registered:
        _os.register_at_fork(before=_block, after_in_parent=_unblock,
                             after_in_child=_default_then_unblock)
        _registered.append(True)


def _block():
    _signal.pthread_sigmask(_signal.SIG_BLOCK, _TERM)


def _unblock():
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, _TERM)


def _default_then_unblock():
    _signal.signal(_signal.SIGTERM, _signal.SIG_DFL)
    _unblock()


def on_parent_death(sig):
    """Linux: have the kernel send `sig` to this process when its parent
    (the dispatcher) dies."""
    if not _sys.platform.startswith('linux'):
        return
    try:
        import ctypes  # pylint: disable=import-outside-toplevel
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
