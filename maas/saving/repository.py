"""The model repository: ``REPO/<model name>/<version>/model.maas``.

The layout TF Serving and Triton use: one folder per model, one sub-folder
per version, versions positive integers. A version folder is written under
a hidden temporary name beside its final place and renamed into place only
when complete, so a server scanning the repository never sees half a model.

>>> import tempfile, os
>>> repo = tempfile.mkdtemp()
>>> with _next_version_dir(repo, "digits") as v:
...     open(os.path.join(v.path, "model.maas"), "wb").close()
>>> v.version, list_versions(repo, "digits")
(1, [1])
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
from typing import Iterator

__all__ = ["list_versions", "version_path", "save_to_repository", "MODEL_FILENAME"]

MODEL_FILENAME = "model.maas"


def _check_name(name) -> str:
    if (not isinstance(name, str) or not name or name in (".", "..") or name.startswith(".")
            or "/" in name or "\\" in name or "\0" in name):
        raise ValueError(f"a model name must be a plain folder name (not empty, no '/' or '\\', "
                         f"not starting with '.'), received name={name!r}")
    return name


MAX_VERSION = 2 ** 63 - 1  # versions are int64 in TF Serving and Triton


def _check_version(version) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise ValueError(f"version must be a positive integer (at most 2**63-1), received "
                         f"version={version!r}")
    return version


def _is_version(s: str) -> bool:
    """A version folder's name: ASCII digits, no leading zero, at most 2**63-1
    (what maas.serving serves; '٣' or '03' are not versions)."""
    return 0 < len(s) <= 19 and s.isascii() and s.isdigit() and s[0] != "0" and int(s) <= MAX_VERSION


def list_versions(repo, name: str) -> list[int]:
    """The versions of model ``name`` in ``repo``, ascending ([] when none).

    Hidden folders (saves in progress) and anything not named by a positive
    integer are ignored.
    """
    folder = os.path.join(os.fspath(repo), _check_name(name))
    try:
        entries = os.scandir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    with entries:
        return sorted(int(e.name) for e in entries if _is_version(e.name) and e.is_dir())


def version_path(repo, name: str, version: int | None = None) -> str:
    """The path of ``model.maas`` of a version (the latest when None)."""
    versions = list_versions(repo, name)
    if version is None:
        if not versions:
            raise FileNotFoundError(f"no versions of model {name!r} in repository {os.fspath(repo)!r}")
        version = versions[-1]
    elif _check_version(version) not in versions:
        raise FileNotFoundError(f"model {name!r} has no version {version} in repository "
                                f"{os.fspath(repo)!r} (it has {versions or 'none'})")
    return os.path.join(os.fspath(repo), name, str(version), MODEL_FILENAME)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as e:  # some filesystems refuse fsync on a folder
        if e.errno not in (errno.EINVAL, errno.EROFS):
            raise
    finally:
        os.close(fd)


class _PendingVersion:
    """A version being written: write into ``path``; after the ``with``
    block, ``version`` and ``final`` say where it landed."""

    def __init__(self, path: str):
        self.path = path
        self.version: int | None = None
        self.final: str | None = None


@contextlib.contextmanager
def _next_version_dir(repo, name: str, version: int | None = None) -> Iterator[_PendingVersion]:
    """Yields a temporary folder inside ``REPO/name``; when the block ends
    without an exception, its files are flushed to disk and the folder is
    renamed to ``REPO/name/<version>`` (the next free version when None), so
    the version appears complete or not at all. On an exception the
    temporary folder is removed.
    """
    _check_name(name)
    if version is not None:
        _check_version(version)
    repo = os.fspath(repo)
    model_dir = os.path.join(repo, name)
    if not os.path.isdir(model_dir):
        os.makedirs(model_dir, exist_ok=True)
        _fsync_path(repo)
    if version is not None and os.path.lexists(os.path.join(model_dir, str(version))):
        raise FileExistsError(f"version {version} of model {name!r} already exists in {repo!r}")
    while True:  # mkdir (not mkdtemp) so the folder gets the umask's permissions
        tmp = os.path.join(model_dir, f".tmp-{os.getpid()}-{secrets.token_hex(6)}")
        try:
            os.mkdir(tmp)
            break
        except FileExistsError:
            continue
    pending = _PendingVersion(tmp)
    try:
        yield pending
        for root, dirs, files in os.walk(tmp):
            for f in files:
                _fsync_path(os.path.join(root, f))
            _fsync_path(root)
        while True:
            v = version if version is not None else max(list_versions(repo, name), default=0) + 1
            final = os.path.join(model_dir, str(v))
            try:
                # rename refuses a non-empty target: two writers cannot both win v
                os.rename(tmp, final)
            except OSError as e:
                if e.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
                if version is None:
                    continue
                raise FileExistsError(f"version {version} of model {name!r} already exists in "
                                      f"{repo!r}") from None
            break
        pending.version, pending.final = v, final
        _fsync_path(model_dir)
    except BaseException:
        if os.path.isdir(tmp):
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_to_repository(model, repo, name: str, version: int | None = None,
                       encryption_key=None) -> str:
    """Saves ``model`` (anything with ``save(path)``) as the next version of
    ``name`` in ``repo`` (or as ``version``), atomically; returns the path of
    the new ``model.maas``. An object whose class sets ``saves_to_folder``
    (a :class:`maas.applications.SentenceEncoder`: model.maas beside its
    tokenizer files) is saved with ``model.save(version_folder)``.

    ``encryption_key`` (32 bytes, hex or base64 text, or a
    :class:`maas.saving.Encryption`) encrypts the tensor data at rest, as
    ``model.save(path, encryption_key=...)`` does; ``maas serve
    --model-key-file`` serves such a version. The key is not read from the
    environment here: a save is encrypted only when asked.
    """
    with _next_version_dir(repo, name, version) as pending:
        if getattr(type(model), "saves_to_folder", False):
            if encryption_key is not None:
                raise ValueError(f"save_to_repository: {type(model).__name__} is saved as a "
                                 "folder with its tokenizer files; encryption_key covers "
                                 "single model files only")
            model.save(pending.path)
        else:
            path = os.path.join(pending.path, MODEL_FILENAME)
            if encryption_key is None:
                model.save(path)
            else:
                model.save(path, encryption_key=encryption_key)
    return os.path.join(pending.final, MODEL_FILENAME)
