"""How a worker process ends: its exit codes, and the end of a process the
user's code forked that came back into the worker's loop."""

import os as _os
import sys as _sys
import traceback as _traceback

from . import log as _log

# a worker's exit codes: sysexits-style, apart from a user's small ones
EXIT_OK = 0
EXIT_SETUP_FAILED = 70
EXIT_LOOP_FAILED = 71
EXIT_OUT_OF_MEMORY = 72
EXIT_NOT_ISOLATED = 73   # could not let go of the dispatcher's descriptors
EXIT_REASONS = {
    EXIT_SETUP_FAILED: 'setup() failed',
    EXIT_LOOP_FAILED: 'worker loop failed',
    EXIT_OUT_OF_MEMORY: 'out of memory',
    EXIT_NOT_ISOLATED: "could not close the dispatcher's descriptors",
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


WORKER_PID = [None]   # the worker process's pid, once it runs
_FORKED = [False]     # this process is a fork of the worker


def _note_fork():
    if WORKER_PID[0] is not None:  # a worker forked (not the dispatcher)
        _FORKED[0] = True


_os.register_at_fork(after_in_child=_note_fork)


def forked():
    """True in a process the worker's code forked (not the worker).

    Asked several times a request, so it reads a flag the fork hook set
    rather than asking the kernel for the pid (a system call each time).
    Every fork from Python (os.fork, multiprocessing, concurrent.futures)
    runs the hook; a fork from C that runs Python code afterwards is not
    something a worker's code does."""
    return _FORKED[0]


def end_forked_copy(log, request=None, err=None):
    """This process is a fork of the worker (`os.fork()` in a handler or
    hook) whose code returned (or raised `err`) instead of ending with
    `os._exit()`. As a second reader of the worker's pipe it would take
    requests meant for the worker and send answers in its place, and run
    the worker's hooks on what it shares with the worker: it says so and
    ends."""
    try:
        what = ('a hook or fd callback' if request is None else
                f"the handler of {request.method} "
                f"{_log.client_text(request.path)}")
        how = "returned" if err is None else f"raised {err!r}"
        log.error("%s: process %d, which the worker (pid %d) forked, %s "
                  "into the worker's loop; it ends here without answering "
                  "(end a forked process with os._exit())%s",
                  what, _os.getpid(), WORKER_PID[0], how,
                  '' if err is None else '\n' + ''.join(
                      _traceback.format_exception(err)).rstrip())
    except BaseException:  # pylint: disable=broad-except
        pass
    for stream in (_sys.stdout, _sys.stderr):
        try:
            stream.flush()
        except BaseException:  # pylint: disable=broad-except
            pass
    _os._exit(EXIT_LOOP_FAILED)
