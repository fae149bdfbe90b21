"""Hostile paths against static mounts (app tests/apps/hard_static.py).

A secret file is planted next to the mounted root (and in a sibling
directory whose name starts with the root's name); symlinks inside the root
point out of it (to a file, to a directory, to /etc). Every encoding of
'..' and '/' the test knows, absolute paths, backslashes and NULs are sent
raw; the secret's content must never appear in any reply, and no hostile
request may get a 200. Absurd numbers in Range and If-Modified-Since are
answered as HTTP says, never with a 500.
"""
import os
import shutil
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from hard_util import AppServer, exchange, probe

SECRET = ('SECRET-' + uuid.uuid4().hex).encode()
PUBLIC = b'public file'
HOSTILE_STATUSES = {400, 403, 404}

DOTS = ['..', '%2e%2e', '%2E%2e', '%2e%2E', '.%2e', '%2e.', '%252e%252e', '%25%32%65%25%32%65',
        '%c0%ae%c0%ae', '%c0%2e%c0%2e', '%e0%80%ae%e0%80%ae', '%f0%80%80%ae%f0%80%80%ae',
        '..%00', '%2e%2e%00', '..%01', '.. ', '..%20', '..;', '..%3b', '%u002e%u002e']
SEPARATORS = ['/', '%2f', '%2F', '\\', '%5c', '%5C', '%252f', '%255c', '%c0%af', '%c1%9c',
              '%e0%80%af', '//', '/./', '/%2e/', '%00/']
PREFIXES = ['/static/', '/auth/']


@pytest.fixture(scope='module')
def tree():
    base = tempfile.mkdtemp(prefix='uw-hard-static-')
    root = os.path.join(base, 'root')
    os.makedirs(os.path.join(root, 'sub'))
    os.makedirs(os.path.join(base, 'root2'))
    with open(os.path.join(base, 'secret.txt'), 'wb') as file:
        file.write(SECRET)
    with open(os.path.join(base, 'root2', 'secret2.txt'), 'wb') as file:
        file.write(SECRET)
    with open(os.path.join(root, 'a.txt'), 'wb') as file:
        file.write(PUBLIC)
    with open(os.path.join(root, 'sub', 'b.txt'), 'wb') as file:
        file.write(PUBLIC)
    with open(os.path.join(root, 'index.html'), 'wb') as file:
        file.write(b'<p>index</p>')
    os.symlink(os.path.join(base, 'secret.txt'), os.path.join(root, 'link_file'))
    os.symlink('../secret.txt', os.path.join(root, 'sub', 'rel_link'))
    os.symlink(base, os.path.join(root, 'link_dir'))
    os.symlink('..', os.path.join(root, 'sub', 'up'))
    os.symlink('/etc', os.path.join(root, 'link_etc'))
    os.symlink(os.path.join(base, 'root2'), os.path.join(root, 'link_sibling'))
    os.symlink('a.txt', os.path.join(root, 'inner_ok'))
    os.makedirs(os.path.join(root, 'dir_with_bad_index'))
    os.symlink(os.path.join(base, 'secret.txt'),
               os.path.join(root, 'dir_with_bad_index', 'index.html'))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope='module')
def server(tree):
    app = AppServer('hard_static', env={'HARD_STATIC_ROOT': os.path.join(tree, 'root')})
    app.start()
    yield app
    app.cleanup()


