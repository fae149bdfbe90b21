"""static.py: mounts, safe path resolution, content types, conditional GET."""

import email.utils
import os

import pytest

from uhttp.workers.static import (
    StaticMount, content_type, etag, not_modified)


@pytest.fixture
def tree(tmp_path):
    """A served root plus a secret file outside it.

    tmp/
      secret.txt
      outside/index.html
      root/
        a.txt
        ....            (a legal file name)
        sub/index.html
        sub/page.css
        noindex/file.txt
        etc/            (empty)
    """
    (tmp_path / 'secret.txt').write_text('secret')
    (tmp_path / 'outside').mkdir()
    (tmp_path / 'outside' / 'index.html').write_text('outside')
    root = tmp_path / 'root'
    root.mkdir()
    (root / 'a.txt').write_text('A')
    (root / '....').write_text('dots')
    (root / 'sub').mkdir()
    (root / 'sub' / 'index.html').write_text('<p>sub</p>')
    (root / 'sub' / 'page.css').write_text('p{}')
    (root / 'noindex').mkdir()
    (root / 'noindex' / 'file.txt').write_text('f')
    (root / 'etc').mkdir()
    (root / 'index.html').write_text('<p>root</p>')
    return tmp_path


@pytest.fixture
def mount(tree):
    return StaticMount('/static/', str(tree / 'root'))


def real(path):
    return os.path.realpath(str(path))


# -- construction -----------------------------------------------------------------

class TestStaticMountConstruction:
    def test_missing_directory_names_prefix(self, tmp_path):
        with pytest.raises(ValueError) as info:
            StaticMount('/assets/', str(tmp_path / 'nope'))
        assert '/assets/' in str(info.value)

    def test_file_instead_of_directory(self, tmp_path):
        target = tmp_path / 'file.txt'
        target.write_text('x')
        with pytest.raises(ValueError) as info:
            StaticMount('/f/', str(target))
        assert '/f/' in str(info.value)

    @pytest.mark.parametrize('prefix', ['static/', '', None, b'/static/', 5])
    def test_bad_prefix(self, tmp_path, prefix):
        with pytest.raises(ValueError):
            StaticMount(prefix, str(tmp_path))

    def test_bad_root_type(self, tmp_path):
        with pytest.raises(TypeError):
            StaticMount('/s/', 5)

    def test_pathlike_root(self, tmp_path):
        assert StaticMount('/s/', tmp_path).root == real(tmp_path)

    def test_root_is_real_path(self, tree):
        mount = StaticMount('/s/', str(tree / 'root' / 'sub' / '..'))
        assert mount.root == real(tree / 'root')

    def test_headers_with_cr_lf_rejected(self, tmp_path):
        with pytest.raises(ValueError):
            StaticMount('/s/', str(tmp_path), headers={'X': 'a\r\nb'})

    def test_headers_kept(self, tmp_path):
        mount = StaticMount('/s/', str(tmp_path),
                            headers={'Cache-Control': 'max-age=60'},
                            authoritative=True)
        assert mount.headers == {'Cache-Control': 'max-age=60'}
        assert mount.authoritative is True

    @pytest.mark.parametrize('value', ['no', 'false', 0, 1, None])
    def test_authoritative_is_true_or_false(self, tmp_path, value):
        # authoritative = "no" in a config file turned it on
        with pytest.raises(TypeError, match='authoritative must be True or '
                                            'False'):
            StaticMount('/s/', str(tmp_path), authoritative=value)


# -- relative() ------------------------------------------------------------------------

class TestRelative:
    @pytest.mark.parametrize('prefix', ['/static/', '/static'])
    def test_below_prefix(self, tree, prefix):
        mount = StaticMount(prefix, str(tree / 'root'))
        assert mount.relative('/static/a.txt') == '/a.txt'
        assert mount.relative('/static/sub/page.css') == '/sub/page.css'
        assert mount.relative('/static/') == '/'
        assert mount.relative('/static') == ''

    @pytest.mark.parametrize('path', ['/staticfoo', '/staticfoo/a.txt',
                                      '/other/a.txt', '/', '/stat'])
    def test_outside_prefix(self, mount, path):
        assert mount.relative(path) is None

    def test_root_prefix(self, tree):
        mount = StaticMount('/', str(tree / 'root'))
        assert mount.relative('/a.txt') == '/a.txt'
        assert mount.relative('/') == '/'


