"""The pure parts of file responses: Range parsing, Content-Disposition,
the worker's message for a FileResponse, and the descriptor hand-over over
a real socket pair."""
import io
import os
import socket
import stat

import pytest

import uhttp.workers as _workers
from uhttp.workers import files as _files
from uhttp.workers import messages as _msg
from uhttp.workers.testing import WorkerClient

U = _files.UNSATISFIABLE


@pytest.mark.parametrize('header,size,expected', [
    (None, 100, None),
    ('', 100, None),
    ('bytes=0-9', 100, (0, 9)),
    ('bytes=10-', 100, (10, 99)),
    ('bytes=90-200', 100, (90, 99)),
    ('bytes=-10', 100, (90, 99)),
    ('bytes=-500', 100, (0, 99)),
    ('bytes = 5 - 6', 100, (5, 6)),
    ('BYTES=0-0', 100, (0, 0)),
    ('bytes=99-', 100, (99, 99)),
    ('bytes=100-', 100, U),
    ('bytes=100-200', 100, U),
    ('bytes=-0', 100, U),
    ('bytes=0-', 0, U),
    ('bytes=-5', 0, U),
    ('bytes=9-3', 100, None),       # invalid: ignored
    ('bytes=0-1,5-6', 100, None),   # several ranges: the whole file
    ('items=0-1', 100, None),
    ('bytes=a-b', 100, None),
    ('bytes=-', 100, None),
    ('bytes0-1', 100, None),
])
def test_parse_range(header, size, expected):
    assert _files.parse_range(header, size) == expected


@pytest.mark.parametrize('name,expected', [
    ('report.pdf', 'attachment; filename="report.pdf"'),
    ('a "quoted" name.txt', 'attachment; filename="a _quoted_ name.txt"; '
                            "filename*=UTF-8''a%20%22quoted%22%20name.txt"),
    ('résumé.pdf', 'attachment; filename="r_sum_.pdf"; '
                   "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"),
    ('../etc/passwd', 'attachment; filename=".._etc_passwd"'),
    ('line\r\nbreak', 'attachment; filename="linebreak"'),
    ('', 'attachment'),
    ('\r\n', 'attachment'),
])
def test_content_disposition(name, expected):
    assert _files.content_disposition(name) == expected


@pytest.mark.parametrize('name', [b'a.txt', 5, ['a.txt']])
def test_a_download_name_is_text(name):
    with pytest.raises(TypeError, match='download_name must be a str'):
        _workers.FileResponse('/etc/hostname', download_name=name)


def test_file_response_needs_path_or_file():
    with pytest.raises(TypeError):
        _workers.FileResponse(42)
    assert _workers.FileResponse('/x/y.txt').name() == '/x/y.txt'


def test_file_message_merges_headers_and_checks_them():
    response = _workers.FileResponse('/tmp/x.bin', headers={'X-A': '1'})
    message = _msg.response_message(7, response, 200, [('X-B', '2')])
    assert message[0] == _msg.W_FILE_RESPONSE and message[1] == 7
    assert message[2] == 200
    assert message[3] == [('X-B', '2'), ('X-A', '1')]
    assert _files.carries_file(message)
    with pytest.raises(_msg.ResponseError):
        _msg.response_message(7, _workers.FileResponse(
            '/tmp/x', headers={'X-A': 'a\r\nb'}), 200)
    with pytest.raises(_msg.ResponseError):
        _msg.response_message(7, _workers.FileResponse(
            '/tmp/x', content_type='text/plain\r\nX: y'), 200)


def test_descriptor_crosses_the_socket_pair(tmp_path):
    path = tmp_path / 'data.txt'
    path.write_bytes(b'hello file')
    parent, child = _files.make_socketpair()
    sock = _files.worker_socket(child)
    try:
        message = _msg.response_message(
            3, _workers.FileResponse(str(path), download_name='d.txt'), 200)
        sent = _files.worker_messages(message + (0, 1.5), sock)
        os.unlink(path)
        assert len(sent) == 1
        kind, request_id, status, headers, cookies, route, started = sent[0]
        assert (kind, request_id, status, route, started) == (
            _msg.W_FILE_RESPONSE, 3, 200, 0, 1.5)
        assert ('content-type', 'text/plain; charset=UTF-8') in headers
        assert ('content-disposition', 'attachment; filename="d.txt"') in headers
        received = {}
        _files.receive_fds(parent, received)
        assert list(received) == [3]
        fd = received[3]
        try:
            assert os.pread(fd, 100, 0) == b'hello file'
        finally:
            os.close(fd)
        _files.receive_fds(parent, received)  # nothing more, no blocking
        assert received == {3: fd}
    finally:
        sock.close()
        os.close(parent)


