"""How a worker process ends: its exit codes, and the end of a process the
user's code forked that came back into the worker's loop."""

import os as _os
import sys as _sys

# a worker's exit codes: sysexits-style, apart from a user's small ones
EXIT_OK = 0
EXIT_SETUP_FAILED = 70
EXIT_LOOP_FAILED = 71
EXIT_OUT_OF_MEMORY = 72
EXIT_REASONS = {
    EXIT_SETUP_FAILED: 'setup() failed',
    EXIT_LOOP_FAILED: 'worker loop failed',
    EXIT_OUT_OF_MEMORY: 'out of memory',
}


def exit_status(code):
    """The process exit status sys.exit(code) asks for."""
    if code is None:
        return 0
    if isinstance(code, int) and not isinstance(code, bool):
        return code & 0xFF
    try:
        _sys.stderr.write(f'{code}\n')
    except Exception:  # pylint: disable=broad-except
        pass
    return 1


def end_forked_copy(log, worker_pid, what):
    """This process is a fork of the worker (`os.fork()` in a handler or
    hook) whose code returned instead of ending with `os._exit()`. As a
    second reader of the worker's pipe it would take requests meant for
    the worker and send answers in its place: it says so and ends."""
    try:
        log.error("%s: process %d, which the worker (pid %d) forked, "
                  "returned into the worker's loop; it ends here without "
                  "answering (end a forked process with os._exit())",
                  what, _os.getpid(), worker_pid)
    except BaseException:  # pylint: disable=broad-except
        pass
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except BaseException:  # pylint: disable=broad-except
            pass
    _os._exit(EXIT_LOOP_FAILED)