# -- resolve() --------------------------------------------------------------------------

class TestResolve:
    def test_file(self, tree, mount):
        assert mount.resolve('/a.txt') == real(tree / 'root' / 'a.txt')

    def test_nested_file(self, tree, mount):
        assert mount.resolve('/sub/page.css') == real(
            tree / 'root' / 'sub' / 'page.css')

    def test_without_leading_slash(self, tree, mount):
        assert mount.resolve('a.txt') == real(tree / 'root' / 'a.txt')

    @pytest.mark.parametrize('rest', ['/sub', '/sub/', '/sub//', '/./sub/.'])
    def test_directory_serves_index(self, tree, mount, rest):
        assert mount.resolve(rest) == real(tree / 'root' / 'sub' / 'index.html')

    @pytest.mark.parametrize('rest', ['', '/', '/.'])
    def test_root_serves_index(self, tree, mount, rest):
        assert mount.resolve(rest) == real(tree / 'root' / 'index.html')

    def test_root_without_index(self, tree):
        mount = StaticMount('/n/', str(tree / 'root' / 'noindex'))
        assert mount.resolve('/') is None

    @pytest.mark.parametrize('rest', ['/noindex', '/noindex/', '/etc'])
    def test_directory_without_index(self, mount, rest):
        assert mount.resolve(rest) is None

    @pytest.mark.parametrize('rest', ['/missing.txt', '/sub/missing',
                                      '/a.txt/more', '/a.txt/', '/a.txt//',
                                      '/a.txt/.', '/sub/page.css/'])
    def test_missing(self, mount, rest):
        assert mount.resolve(rest) is None

    @pytest.mark.parametrize('rest', [
        '..', '../', '/..', '/../', '/../secret.txt', '../secret.txt',
        '/a/../../x', '/sub/../../secret.txt', '/sub/../../outside/',
        '/../outside/index.html', '/./../secret.txt', '/sub/..',
        '/noindex/../../secret.txt', '/../root/a.txt', '//../secret.txt'])
    def test_dot_dot_rejected(self, mount, rest):
        assert mount.resolve(rest) is None

    def test_four_dots_is_a_legal_name(self, tree, mount):
        assert mount.resolve('/....') == real(tree / 'root' / '....')

    @pytest.mark.parametrize('rest', ['/...', '/.../x', '/sub/....'])
    def test_other_dot_names_are_not_traversal(self, mount, rest):
        # no such files: a miss, never an escape
        assert mount.resolve(rest) is None

    @pytest.mark.parametrize('rest', [
        '/..\\secret.txt', '\\..\\secret.txt', '/sub\\..\\..\\secret.txt',
        '/a.txt\\', '\\a.txt'])
    def test_backslashes_rejected(self, mount, rest):
        assert mount.resolve(rest) is None

    @pytest.mark.parametrize('rest', ['/a.txt\x00', '/a.txt\x00.png',
                                      '\x00', '/sub/\x00'])
    def test_nul_rejected(self, mount, rest):
        assert mount.resolve(rest) is None

    @pytest.mark.parametrize('rest', ['//etc/passwd', '/etc/passwd',
                                      '///etc/passwd', '//' + '/etc/hostname'])
    def test_absolute_paths_stay_inside_root(self, tree, mount, rest):
        result = mount.resolve(rest)
        assert result is None

    def test_absolute_path_to_outside_file(self, tree, mount):
        secret = str(tree / 'secret.txt')
        assert mount.resolve('/' + secret) is None
        assert mount.resolve(secret) is None

    def test_absolute_path_maps_into_root(self, tree, mount):
        (tree / 'root' / 'etc' / 'passwd').write_text('inside')
        result = mount.resolve('//etc/passwd')
        assert result == real(tree / 'root' / 'etc' / 'passwd')

    def test_symlink_to_outside_file(self, tree, mount):
        os.symlink(str(tree / 'secret.txt'), str(tree / 'root' / 'link.txt'))
        assert mount.resolve('/link.txt') is None

    def test_symlinked_directory_to_outside(self, tree, mount):
        os.symlink(str(tree / 'outside'), str(tree / 'root' / 'out'))
        assert mount.resolve('/out') is None
        assert mount.resolve('/out/') is None
        assert mount.resolve('/out/index.html') is None

    def test_index_symlinked_outside(self, tree, mount):
        os.symlink(str(tree / 'outside' / 'index.html'),
                   str(tree / 'root' / 'noindex' / 'index.html'))
        assert mount.resolve('/noindex/') is None

    def test_symlink_inside_root_is_served(self, tree, mount):
        os.symlink(str(tree / 'root' / 'sub' / 'page.css'),
                   str(tree / 'root' / 'alias.css'))
        assert mount.resolve('/alias.css') == real(
            tree / 'root' / 'sub' / 'page.css')

    def test_relative_symlink_inside_root(self, tree, mount):
        os.symlink('sub', str(tree / 'root' / 'subalias'))
        assert mount.resolve('/subalias/page.css') == real(
            tree / 'root' / 'sub' / 'page.css')

    def test_dangling_symlink(self, tree, mount):
        os.symlink(str(tree / 'root' / 'gone'), str(tree / 'root' / 'dangle'))
        assert mount.resolve('/dangle') is None

    def test_symlink_to_root_parent(self, tree, mount):
        os.symlink('..', str(tree / 'root' / 'up'))
        assert mount.resolve('/up/secret.txt') is None

    def test_root_itself_a_symlink(self, tree):
        os.symlink(str(tree / 'root'), str(tree / 'rootlink'))
        mount = StaticMount('/s/', str(tree / 'rootlink'))
        assert mount.resolve('/a.txt') == real(tree / 'root' / 'a.txt')
        assert mount.resolve('/sub/') == real(tree / 'root' / 'sub' / 'index.html')
        assert mount.resolve('/../secret.txt') is None

    def test_sibling_with_common_prefix_not_inside(self, tree):
        # '/tmp/x/root' must not accept '/tmp/x/rootother/...'
        (tree / 'rootother').mkdir()
        (tree / 'rootother' / 'f.txt').write_text('no')
        os.symlink(str(tree / 'rootother' / 'f.txt'),
                   str(tree / 'root' / 'sibling.txt'))
        mount = StaticMount('/s/', str(tree / 'root'))
        assert mount.resolve('/sibling.txt') is None

    def test_fifo_is_not_a_file(self, tree, mount):
        if not hasattr(os, 'mkfifo'):
            pytest.skip('no mkfifo')
        os.mkfifo(str(tree / 'root' / 'pipe'))
        assert mount.resolve('/pipe') is None

    def test_spaces_and_unicode_names(self, tree, mount):
        (tree / 'root' / 'a b ü.txt').write_text('x')
        assert mount.resolve('/a b ü.txt') == real(tree / 'root' / 'a b ü.txt')


