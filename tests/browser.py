"""Headless Chromium driven over the Chrome DevTools Protocol on a pipe
(--remote-debugging-pipe: the browser reads commands on fd 3 and writes
answers on fd 4, each a JSON object ended by a NUL byte).

    with Browser() as browser:
        page = browser.new_page()
        value = browser.evaluate(page, 'new Promise(r => r(1 + 1))')

Every wait has a timeout; the browser is killed by its pid on close().
`find_chromium()` is None where no Chromium is installed (skip then).
"""

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

CANDIDATES = ('chromium', 'chromium-browser', 'google-chrome', 'chrome')


def find_chromium():
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium process and its DevTools pipe."""

    def __init__(self, executable=None, timeout=30.0):
        self.executable = executable or find_chromium()
        if self.executable is None:
            raise BrowserError("no Chromium installed")
        self.timeout = timeout
        self.process = None
        self.profile = None
        self.next_id = 0
        self.buffer = b''

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        self.profile = tempfile.mkdtemp(prefix='cdp-profile-')
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()

        def fds():  # the browser's fd 3 and 4 (moved out of the way first)
            read = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD, 10)
            write = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD, 10)
            os.dup2(read, 3)
            os.dup2(write, 4)
            os.setsid()
        self.process = subprocess.Popen(
            [self.executable, '--headless=new', '--no-sandbox',
             '--disable-gpu', '--no-first-run', '--no-default-browser-check',
             '--disable-extensions', '--disable-dev-shm-usage',
             '--remote-debugging-pipe', f'--user-data-dir={self.profile}',
             'about:blank'],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, preexec_fn=fds, pass_fds=(3, 4),
            close_fds=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.call('Browser.getVersion')

    def close(self):
        process, self.process = self.process, None
        if process is not None:
            for fd in (self.to_browser, self.from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        if self.profile:
            shutil.rmtree(self.profile, ignore_errors=True)
            self.profile = None

    # -- the protocol ----------------------------------------------------------

    def call(self, method, params=None, session=None, timeout=None):
        """Send one command; its result (BrowserError on an error)."""
        self.next_id += 1
        message = {'id': self.next_id, 'method': method,
                   'params': params or {}}
        if session is not None:
            message['sessionId'] = session
        os.write(self.to_browser, json.dumps(message).encode() + b'\0')
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            answer = self._read(deadline)
            if answer.get('id') == self.next_id:
                if 'error' in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                return answer.get('result', {})

    def _read(self, deadline):
        while b'\0' not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("the browser did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 16)
                if not chunk:
                    raise BrowserError("the browser closed its pipe")
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b'\0')
        return json.loads(line)

    def new_page(self, url='about:blank'):
        """A new tab, attached: its session id for evaluate()."""
        target = self.call('Target.createTarget', {'url': url})['targetId']
        return self.call('Target.attachToTarget',
                         {'targetId': target, 'flatten': True})['sessionId']

    def evaluate(self, session, expression, timeout=None):
        """The value of a JavaScript expression (promises awaited)."""
        result = self.call('Runtime.evaluate', {
            'expression': expression, 'awaitPromise': True,
            'returnByValue': True}, session=session, timeout=timeout)
        if 'exceptionDetails' in result:
            raise BrowserError(f"page raised: {result['exceptionDetails']}")
        return result['result'].get('value')
