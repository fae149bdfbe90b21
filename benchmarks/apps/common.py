"""What every benchmarked app shares: the endpoints' payloads and the CPU burn.

Each app imports these so that /json, /cpu and SSE events do the same work
in every system.
"""

import time

JSON_BODY = {'hello': 'world'}
CPU_MS = 2.0

# paths served by every app
PATH_JSON = '/json'
PATH_CPU = '/cpu'
PATH_ECHO = '/echo'
PATH_EVENTS = '/sse/events'
PATH_PUBLISH = '/sse/publish'

SSE_EVENT = 'message'


def burn_cpu(ms=CPU_MS):
    """Busy-loop for `ms` milliseconds of wall time on this core."""
    end = time.perf_counter() + ms / 1000.0
    spins = 0
    while time.perf_counter() < end:
        spins += 1
    return {'burned_ms': ms, 'spins': spins}


def format_sse(data, event=SSE_EVENT):
    """One Server-Sent Event as bytes (for apps that write raw frames)."""
    return f'event: {event}\ndata: {data}\n\n'.encode('utf-8')