# -- content_type / etag / not_modified ---------------------------------------------

class TestContentType:
    @pytest.mark.parametrize('name,expected', [
        ('index.html', 'text/html; charset=UTF-8'),
        ('INDEX.HTML', 'text/html; charset=UTF-8'),
        ('app.js', 'text/javascript; charset=UTF-8'),
        ('style.css', 'text/css; charset=UTF-8'),
        ('data.json', 'application/json'),
        ('logo.png', 'image/png'),
        ('photo.JPG', 'image/jpeg'),
        ('icon.svg', 'image/svg+xml'),
        ('mod.wasm', 'application/wasm'),
        ('/a/b/readme.txt', 'text/plain; charset=UTF-8'),
    ])
    def test_known(self, name, expected):
        assert content_type(name) == expected

    @pytest.mark.parametrize('name', ['blob', 'file.zzzunknownext', 'Makefile'])
    def test_unknown_is_octet_stream(self, name):
        assert content_type(name) == 'application/octet-stream'

    def test_guessed_text_gets_charset(self):
        assert content_type('table.csv') == 'text/csv; charset=UTF-8'

    @pytest.mark.parametrize('name,expected', [
        ('log.txt.gz', 'application/gzip'), ('site.tar.gz', 'application/gzip'),
        ('data.csv.bz2', 'application/x-bzip2'),
        ('page.html.xz', 'application/x-xz')])
    def test_a_compressed_file_is_its_compression_not_its_content(
            self, name, expected):
        assert content_type(name) == expected