def hostile_paths(base):
    paths = []
    for prefix in PREFIXES:
        for dots in DOTS:
            for sep in SEPARATORS:
                for depth in (1, 2, 4):
                    climb = (dots + sep) * depth
                    paths.append(prefix + climb + 'secret.txt')
                paths.append(prefix + dots + sep + 'root2' + sep + 'secret2.txt')
                paths.append(prefix + 'sub' + sep + dots + sep + dots + sep + 'secret.txt')
                paths.append(prefix + 'sub/' + dots + sep + dots + sep + 'etc' + sep + 'passwd')
        encoded_base = base.replace('/', '%2f')
        paths += [
            prefix + base + '/secret.txt',
            prefix + '/' + base + '/secret.txt',
            prefix + encoded_base + '%2fsecret.txt',
            prefix + '%2f' + encoded_base + '%2fsecret.txt',
            prefix + base.replace('/', '\\') + '\\secret.txt',
            prefix + '/etc/passwd',
            prefix + '%2fetc%2fpasswd',
            prefix + 'C:\\Windows\\win.ini',
            prefix + 'C:%5cWindows%5cwin.ini',
            prefix + 'file:///etc/passwd',
            prefix + 'a.txt%00../../secret.txt',
            prefix + '%00../secret.txt',
            prefix + 'link_file',
            prefix + 'link_file/',
            prefix + 'link_dir/secret.txt',
            prefix + 'link_dir/root2/secret2.txt',
            prefix + 'link_dir//secret.txt',
            prefix + 'link_dir/./secret.txt',
            prefix + 'link_dir%2fsecret.txt',
            prefix + 'link_etc/passwd',
            prefix + 'link_sibling/secret2.txt',
            prefix + 'sub/rel_link',
            prefix + 'sub/up/../secret.txt',
            prefix + 'sub/up/link_file',
            prefix + 'dir_with_bad_index/',
            prefix + 'dir_with_bad_index',
            prefix + '..',
            prefix + '../',
            prefix + '%2e%2e',
            prefix + '%2e%2e/',
        ]
    paths += ['/static/../secret.txt', '/static/..', '/auth/../secret.txt',
              '/static%2f..%2fsecret.txt', '/static..%2fsecret.txt',
              '/static/../../../../../../etc/passwd',
              '//static/../secret.txt', '/./static/../secret.txt']
    return paths


def _fetch(port, method, path):
    data = (f'{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
            'Connection: close\r\n\r\n').encode('latin-1')
    return exchange(port, data, timeout=10, head_request=(method == 'HEAD'))


def test_controls_are_served(server):
    for path, body in (('/static/a.txt', PUBLIC), ('/auth/a.txt', PUBLIC),
                       ('/static/sub/b.txt', PUBLIC), ('/static/inner_ok', PUBLIC),
                       ('/static/sub/../a.txt', None), ('/static/', b'<p>index</p>')):
        outcome = _fetch(server.port, 'GET', path)
        assert outcome.rest == b'' and len(outcome.finals) == 1, (path, outcome)
        if body is None:
            assert outcome.finals[0].status in HOSTILE_STATUSES | {200}
        else:
            assert outcome.finals[0].status == 200, (path, outcome)
            assert outcome.finals[0].body == body


@pytest.mark.parametrize('method', ['GET', 'HEAD'])
def test_nothing_outside_the_root_is_served(server, tree, method):
    paths = hostile_paths(tree)
    assert len(paths) > 1500
    with open('/etc/passwd', 'rb') as file:
        passwd = file.read(32)

    def one(path):
        outcome = _fetch(server.port, method, path)
        return path, outcome

    failures = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        for path, outcome in pool.map(one, paths):
            if SECRET in outcome.raw or (passwd and passwd in outcome.raw):
                failures.append((path, 'SECRET LEAKED', outcome.raw[:300]))
                continue
            if outcome.rest != b'' or len(outcome.finals) > 1:
                failures.append((path, 'malformed', outcome))
                continue
            if not outcome.finals:
                if not outcome.closed:
                    failures.append((path, 'no answer, not closed', outcome))
                continue
            status = outcome.finals[0].status
            if status not in HOSTILE_STATUSES:
                failures.append((path, status, outcome.raw[:300]))
    assert not failures, f"{len(failures)} of {len(paths)}: {failures[:20]}"
    probe(server)
    assert 'static file' not in server.log()


@pytest.mark.parametrize('header, status, body', [
    ('Range: bytes=' + '9' * 5000 + '-', 416, b''),
    ('Range: bytes=0-' + '9' * 5000, 206, PUBLIC),
    ('Range: bytes=-' + '9' * 5000, 206, PUBLIC),
    ('Range: bytes=' + '0' * 5000 + '1-1', 206, PUBLIC[1:2]),
    ('If-Modified-Since: Thu, 03 Dec 99999999999 09:54:00 GMT', 200, PUBLIC),
])
def test_absurd_numbers_in_conditional_headers(server, header, status, body):
    # numbers int() refuses (4300 digits and more) or that overflow a C
    # long are read as far past the end, or as no date: never a 500
    data = (f'GET /static/a.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\n'
            'Connection: close\r\n\r\n').encode('latin-1')
    outcome = exchange(server.port, data, timeout=10)
    assert outcome.rest == b'' and len(outcome.finals) == 1, outcome
    assert (outcome.finals[0].status, outcome.finals[0].body) == (status, body)
    assert 'static file' not in server.log()
