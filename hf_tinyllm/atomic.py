"""Write a folder or a file under a temporary name and rename it into place, so that an interrupted save never
leaves a half-written folder or file where a good one was."""

import ctypes
import errno
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .faults import crash_point

OLD_PREFIX = ".{name}.old-"


@contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block succeeds, it replaces `path`.

    If the block raises (or the process dies), `path` keeps its previous contents and the temporary folder is
    removed (or, after a hard kill, left as a hidden `.NAME.tmp-*` sibling that the next save ignores).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another output path or remove the file.")
    path.parent.mkdir(parents=True, exist_ok=True)
    restore_interrupted(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, path)


def replace_directory(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst`, replacing any folder there, so that `dst` is never missing: one atomic exchange
    (Linux `renameat2(RENAME_EXCHANGE)`) where the OS offers it; elsewhere two renames, and a kill between them
    leaves the old folder in a hidden `.NAME.old-*` sibling that the next replace (or `restore_interrupted`) puts
    back first."""
    restore_interrupted(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    if _exchange(src, dst):  # dst now holds the new folder, src the old one
        crash_point("replace-exchanged")
        shutil.rmtree(src, ignore_errors=True)
        return
    old = dst.with_name(f"{OLD_PREFIX.format(name=dst.name)}{uuid.uuid4().hex[:8]}")
    os.replace(dst, old)
    crash_point("replace-moved-old-away")
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def restore_interrupted(dst: Path) -> None:
    """Put back the folder an interrupted two-rename replace left in `.NAME.old-*` when `dst` is missing."""
    if dst.exists():
        return
    leftovers = sorted(dst.parent.glob(f"{OLD_PREFIX.format(name=dst.name)}*"), key=lambda p: p.stat().st_mtime)
    if leftovers:
        os.replace(leftovers[-1], dst)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with Linux `renameat2(RENAME_EXCHANGE)`; False where the OS or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:  # glibc < 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # kernel or filesystem without the flag
        return False
    raise OSError(error, os.strerror(error), str(a), None, str(b))


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write one file to; when the block succeeds, it replaces `path`; if it
    raises, `path` keeps its previous contents and the temporary file is removed."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file's path, e.g. {path / 'model.gguf'}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    # A fresh name rather than `mkstemp`, so that the file gets the usual permissions (mkstemp's are owner-only).
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


__all__ = ["atomic_directory", "atomic_file", "replace_directory", "restore_interrupted"]
