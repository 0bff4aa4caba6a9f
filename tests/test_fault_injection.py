"""Fault injection on the training loop: kill -9 at named and seeded random moments (inside a checkpoint write,
inside the final model save, mid-training), resuming with `latest` each time, ends with the uninterrupted run's
weights bit for bit, and no reader ever finds a half-written checkpoint or model folder. Damaged checkpoints are
detected by their manifest and skipped; a resume with other settings is refused with the differing fields."""

import io
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_tinyllm.faults import CRASH_ENV
from hf_tinyllm.training import parse_train_arguments, train
from hf_tinyllm.training.checkpoint import checkpoints, resolve_checkpoint
from hf_tinyllm.training.manifest import MANIFEST, checkpoint_damage
from hf_tinyllm.training.run_lock import LOCK_FILE


def run_args(output_dir, tokenizer_dir, *extra: str) -> list[str]:
    """12 steps, a checkpoint every 3 (all four kept)."""
    return [
        "--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "600", "--block_size", "32",
        "--per_device_batch_size", "4", "--max_steps", "12", "--warmup_steps", "2", "--save_steps", "3",
        "--save_total_limit", "4", "--eval_steps", "0", "--eval_documents", "5", "--logging_steps", "1",
        "--report_to", "none", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def run_in_process(argv: list[str]) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)
    return train(*parse_train_arguments(argv))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tokenizer_dir):
    """The uninterrupted run: its folder (checkpoints 3, 6, 9, 12) and final weights."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_in_process(run_args(out, tokenizer_dir))
    return out, load_file(out / "model" / "model.safetensors")


def assert_nothing_half_written(out):
    for path in checkpoints(out):
        assert checkpoint_damage(path) is None, path
    if (out / "model").exists():  # a model folder is either absent or whole
        AutoModelForCausalLM.from_pretrained(out / "model")
        assert (out / "model" / "training_summary.json").is_file()


class ForkedRun:
    """`scripts/train.py ARGV` in a forked child of this process: a real process that a crash point or the test can
    kill -9, without the 5 s of imports of a fresh interpreter. Popen's interface, as far as the test uses it; the
    child's output (stdout, stderr and log records) comes through `stdout`, a text pipe."""

    def __init__(self, argv: list[str], crash_at: str | None) -> None:
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: never returns into pytest
            code = 1
            try:
                os.close(read)
                os.dup2(write, 1)
                os.dup2(write, 2)
                sys.stdout = sys.stderr = io.TextIOWrapper(os.fdopen(write, "wb"), line_buffering=True)
                logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
                torch.set_num_threads(1)  # the parent's OpenMP pool does not survive a fork: using it would hang
                os.environ.pop(CRASH_ENV, None)
                if crash_at:
                    os.environ[CRASH_ENV] = crash_at
                run_in_process(argv)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                os._exit(code)
        os.close(write)
        self.stdout = os.fdopen(read, "r")
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.returncode

    def wait(self, timeout: float) -> int:
        deadline = time.time() + timeout
        while self.poll() is None:
            if time.time() > deadline:
                self.kill()
                raise subprocess.TimeoutExpired(f"fork {self.pid}", timeout)
            time.sleep(0.05)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def communicate(self, timeout: float) -> tuple[str, None]:
        chunks: list[str] = []
        reader = threading.Thread(target=lambda: chunks.append(self.stdout.read()), daemon=True)
        reader.start()  # drained while the child runs: a full pipe would block it
        self.wait(timeout)
        reader.join(30)
        return "".join(chunks), None


def launch(out, tokenizer_dir, *, resume: bool, crash_at: str | None = None) -> ForkedRun:
    extra = ["--resume_from_checkpoint", "latest"] if resume else []
    return ForkedRun(run_args(out, tokenizer_dir, *extra), crash_at)


