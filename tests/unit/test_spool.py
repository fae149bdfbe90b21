"""The pure parts of large bodies: the spool policy and its unnamed files,
the SpooledBytes view, descriptors passed inside pickled messages, the
worker's body_file, a chunked body handing its data over, the settings,
and answers put into shared memory."""
import errno
import hashlib
import io
import os
import pickle
import resource
import socket
import stat

import pytest

import uhttp.workers as _workers
from uhttp.workers import bodyview, channel, config, files, messages, spool
from uhttp.workers import sharedbody
from uhttp.workers.http import parse
from uhttp.workers.testing import WorkerClient


def closed(fd):
    try:
        os.fstat(fd)
    except OSError as err:
        return err.errno == errno.EBADF
    return False


def view_and_file(data, directory):
    """A SpooledBytes of `data` and its file's (device, inode)."""
    part = spool.SpoolPolicy(0, str(directory)).open()
    part.write(data)
    stat = os.fstat(part.fd)
    return part.finish(), (stat.st_dev, stat.st_ino)


def descriptors_on(file_id):
    """How many of this process's descriptors are open on the file
    `file_id` ((device, inode)): counting by file, not in all, so that
    descriptors other code opens or closes meanwhile do not count."""
    count = 0
    for name in os.listdir('/proc/self/fd'):
        try:
            stat = os.stat(f'/proc/self/fd/{name}')
        except OSError:
            continue
        count += (stat.st_dev, stat.st_ino) == file_id
    return count


def view_of(data, directory):
    part = spool.SpoolPolicy(0, str(directory)).open()
    part.write(data)
    return part.finish()


# -- policy and files ----------------------------------------------------------------

def test_policy_spools_what_is_above_the_threshold(tmp_path):
    policy = spool.SpoolPolicy(100, str(tmp_path))
    assert not policy.wants(0) and not policy.wants(100)
    assert policy.wants(101)
    assert spool.SpoolPolicy(0).wants(1) and not spool.SpoolPolicy(0).wants(0)
    assert spool.SpoolPolicy().threshold == 256 * 1024


@pytest.mark.parametrize('value,error', [
    (-1, ValueError), (True, TypeError), ('1', TypeError), (1.5, TypeError)])
def test_bad_thresholds(value, error):
    with pytest.raises(error, match='spool_threshold'):
        spool.SpoolPolicy(value)


def test_bad_directories(tmp_path):
    with pytest.raises(ValueError, match='spool_dir'):
        spool.SpoolPolicy(0, str(tmp_path / 'missing'))
    with pytest.raises(TypeError, match='spool_dir'):
        spool.SpoolPolicy(0, 42)
    assert spool.SpoolPolicy(0, tmp_path).directory == str(tmp_path)


def test_a_directory_that_cannot_hold_a_file_is_refused_at_once():
    # /proc is a directory no file can be made in, whoever runs the test
    # (a directory without write permission is writable to root)
    with pytest.raises(ValueError, match="spool_dir '/proc' cannot hold"):
        spool.SpoolPolicy(0, '/proc')
    with pytest.raises(ValueError, match="spool_dir '/proc' cannot hold"):
        config.DispatcherSettings(spool_dir='/proc')


@pytest.mark.parametrize('opener', [spool.open_unnamed, spool.unlinked_file])
def test_spool_files_have_no_name_and_mode_0600(tmp_path, opener):
    fd = opener(str(tmp_path))
    try:
        assert os.listdir(tmp_path) == []
        info = os.fstat(fd)
        assert stat.S_ISREG(info.st_mode) and info.st_mode & 0o777 == 0o600
        assert not os.get_inheritable(fd)
        assert os.write(fd, b'abc') == 3
    finally:
        os.close(fd)


def test_spool_writes_then_finishes_as_a_view(tmp_path):
    part = spool.SpoolPolicy(0, str(tmp_path)).open()
    part.write(b'hello ')
    part.write(memoryview(b'world'))
    assert part.size == 11
    fd = part.fd
    view = part.finish()
    assert part.fd == -1 and view.fileno() == fd
    assert view == b'hello world'
    del view
    assert closed(fd)