class TestEtag:
    def test_quoted_and_stable(self, tree):
        info = os.stat(str(tree / 'root' / 'a.txt'))
        tag = etag(info)
        assert tag.startswith('"') and tag.endswith('"')
        assert etag(os.stat(str(tree / 'root' / 'a.txt'))) == tag

    def test_changes_with_size(self, tree):
        path = tree / 'root' / 'a.txt'
        before = os.stat(str(path))
        path.write_text('longer content')
        os.utime(str(path), ns=(before.st_atime_ns, before.st_mtime_ns))
        assert etag(os.stat(str(path))) != etag(before)

    def test_changes_with_mtime(self, tree):
        path = str(tree / 'root' / 'a.txt')
        before = os.stat(path)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1000))
        assert etag(os.stat(path)) != etag(before)


MTIME = 1700000000.5
TAG = '"abc-12"'


def http_date(timestamp):
    return email.utils.formatdate(timestamp, usegmt=True)


class TestNotModified:
    def test_no_conditional_headers(self):
        assert not not_modified({}, TAG, MTIME)

    def test_if_none_match_exact(self):
        assert not_modified({'if-none-match': TAG}, TAG, MTIME)

    def test_if_none_match_other(self):
        assert not not_modified({'if-none-match': '"other"'}, TAG, MTIME)

    def test_if_none_match_unquoted_does_not_match(self):
        assert not not_modified({'if-none-match': 'abc-12'}, TAG, MTIME)

    @pytest.mark.parametrize('value', [
        f'"x", {TAG}', f'{TAG},"y"', f'"x" , {TAG} , "z"', f' {TAG} '])
    def test_if_none_match_list(self, value):
        assert not_modified({'if-none-match': value}, TAG, MTIME)

    @pytest.mark.parametrize('value', [f'W/{TAG}', f'"x", W/{TAG}'])
    def test_if_none_match_weak(self, value):
        assert not_modified({'if-none-match': value}, TAG, MTIME)

    @pytest.mark.parametrize('value', ['*', ' * '])
    def test_if_none_match_star(self, value):
        assert not_modified({'if-none-match': value}, TAG, MTIME)

    def test_if_none_match_wins_over_if_modified_since(self):
        headers = {'if-none-match': '"other"',
                   'if-modified-since': http_date(MTIME + 3600)}
        assert not not_modified(headers, TAG, MTIME)
        headers = {'if-none-match': TAG,
                   'if-modified-since': http_date(MTIME - 3600)}
        assert not_modified(headers, TAG, MTIME)

    def test_if_modified_since_newer_or_equal(self):
        assert not_modified({'if-modified-since': http_date(MTIME + 3600)},
                            TAG, MTIME)
        # HTTP dates have whole seconds: the same second counts as current
        assert not_modified({'if-modified-since': http_date(int(MTIME))},
                            TAG, MTIME)

    def test_if_modified_since_older(self):
        assert not not_modified({'if-modified-since': http_date(MTIME - 1)},
                                TAG, MTIME)
        assert not not_modified({'if-modified-since': http_date(0)},
                                TAG, MTIME)

    @pytest.mark.parametrize('value', [
        'garbage', 'Mon, 99 Foo 2020', '', '2023-11-14', '12345'])
    def test_if_modified_since_garbage(self, value):
        assert not not_modified({'if-modified-since': value}, TAG, MTIME)



@pytest.mark.parametrize('rest, real, target, expected', [
    ('/sub', '/www/sub/index.html', '/static/sub', '/static/sub/'),
    ('/sub', '/www/sub/index.html', '/static/sub?a=1', '/static/sub/?a=1'),
    ('', '/www/index.html', '/static', '/static/'),
    ('/sub/', '/www/sub/index.html', '/static/sub/', None),
    ('/sub/index.html', '/www/sub/index.html', '/static/sub/index.html', None),
    ('/a.txt', '/www/a.txt', '/static/a.txt', None),
    # never another host: '//sub/' is a browser's http://sub/
    ('//sub', '/www/sub/index.html', '//sub', '/sub/'),
    ('///sub', '/www/sub/index.html', '///sub?a=1', '/sub/?a=1'),
    ('/sub', '/www/sub/index.html', 'http://evil.example/sub', '/sub/'),
    ('', '/www/index.html', 'http://evil.example', '/'),
])
def test_a_directory_named_without_its_slash_is_sent_to_it(rest, real, target,
                                                           expected):
    from uhttp.workers import static
    assert static.directory_location(rest, real, target) == expected
