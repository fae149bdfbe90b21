"""FileResponse: a handler's answer that is a file (sent by files.py)."""

import os as _os


class FileResponse:
    """A handler's answer that is a file: `path_or_file` is a path or an
    open binary file object (the response takes it over and closes it).

    `content_type` is guessed from the name when not given; `download_name`
    makes it an attachment (Content-Disposition); `headers` are added.
    """

    __slots__ = ('path_or_file', 'content_type', 'download_name', 'headers',
                 'status')

    def __init__(self, path_or_file, content_type=None, download_name=None,
                 headers=None, status=200):
        if not isinstance(path_or_file, (str, bytes, _os.PathLike)) and (
                not hasattr(path_or_file, 'fileno')
                and not hasattr(path_or_file, 'read')):
            raise TypeError(
                "FileResponse needs a path or a binary file object (with "
                f"fileno() or read()), not {type(path_or_file).__name__}")
        if download_name is not None and not isinstance(download_name, str):
            raise TypeError("FileResponse download_name must be a str or "
                            f"None, not {type(download_name).__name__}")
        self.path_or_file = path_or_file
        self.content_type = content_type
        self.download_name = download_name
        self.headers = headers
        self.status = status

    def name(self):
        """The file's name (for the content type), '' when unknown."""
        source = self.path_or_file
        if not isinstance(source, (str, bytes, _os.PathLike)):
            source = getattr(source, 'name', '')
            if not isinstance(source, (str, bytes, _os.PathLike)):
                return ''
        name = _os.fsdecode(_os.fspath(source))
        return name

    def __repr__(self):
        return f"FileResponse({self.path_or_file!r})"