def test_a_spool_that_cannot_be_mapped_closes_its_file(tmp_path):
    # mmap() takes a descriptor of its own: out of descriptors (or of
    # address space) the view cannot be made, and the file must not stay
    # open in the dispatcher for ever
    part = spool.SpoolPolicy(0, str(tmp_path)).open()
    part.write(b'x' * 1000)
    fd = part.fd
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    filler = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (fd + 16, hard))
    try:
        with pytest.raises(spool.StorageError) as caught:
            while True:   # every free descriptor taken
                try:
                    filler.append(os.open(os.devnull, os.O_RDONLY))
                except OSError as err:
                    assert err.errno == errno.EMFILE
                    break
            part.finish()
    finally:
        for each in filler:
            os.close(each)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert caught.value.errno == errno.EMFILE
    assert part.fd == -1 and closed(fd)


def test_an_empty_spool_that_cannot_be_mapped_closes_its_file(tmp_path):
    # mmap() refuses an empty file with ValueError, not OSError
    part = spool.SpoolPolicy(0, str(tmp_path)).open()
    fd = part.fd
    with pytest.raises(spool.StorageError):
        part.finish()
    assert part.fd == -1 and closed(fd)


def test_discarded_spool_closes_its_file(tmp_path):
    part = spool.SpoolPolicy(0, str(tmp_path)).open()
    part.write(b'x' * 1000)
    fd = part.fd
    part.discard()
    part.discard()  # twice is harmless
    assert closed(fd) and os.listdir(tmp_path) == []


def test_forget_in_child_closes_spools_and_views(tmp_path):
    writing = spool.SpoolPolicy(0, str(tmp_path)).open()
    whole = view_of(b'abc', tmp_path)
    fds = (writing.fd, whole.fileno())
    spool.forget_in_child()
    assert all(closed(fd) for fd in fds)
    assert whole.closed


# -- SpooledBytes ---------------------------------------------------------------------

def test_view_is_bytes_like(tmp_path):
    data = bytes(range(256)) * 40
    view = view_of(data, tmp_path)
    assert len(view) == len(data) and view[:3] == data[:3]
    assert bytes(view) == data and view.tobytes() == data
    assert hashlib.sha256(view).digest() == hashlib.sha256(data).digest()
    assert view == data and view == bytearray(data)
    assert view == memoryview(data) and view != data[:-1] and view != 'text'
    assert view == view_of(data, tmp_path)
    with pytest.raises(TypeError):
        hash(view)
    with pytest.raises(TypeError):
        view[0:1] = b'x'  # read-only
    assert repr(view) == f'<SpooledBytes {len(data)} bytes>'


def test_view_is_a_public_name(tmp_path):
    assert _workers.SpooledBytes is bodyview.SpooledBytes
    assert 'SpooledBytes' in _workers.__all__
    assert isinstance(view_of(b'x', tmp_path), _workers.SpooledBytes)


def test_view_decodes_text(tmp_path):
    assert view_of('héllo'.encode(), tmp_path).decode() == 'héllo'


def test_view_readers_keep_their_own_positions(tmp_path):
    data = b''.join(b'line %d\n' % n for n in range(1000))
    view = view_of(data, tmp_path)
    first, second = view.open(), view.open()
    assert first.read(5) == b'line '
    assert second.readline() == b'line 0\n'
    assert first.read(2) == b'0\n'
    assert list(second)[-1] == b'line 999\n'
    first.seek(-9, io.SEEK_END)
    assert first.read() == b'line 999\n' and first.tell() == len(data)
    first.seek(0)
    assert first.read() == data
    with pytest.raises(ValueError):
        first.seek(-1)


def test_view_pickles_as_bytes_outside_a_passing(tmp_path):
    view = view_of(b'plain', tmp_path)
    assert pickle.loads(pickle.dumps({'image': view})) == {'image': b'plain'}


# -- descriptors inside messages --------------------------------------------------------

@pytest.fixture
def channel_pair():
    """(dispatcher end fd, worker end socket), the worker's inbox set."""
    parent, child = files.make_socketpair()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=child)
    bodyview.set_inbox(sock)
    yield parent, sock
    bodyview.set_inbox(None)
    sock.close()
    os.close(parent)


def test_views_in_a_message_travel_as_descriptors(tmp_path, channel_pair):
    parent, _ = channel_pair
    image = view_of(b'\x89PNG' + b'.' * 5000, tmp_path)
    message = (messages.M_REQUEST, {'image': image, 'result': {'plate': 1}})
    header, payload = bodyview.pack_passing(
        message, channel.pack_parts, parent)
    assert len(payload) < 1000  # the bytes stayed in the file
    kind, data = pickle.loads(payload)
    got = data['image']
    assert kind == messages.M_REQUEST and data['result'] == {'plate': 1}
    assert isinstance(got, bodyview.SpooledBytes) and got == image
    assert got.fileno() != image.fileno()
    assert os.fstat(got.fileno()).st_ino == os.fstat(image.fileno()).st_ino
    assert len(header) == 4


