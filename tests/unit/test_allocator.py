"""allocator.py: malloc's thresholds fixed, unless the user tuned them."""

import os
import subprocess
import sys

import pytest

from uhttp.workers import allocator


def test_user_settings_are_respected():
    assert allocator.user_settings({'MALLOC_TRIM_THRESHOLD_': '0'})
    assert allocator.user_settings({'GLIBC_TUNABLES': 'glibc.malloc.x=1'})
    assert not allocator.user_settings({'PATH': '/bin'})
    assert allocator.keep_freed_memory({'MALLOC_MMAP_THRESHOLD_': '1'}) is False


CHURN = """
import resource, sys
from uhttp.workers import allocator
ok = allocator.keep_freed_memory({}) if sys.argv[1] == 'fixed' else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def bodies():  # eight 256 KiB bodies held at once, then freed
    held = [bytearray(256 * 1024) for _ in range(8)]
    del held
for _ in range(20):
    bodies()
before = faults()
for _ in range(200):
    bodies()
print(ok, faults() - before)
"""


def churn(mode):
    """(set, page faults) of a fresh process freeing and making bodies."""
    env = {key: value for key, value in os.environ.items()
           if not allocator.user_settings({key: value})}
    # the child imports this very tree's uhttp.workers
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(allocator.__file__))))
    env['PYTHONPATH'] = os.pathsep.join(
        [root] + [part for part in env.get('PYTHONPATH', '').split(
            os.pathsep) if part])
    out = subprocess.run([sys.executable, '-c', CHURN, mode], env=env,
                         timeout=60, capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_freed_bodies_are_reused_without_page_faults():
    """The setting is process-wide, so it is tried in child processes:
    with it, the bodies' memory is reused (no new pages)."""
    done, faults = churn('fixed')
    if done != 'True':
        pytest.skip('this C library has no mallopt()')
    assert faults < 200, faults
    assert churn('adaptive')[1] >= faults
