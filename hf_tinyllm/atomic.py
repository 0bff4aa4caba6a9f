"""Write a folder or a file under a temporary name and rename it into place, so that an interrupted save never
leaves a half-written folder or file where a good one was."""

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_directory(tmp, path)


def replace_directory(src: Path, dst: Path) -> None:
    """Move folder `src` to `dst`, replacing any folder there; each step is a rename on one filesystem."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(dst, old)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


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


__all__ = ["atomic_directory", "atomic_file", "replace_directory"]