def test_a_descriptor_that_never_came_is_lost(tmp_path, channel_pair):
    parent, _ = channel_pair
    image = view_of(b'abc', tmp_path)
    _, payload = bodyview.pack_passing((1, image), channel.pack_parts, parent)
    assert pickle.loads(payload)[1] == image
    again = pickle.loads(payload)  # its descriptor was taken already
    assert again[1] is bodyview.LOST
    request = messages.Request(7, 'POST', '/x')
    reply = bodyview.keep_body(request, bodyview.LOST)
    assert reply[0] == messages.W_RESPONSE and reply[1:3] == (7, 500)


def test_a_file_shorter_than_its_view_is_unmapped_and_closed(
        tmp_path, channel_pair):
    # mmap() refuses a length past the file's end with ValueError: the
    # received descriptor is closed, the worker answers 500
    parent, _ = channel_pair
    image, file_id = view_and_file(b'x' * 5000, tmp_path)
    _, payload = bodyview.pack_passing((1, image), channel.pack_parts, parent)
    os.ftruncate(image.fileno(), 0)   # (the view itself is never read again)
    before = descriptors_on(file_id)   # the view's (and its mmap's)
    got = pickle.loads(payload)[1]
    assert isinstance(got, bodyview.Unmapped) and got.size == 5000
    assert descriptors_on(file_id) == before   # the received one closed
    request = messages.Request(7, 'POST', '/x')
    assert bodyview.keep_body(request, got)[1:3] == (7, 500)


def test_passing_without_a_socket_fails_clearly(tmp_path):
    with pytest.raises(bodyview.PassError):
        bodyview.pack_passing((1, view_of(b'a', tmp_path)),
                              channel.pack_parts, None)
    assert bodyview.pack_passing((1, b'a'), channel.pack_parts, None)


# -- a worker's body_file ------------------------------------------------------------------

def test_body_file_of_every_kind_of_body(tmp_path):
    request = messages.Request(1, 'POST', '/x')
    bodyview.keep_body(request, b'small')
    assert request.body_file.read() == b'small'
    assert request.body_file is request.body_file
    spooled = messages.Request(2, 'POST', '/x')
    bodyview.keep_body(spooled, view_of(b'large' * 100, tmp_path))
    assert spooled.body_file.read() == b'large' * 100
    empty = messages.Request(3, 'GET', '/x')
    bodyview.keep_body(empty, None)
    assert empty.body_file.read() == b''
    assert messages.Request(data=b'made').body_file.read() == b'made'
    assert messages.Request(data={'a': 1}).body_file.read() == b''


class Reader(_workers.Worker):
    @_workers.api('/read', 'POST')
    def read(self, request):
        return {'body': request.body_file.read().decode(),
                'data': request.data}


def test_body_file_through_a_worker_client():
    client = WorkerClient(Reader)
    reply = client.post('/read', json={'n': 1})
    assert reply.data == {'body': '{"n": 1}', 'data': {'n': 1}}


# -- a chunked body handing its data over ----------------------------------------------------

def test_chunked_body_hands_over_what_it_decoded():
    body = parse.ChunkedBody(1000)
    used = body.feed(bytearray(b'5\r\nhello\r\n3\r\nabc\r\n'))
    assert used == 18 and body.held == 8
    assert body.take() == [b'hello', b'abc'] and body.held == 0
    body.feed(bytearray(b'2\r\nxy\r\n0\r\n\r\n'))
    assert body.done and body.held == 2 and body.body() == b'xy'


# -- settings ---------------------------------------------------------------------------------

def test_dispatcher_settings(tmp_path):
    options = config.DispatcherSettings().http_options
    assert options['spool_threshold'] == 256 * 1024
    assert options['spool_dir'] is None
    options = config.DispatcherSettings(
        spool_threshold=0, spool_dir=str(tmp_path)).http_options
    assert options['spool_threshold'] == 0
    with pytest.raises(ValueError, match='spool_threshold'):
        config.DispatcherSettings(spool_threshold=-5)
    with pytest.raises(ValueError, match='spool_dir'):
        config.DispatcherSettings(spool_dir=str(tmp_path / 'nope'))


