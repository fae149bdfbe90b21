"""The dashboard in a real browser: Debian's headless Chromium, driven
over the Chrome DevTools Protocol on a pipe (fds 3 and 4, no websocket,
nothing downloaded), loads the page from a real dispatcher; the test
reads the rendered DOM as load comes and a worker is killed."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

import uhttp.workers as workers
from uhttp.workers.testing import TestServer

CHROMIUM = next((path for path in (shutil.which('chromium'),
                                   shutil.which('chromium-browser'))
                 if path), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install "
                             "chromium; .ci/run installs it)")


class Browser:
    """A headless Chromium and one page, over --remote-debugging-pipe."""

    def __init__(self, timeout=20.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix='uhttp-chromium-')
        to_child, self._to_write = os.pipe()
        self._from_read, from_child = os.pipe()

        def fds_3_and_4():
            high_in = os.dup(to_child)
            high_out = os.dup(from_child)
            os.dup2(high_in, 3)
            os.dup2(high_out, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu',
             '--disable-dev-shm-usage', '--no-first-run',
             '--no-default-browser-check', '--disable-extensions',
             '--disable-background-networking', '--remote-debugging-pipe',
             f'--user-data-dir={self.profile}', 'about:blank'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, pass_fds=(3, 4),
            preexec_fn=fds_3_and_4, start_new_session=True)
        os.close(to_child)
        os.close(from_child)
        self._next = 0
        self._replies = {}
        self._lock = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        target = self.call('Target.createTarget', {'url': 'about:blank'})
        self.session = self.call('Target.attachToTarget', {
            'targetId': target['targetId'], 'flatten': True})['sessionId']

    def _read(self):
        buffer = b''
        while True:
            try:
                data = os.read(self._from_read, 65536)
            except OSError:
                data = b''
            if not data:
                break
            buffer += data
            *messages, buffer = buffer.split(b'\0')
            for raw in messages:
                message = json.loads(raw)
                if 'id' in message:
                    with self._lock:
                        self._replies[message['id']] = message
                        self._lock.notify_all()
        with self._lock:
            self._replies[None] = {'error': 'the browser closed its pipe'}
            self._lock.notify_all()

    def call(self, method, params=None, session=None):
        self._next += 1
        ident = self._next
        message = {'id': ident, 'method': method, 'params': params or {}}
        if session:
            message['sessionId'] = session
        os.write(self._to_write, json.dumps(message).encode() + b'\0')
        deadline = time.monotonic() + self.timeout
        with self._lock:
            while ident not in self._replies:
                if None in self._replies:
                    raise RuntimeError(self._replies[None]['error'])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no answer to {method}")
                self._lock.wait(left)
            reply = self._replies.pop(ident)
        if 'error' in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get('result', {})

    def navigate(self, url):
        self.call('Page.navigate', {'url': url}, self.session)

    def evaluate(self, expression):
        result = self.call('Runtime.evaluate', {
            'expression': expression, 'returnByValue': True}, self.session)
        if 'exceptionDetails' in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result['result'].get('value')

    def wait_for(self, expression, timeout=15.0, what=None):
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = self.evaluate(expression)
            except RuntimeError:
                last = None
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what or expression} (last: {last!r})")
            time.sleep(0.1)

    def close(self):
        try:
            self.call('Browser.close')
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:  # the browser's own helpers: its session, by its pid
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(5)
        for fd in (self._to_write, self._from_read):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)


class Work(workers.Worker):
    @workers.api('/api/work/{n:int}', 'GET')
    def work(self, request):
        return {'n': request.path_params['n']}


@pytest.fixture
def browser():
    started = Browser()
    yield started
    started.close()


POOL = "document.querySelector('section.pool[data-pool=\"Work\"]')"


def test_dashboard_shows_pools_load_and_a_crash(browser):
    pool = workers.WorkerPool(Work, num_workers=2, routes=['/api/**'])
    with TestServer(workers.Dispatcher, [pool],
                    dashboard_path='/_dashboard') as server:
        browser.navigate(server.url + '/_dashboard')
        browser.wait_for(
            f"{POOL} && {POOL}.querySelectorAll('tr.worker').length == 2",
            what='the pool and its two workers')
        slots = browser.evaluate(
            f"Array.from({POOL}.querySelectorAll('tr.worker'))"
            ".map(r => [r.dataset.slot, r.dataset.pid, r.dataset.state])")
        status = server.status()['pools'][0]['workers']
        assert [slot[:2] for slot in slots] == [
            [str(w['id']), str(w['pid'])] for w in status]
        assert all(slot[2] in ('ready', 'busy') for slot in slots)
        assert browser.evaluate("document.getElementById('conn').textContent") == 'live'

        # load: the requests counter on the page rises
        before = int(browser.evaluate(
            f"{POOL}.querySelector('[data-stat=requests]').textContent"))
        for index in range(60):
            assert server.get(f'/api/work/{index}').status == 200
        browser.wait_for(
            f"parseInt({POOL}.querySelector('[data-stat=requests]')"
            f".textContent) >= {before + 60}", what='the request count to rise')
        browser.wait_for(
            f"parseFloat({POOL}.querySelector('.plot div').textContent"
            ".split('(max ')[1]) > 0"
            f" && {POOL}.querySelectorAll('svg path').length == 3",
            what='the plots')

        # a crash: the slot shows a new pid and one restart, the log the death
        victim = status[0]['pid']
        os.kill(victim, signal.SIGKILL)
        row = f"{POOL}.querySelector('tr.worker[data-slot=\"0\"]')"
        browser.wait_for(
            f"{row} && {row}.dataset.pid != '{victim}' && {row}.dataset.pid != ''"
            f" && {row}.querySelector('.restarts').textContent == '1'",
            what='the restarted worker')
        assert browser.evaluate(f"{POOL}.querySelector('[data-stat=restarts]')"
                                ".textContent") == '1'
        browser.wait_for(
            "Array.from(document.querySelectorAll('#log li')).some("
            f"li => li.textContent.indexOf('pid {victim}') >= 0)",
            what='the death in the log list')


def test_the_page_asks_for_no_favicon(browser):
    # the browser fetched /favicon.ico: a 404 in its console, an access
    # line and a counted 404 for every page opened, on a server with none
    pool = workers.WorkerPool(Work, num_workers=1, routes=['/api/**'])
    with TestServer(workers.Dispatcher, [pool], dashboard_path='/_dashboard',
                    access_log='{path} {status}') as server:
        browser.navigate(server.url + '/_dashboard')
        browser.wait_for("document.getElementById('conn').textContent == "
                         "'live'", what='the page to be live')
        assert browser.evaluate(
            "document.querySelector('link[rel=icon]').href") == 'data:,'
        # the page's own requests are all logged by now (the favicon one
        # comes right after the document)
        assert server.get('/api/work/1').status == 200
        deadline = time.monotonic() + 10
        while not any(record.message == '/api/work/1 200'
                      for record in list(server.logs)):
            assert time.monotonic() < deadline, 'no access line'
            time.sleep(0.05)
        paths = [record.message for record in list(server.logs)
                 if record.name == 'access']
        assert not [line for line in paths if 'favicon' in line], paths
