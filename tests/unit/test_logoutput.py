"""LogOutput: the dispatcher's log stream never blocks its loop; records
wait in order, and what does not fit is counted and said."""
import io
import os
import re
import threading

from uhttp.workers.logoutput import LogOutput


def _notice(message):
    return f'WARNING {message}\n'


def _pipe_stream():
    read_fd, write_fd = os.pipe()
    return read_fd, os.fdopen(write_fd, 'w', encoding='utf-8')


def _read_until(read_fd, needle, timeout=10):
    found = []

    def run():
        data = b''
        while needle.encode() not in data:
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            data += chunk
        found.append(data.decode())

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    reader.join(timeout)
    assert found, f"{needle!r} not read within {timeout} s"
    return found[0]


def test_stream_without_descriptor_is_written_at_once():
    stream = io.StringIO()
    output = LogOutput(stream, _notice)
    output.write('one\n')
    output.write('x' * 100000 + '\n')
    assert stream.getvalue() == 'one\n' + 'x' * 100000 + '\n'
    assert output.thread is None


def test_regular_file_is_written_at_once(tmp_path):
    with open(tmp_path / 'log', 'w', encoding='utf-8') as stream:
        output = LogOutput(stream, _notice)
        output.write('y' * 1000000 + '\n')
        assert output.thread is None
    assert (tmp_path / 'log').read_text() == 'y' * 1000000 + '\n'


def test_full_pipe_queues_in_order_without_blocking():
    read_fd, stream = _pipe_stream()
    try:
        output = LogOutput(stream, _notice)
        lines = [f'record {i} ' + 'z' * 1000 + '\n' for i in range(500)]
        for line in lines:  # 500 KB: far above what the pipe holds
            output.write(line)
        output.write('big ' + 'b' * 300000 + '\n')
        output.write('last\n')
        assert not output.drain(0.2)  # nobody reads yet
        text = _read_until(read_fd, 'last\n')
        assert text == ''.join(lines) + 'big ' + 'b' * 300000 + '\nlast\n'
        assert output.drain(10)
        assert output.dropped_total == 0
    finally:
        stream.close()
        os.close(read_fd)


def test_records_beyond_the_limit_are_dropped_counted_and_said():
    read_fd, stream = _pipe_stream()
    try:
        output = LogOutput(stream, _notice, limit=200000)
        for i in range(1000):
            output.write(f'record {i:04d} ' + 'w' * 1000 + '\n')
        assert output.dropped_total > 0
        # once the queue is written, a WARNING says what is missing
        text = _read_until(read_fd, 'fast enough\n')
        output.write('after\n')
        text += _read_until(read_fd, 'after\n')
        numbers = [int(n) for n in re.findall(r'record (\d{4}) ', text)]
        assert numbers == sorted(numbers)
        said = re.findall(r'WARNING (\d+) log record\(s\) \((\d+) characters\) '
                          r'dropped', text)
        assert sum(int(count) for count, _ in said) == output.dropped_total
        assert len(numbers) + output.dropped_total == 1000
        assert text.endswith('after\n')
    finally:
        stream.close()
        os.close(read_fd)