# -- answers in shared memory --------------------------------------------------------------------

def test_shared_memory_holds_the_body_sealed():
    fd = sharedbody.shared_memory(b'answer' * 1000)
    try:
        assert os.pread(fd, 6, 0) == b'answer'
        assert os.fstat(fd).st_size == 6000
        with pytest.raises(OSError):
            os.pwrite(fd, b'x', 0)
    finally:
        os.close(fd)


def test_share_passes_the_body_and_names_it():
    parent, child = files.make_socketpair()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET, fileno=child)
    try:
        body = b'z' * 300000
        message = messages.response_message(9, body, 200)
        assert sharedbody.wanted(message, 1000, sock)
        assert not sharedbody.wanted(message, len(body), sock)
        assert not sharedbody.wanted(message, 1000, None)
        shared = sharedbody.share(message + (3, 1.5), sock)
        assert shared[:2] == (messages.W_SHARED_RESPONSE, 9)
        assert shared[2] == 200 and shared[4] == messages.BODY_BYTES
        assert shared[6:] == (3, 1.5)
        got = {}
        files.receive_fds(parent, got)
        try:
            assert os.pread(got[9], len(body) + 1, 0) == body
        finally:
            os.close(got[9])
    finally:
        sock.close()
        os.close(parent)


def test_spool_splices_socket_bytes_into_its_file(tmp_path):
    pipe = spool.splice_pipe()
    if pipe is None:
        pytest.skip("no splice() here")
    ours, theirs = socket.socketpair()
    try:
        part = spool.SpoolPolicy(0, str(tmp_path)).open()
        ours.setblocking(False)
        with pytest.raises(BlockingIOError):
            part.splice_from(ours.fileno(), 100, pipe)
        theirs.sendall(b'a' * 70000 + b'b' * 10)
        moved = 0
        while moved < 70010:
            moved += part.splice_from(ours.fileno(), 70010 - moved, pipe)
        assert part.size == 70010
        assert part.finish() == b'a' * 70000 + b'b' * 10
        theirs.close()
        assert spool.SpoolPolicy(0, str(tmp_path)).open().splice_from(
            ours.fileno(), 10, pipe) == 0  # EOF
    finally:
        ours.close()
        theirs.close()


def test_view_behaves_like_bytes_where_mmap_does_not(tmp_path):
    data = b'\x89PNG header' + bytes(range(256)) * 300 + b'trailer'
    view = view_of(data, tmp_path)
    assert view.hex() == data.hex() and view.hex(':')[:5] == '89:50'
    assert view.startswith(b'\x89PNG') and not view.startswith(b'PNG')
    assert view.startswith((b'x', b'\x89P')) and view.startswith(b'PNG', 1)
    assert view.endswith(b'trailer') and view.endswith((b'no', b'iler'))
    assert not view.endswith(b'head') and view.endswith(b'')
    # a str prefix is a mistake bytes would raise on, not a quiet False
    for call in (view.startswith, view.endswith):
        with pytest.raises(TypeError, match='bytes or a tuple of bytes'):
            call('trailer')
        with pytest.raises(TypeError):
            call((b'x', 'trailer'))
    assert view.startswith(bytearray(b'\x89P')) and view.endswith(
        memoryview(b'ler'))
    assert b'header' in view and b'absent' not in view and 0x89 in view
    assert list(view) == list(data)
    assert view + b'!' == data + b'!' and b'>' + view == b'>' + data


def test_inbox_closes_descriptors_of_messages_never_sent(tmp_path,
                                                        channel_pair):
    parent, _ = channel_pair
    lost, lost_file = view_and_file(b'never sent', tmp_path)
    sent, sent_file = view_and_file(b'sent', tmp_path)
    lost_held, sent_held = descriptors_on(lost_file), descriptors_on(sent_file)
    bodyview.pack_passing((1, lost), channel.pack_parts, parent)  # dropped
    _, payload = bodyview.pack_passing((2, sent), channel.pack_parts, parent)
    received = pickle.loads(payload)[1]
    assert received == b'sent'
    # the received view holds descriptors of its own (its file and its
    # mapping's); the dropped message's passed descriptor is closed
    assert descriptors_on(sent_file) == sent_held + 2
    assert descriptors_on(lost_file) == lost_held
    del received
    assert descriptors_on(sent_file) == sent_held
