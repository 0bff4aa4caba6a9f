"""One writer per run folder: a live owner's lock refuses a second run; a dead owner's lock is taken over."""

import json
import os
import socket
import subprocess
import sys

import pytest

from hf_tinyllm.training.run_lock import LOCK_FILE, RunFolderLockedError, run_folder_lock


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_writer_is_refused_while_the_first_lives(tmp_path):
    with run_folder_lock(tmp_path) as lock:
        owner = json.loads(lock.read_text())
        assert (owner["pid"], owner["host"]) == (os.getpid(), socket.gethostname())
        refused = pytest.raises(RunFolderLockedError, match=r"in use by another training run \(pid \d+ on .*\); wait")
        with refused, run_folder_lock(tmp_path):
            pass
        assert lock.exists()  # the refused run did not take the owner's lock away
    assert not (tmp_path / LOCK_FILE).exists()  # released at the end


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid()}))
    with run_folder_lock(tmp_path) as lock:
        assert "Taking over" in caplog.text
        assert json.loads(lock.read_text())["pid"] != 0
    (tmp_path / LOCK_FILE).write_text("")  # its creator died before writing it
    with run_folder_lock(tmp_path):
        pass


def test_a_lock_held_on_another_host_is_respected(tmp_path):
    (tmp_path / LOCK_FILE).write_text(json.dumps({"host": "elsewhere", "pid": dead_pid()}))
    with pytest.raises(RunFolderLockedError, match="on elsewhere"), run_folder_lock(tmp_path):
        pass