def test_kill_9_at_any_moment_then_resume_gives_the_uninterrupted_weights(reference, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    rng = random.Random(0)

    # 1. Killed inside the second checkpoint write (after save_state and the manifest, before the rename).
    process = launch(out, tokenizer_dir, resume=False, crash_at="checkpoint-written:2")
    assert process.wait(timeout=300) == -signal.SIGKILL, process.stdout.read()[-3000:]
    assert [p.name for p in checkpoints(out)] == ["checkpoint-3"]
    assert (out / "checkpoints" / ".checkpoint-6.tmp" / MANIFEST).is_file()  # written, never published
    assert (out / LOCK_FILE).exists()  # left behind by the dead process
    assert_nothing_half_written(out)

    # 2. Killed at a seeded random moment after resuming (training, a checkpoint or the final save).
    process = launch(out, tokenizer_dir, resume=True)
    for line in process.stdout:
        if line.startswith("Resumed from"):
            break
    time.sleep(rng.uniform(0.05, 1.0))
    process.kill()
    process.wait(timeout=60)
    assert_nothing_half_written(out)

    # 3. Killed inside the final model save (the model folder's files written, not yet renamed into place).
    model_before = sorted(p.name for p in (out / "model").iterdir()) if (out / "model").exists() else None
    process = launch(out, tokenizer_dir, resume=True, crash_at="final-model-written")
    assert process.wait(timeout=300) == -signal.SIGKILL, process.stdout.read()[-3000:]
    assert_nothing_half_written(out)
    after = sorted(p.name for p in (out / "model").iterdir()) if (out / "model").exists() else None
    assert after == model_before  # the save that died replaced nothing

    # 4. The last resume finishes; the weights are the uninterrupted run's, bit for bit.
    process = launch(out, tokenizer_dir, resume=True)
    log = process.communicate(timeout=300)[0]
    assert process.returncode == 0, log[-3000:]
    assert "Taking over" in log or "Resumed from" in log
    final = load_file(out / "model" / "model.safetensors")
    _, expected = reference
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(final[name], tensor), name
    assert not (out / LOCK_FILE).exists()


def damage(checkpoint, how: str) -> str:
    """Damage `checkpoint` one way; return the file a message must name."""
    if how == "truncated weights":
        path = checkpoint / "model.safetensors"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "model.safetensors"
    if how == "missing optimizer":
        (checkpoint / "optimizer.bin").unlink()
        return "optimizer.bin"
    (checkpoint / MANIFEST).write_text("{not json")
    return MANIFEST


@pytest.mark.parametrize("how", ["truncated weights", "missing optimizer", "garbage manifest"])
def test_a_damaged_newest_checkpoint_is_skipped_and_named(reference, tmp_path, how, caplog):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    named = damage(out / "checkpoints" / "checkpoint-12", how)
    assert resolve_checkpoint("latest", out) == out / "checkpoints" / "checkpoint-9"
    assert "damaged checkpoint" in caplog.text and "checkpoint-12" in caplog.text and named in caplog.text
    with pytest.raises(ValueError, match=rf"The checkpoint .*checkpoint-12 is damaged: .*{named}"):
        resolve_checkpoint(str(out / "checkpoints" / "checkpoint-12"), out)


def test_resuming_past_a_damaged_checkpoint_finishes_with_the_same_weights(reference, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    shutil.rmtree(out / "model")
    damage(out / "checkpoints" / "checkpoint-12", "truncated weights")
    damage(out / "checkpoints" / "checkpoint-9", "missing optimizer")
    summary = run_in_process(run_args(out, tokenizer_dir, "--resume_from_checkpoint", "latest"))
    assert summary["finished"] and summary["steps"] == 12
    final = load_file(out / "model" / "model.safetensors")
    for name, tensor in reference[1].items():
        assert torch.equal(final[name], tensor), name


def test_resuming_with_other_settings_lists_the_differences(reference, tokenizer_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(reference[0], out)
    argv = run_args(out, tokenizer_dir, "--resume_from_checkpoint", "latest", "--block_size", "16",
                    "--model_overrides", '{"num_hidden_layers": 3}')  # fmt: skip
    with pytest.raises(ValueError) as info:
        run_in_process(argv)
    message = str(info.value)
    assert "other model or data settings" in message
    assert "data.block_size: checkpoint 32, now 16" in message
    assert "model.num_hidden_layers: checkpoint 2, now 3" in message