def test_missing_and_directory_answer_404_and_500(tmp_path):
    for source, status in ((str(tmp_path / 'nope'), 404), (str(tmp_path), 500)):
        message = _msg.response_message(
            5, _workers.FileResponse(source), 200)
        log, answer = _files.worker_messages(message, None)
        assert log[0] == _msg.W_LOG and source in log[3]
        assert answer[0] == _msg.W_RESPONSE and answer[2] == status


class FileWorker(_workers.Worker):
    @_workers.api('/file/{name}')
    def file(self, request):
        return _workers.FileResponse(
            os.path.join(self.kwargs['root'], request.path_params['name']),
            download_name='x.bin')


def test_worker_client_reads_the_file(tmp_path):
    path = tmp_path / 'blob.bin'
    path.write_bytes(b'\x00\x01binary')
    reply = WorkerClient(FileWorker, root=str(tmp_path)).get('/file/blob.bin')
    assert reply.status == 200
    assert reply.content == b'\x00\x01binary'
    assert reply.headers['content-disposition'] == 'attachment; filename="x.bin"'


# -- file objects without a descriptor ----------------------------------------

def _read_fd(fd):
    try:
        assert stat.S_ISREG(os.fstat(fd).st_mode)
        return os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)


def test_a_bytesio_becomes_a_memory_file_of_its_whole_value():
    source = io.BytesIO(b'name,items\nbolts,12\n')
    source.read(5)  # its position does not matter: the whole file is sent
    assert _read_fd(_files.descriptor_of(source)) == b'name,items\nbolts,12\n'


def test_a_reader_without_getvalue_is_read_from_its_start():
    source = io.BufferedReader(io.BytesIO(b'abc' * 1000))
    source.read(10)
    assert _read_fd(_files.descriptor_of(source)) == b'abc' * 1000


@pytest.mark.parametrize('source, message', [
    (io.StringIO('text'), 'not bytes'),
    (object(), 'cannot be read'),
])
def test_what_cannot_be_a_file_is_an_oserror(source, message):
    with pytest.raises(OSError, match=message):
        _files.descriptor_of(source)


def test_a_closed_file_object_is_an_oserror():
    source = io.BytesIO(b'x')
    source.close()
    with pytest.raises(OSError, match='cannot be read'):
        _files.descriptor_of(source)


def test_a_spooled_body_file_is_its_own_file(tmp_path):
    from uhttp.workers import spool
    writer = spool.SpoolPolicy(0, str(tmp_path)).open()
    writer.write(b'spooled body')
    view = writer.finish()
    reader = view.open()
    fd, _ = _files.open_file(_workers.FileResponse(reader))
    assert reader.closed
    try:
        assert os.path.samestat(os.fstat(fd), os.fstat(view.fileno()))
    finally:
        assert _read_fd(fd) == b'spooled body'
        view.close()


def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path):
    fifo = tmp_path / 'pipe'
    os.mkfifo(fifo)     # no writer: a blocking open() would never return
    with pytest.raises(OSError, match='not a regular file'):
        _files.open_file(_workers.FileResponse(str(fifo)))


def test_a_regular_file_opened_reads_blocking_as_ever(tmp_path):
    path = tmp_path / 'a.txt'
    path.write_bytes(b'text')
    fd, _ = _files.open_file(_workers.FileResponse(str(path)))
    assert _read_fd(fd) == b'text'


@pytest.mark.parametrize('name, download_name, expected', [
    ('/tmp/tmpx81k', 'export.csv', 'text/csv; charset=UTF-8'),
    ('report.json', 'export.csv', 'application/json'),
    ('', None, 'application/octet-stream'),
])
def test_the_type_of_a_file_answer(name, download_name, expected):
    assert _files.guessed_type(name, download_name) == expected
