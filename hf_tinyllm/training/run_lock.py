"""One writer per run folder: a lock file naming the owner's host and pid, created atomically; a second run on the
same `output_dir` while the owner lives is refused, and a lock left by a dead process is taken over."""

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import UserError

logger = logging.getLogger(__name__)
LOCK_FILE = ".run.lock"


class RunFolderLockedError(UserError):
    """Another live process is writing the same run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _owner(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def run_folder_lock(output_dir: str | Path) -> Iterator[Path]:
    """Hold `output_dir/.run.lock` for the block. The lock of a process on another host is trusted as alive (its pid
    cannot be checked from here): remove the file by hand if that run is gone."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK_FILE
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)  # empty if unreadable: its creator died before writing it
            pid = owner.get("pid")
            stale = owner.get("host") == me["host"] and isinstance(pid, int) and not _alive(pid)
            if owner and not stale:
                where = f"pid {owner.get('pid')} on {owner.get('host')}"
                raise RunFolderLockedError(
                    f"{output_dir} is in use by another training run ({where}); wait for it to finish or choose "
                    f"another --output_dir. If that run is gone, delete {path}."
                ) from None
            logger.warning("Taking over %s, left by a process that is gone (%s).", path, owner or "unreadable")
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:  # pragma: no cover - another process took the stale lock between our unlink and create
        raise RunFolderLockedError(f"{output_dir} was locked by another run just now; choose another --output_dir.")
    try:
        yield path
    finally:
        if _owner(path).get("pid") == me["pid"]:
            path.unlink(missing_ok=True)


__all__ = ["LOCK_FILE", "RunFolderLockedError", "run_folder_lock"]
