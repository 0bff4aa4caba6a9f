"""Training on token shards for real: two "machines" on 127.0.0.1 (two `accelerate launch` with machine ranks 0
and 1 and the shipped configs/accelerate/multi_node_cpu.yaml, gloo, one process each) with loader workers 0 and 2,
and the Trainer. Every process's blocks are recorded per step (tests/shard_training_run.py) and identified by their
contents.

- each epoch the two ranks' blocks are disjoint and cover all blocks once, less the stated remainder; epochs
  reshuffle; the seed reproduces the order;
- a run stopped mid-epoch, resumed, stopped at the epoch boundary and resumed again (switching worker counts) sees
  exactly the uninterrupted run's batches, and logs its losses bit for bit;
- one process with the same global batch trains on the same blocks per step with the same losses (rel 1e-5: only
  the order of float sums differs, as in test_distributed_fsdp.py);
- the Trainer resumed mid-epoch sees the uninterrupted run's batches.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import REPO_ROOT, cli_user_error

from hf_tinyllm.data import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.data.shard_writer import write_token_shards
from hf_tinyllm.data.shards import TokenBlocks, TokenShards
from hf_tinyllm.tokenization import load_tokenizer, save_tokenizer, train_tokenizer
from hf_tinyllm.training import parse_train_arguments, train
from hf_tinyllm.training.sampler import EpochSampler

BLOCK, BATCH, RANKS = 16, 2, 2


def digest(input_ids) -> str:
    return hashlib.sha256(torch.as_tensor(input_ids).cpu().numpy().tobytes()).hexdigest()[:16]


@pytest.fixture(scope="module")
def shards(tokenizer_dir, tmp_path_factory) -> Path:
    """About 40 blocks of 16 tokens: a dozen steps of 2 ranks x 2 blocks is three epochs."""
    folder = tmp_path_factory.mktemp("corpus")
    world = tinyworld_dataset(TinyWorldConfig(num_train_documents=26, num_validation_documents=4))
    world["train"].select_columns(["text"]).to_json(folder / "train.jsonl", lines=True)
    world["validation"].select_columns(["text"]).to_json(folder / "validation.jsonl", lines=True)
    out = folder / "shards"
    write_token_shards(folder / "train.jsonl", out, load_tokenizer(tokenizer_dir), tokenizer_dir,
                       validation_fraction=0.15, shard_tokens=200, progress_bar=False)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def blocks(shards) -> dict[str, int]:
    """Each training block's digest -> its index (the corpus is chosen so that no two blocks are equal)."""
    data = TokenBlocks(TokenShards(shards, "train"), BLOCK)
    found = {digest(data[i]["input_ids"]): i for i in range(len(data))}
    assert len(found) == len(data)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def arguments(shards: Path, tokenizer_dir: str, output_dir: Path, batch: int, max_steps: int, *extra: str):
    return [
        "--dataset", str(shards), "--tokenizer", tokenizer_dir, "--preset", "debug", "--block_size", str(BLOCK),
        "--per_device_batch_size", str(batch), "--max_steps", str(max_steps), "--warmup_steps", "2",
        "--logging_steps", "1", "--save_steps", "100", "--eval_documents", "2", "--report_to", "none",
        "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def two_machines(args: list[str], log: Path) -> None:
    """Machine ranks 0 and 1 as two launchers on 127.0.0.1, like two nodes."""
    port = str(free_port())
    config = str(REPO_ROOT / "configs/accelerate/multi_node_cpu.yaml")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "BATCH_LOG": str(log)}
    launchers = []
    for rank in range(2):
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config, "--machine_rank",
                   str(rank), "--main_process_port", port, "tests/shard_training_run.py", *args]  # fmt: skip
        launchers.append(subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True, env=env))  # fmt: skip
    outcomes = [launcher.communicate(timeout=600) for launcher in launchers]
    for launcher, (_, stderr) in zip(launchers, outcomes, strict=True):
        assert launcher.returncode == 0, stderr[-4000:]


def steps(log: Path, rank: int) -> list[list[str]]:
    rows = [json.loads(line) for line in Path(f"{log}.rank{rank}.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["blocks"] for r in rows]


def losses(output_dir: Path) -> list[float]:
    rows = map(json.loads, (output_dir / "logs" / "metrics.jsonl").read_text().splitlines())
    return [row["loss"] for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def uninterrupted(shards, tokenizer_dir, blocks, tmp_path_factory) -> tuple[Path, Path, int, int]:
    """Two machines, two loader workers each, two and a half epochs."""
    per_epoch = EpochSampler(len(blocks), BATCH, RANKS).batches_per_epoch
    total = 2 * per_epoch + per_epoch // 2
    out = tmp_path_factory.mktemp("uninterrupted")
    two_machines(arguments(shards, tokenizer_dir, out / "run", BATCH, total, "--dataloader_num_workers", "2"),
                 out / "log")  # fmt: skip
    return out / "run", out / "log", per_epoch, total


def test_epoch_sampler_deals_disjoint_equal_shares_and_starts_anywhere():
    samplers = [EpochSampler(43, 2, num_replicas=2, rank=r, seed=5) for r in range(2)]
    assert samplers[0].batches_per_epoch == 10 and samplers[0].dropped_per_epoch == 3
    for epoch in range(3):
        shares = []
        for sampler in samplers:
            sampler.set_position(epoch, 0)
            shares.append(list(sampler))
        assert len(shares[0]) == len(shares[1]) == 20 and not set(shares[0]) & set(shares[1])
        assert set(shares[0]) | set(shares[1]) == set(samplers[0].epoch_order(epoch).tolist())
        for k in (3, 10):
            samplers[1].set_position(epoch, k)
            assert list(samplers[1]) == shares[1][k * 2 :] and len(samplers[1]) == len(shares[1]) - k * 2
    assert samplers[0].epoch_order(0).tolist() != samplers[0].epoch_order(1).tolist()
    assert EpochSampler(43, 2, 2, 0, seed=5).epoch_order(1).tolist() == samplers[0].epoch_order(1).tolist()
    assert EpochSampler(43, 2, 2, 0, seed=6).epoch_order(1).tolist() != samplers[0].epoch_order(1).tolist()


def test_two_machines_cover_every_epoch_once_and_reshuffle(uninterrupted, blocks):
    _, log, per_epoch, total = uninterrupted
    ranks = [steps(log, rank) for rank in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == total
    orders = []
    for epoch in range(2):
        window = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        mine = [[blocks[d] for step in rank[window] for d in step] for rank in ranks]
        assert not set(mine[0]) & set(mine[1])  # disjoint
        seen = mine[0] + mine[1]
        assert len(seen) == len(set(seen)) == len(blocks) - EpochSampler(len(blocks), BATCH, RANKS).dropped_per_epoch
        orders.append(mine[0])
    assert orders[0] != orders[1]


def test_a_twice_resumed_run_sees_the_uninterrupted_batches(uninterrupted, shards, tokenizer_dir, tmp_path):
    """Stopped mid-epoch (workers 0), resumed and stopped at the epoch's end (workers 2), resumed to the end (0)."""
    run, log, per_epoch, total = uninterrupted
    for stop, workers in ((per_epoch // 2, "0"), (per_epoch, "2"), (None, "0")):
        extra = ["--dataloader_num_workers", workers, "--resume_from_checkpoint", "latest"]
        if stop is not None:
            extra += ["--stop_after_steps", str(stop)]
        if stop == per_epoch // 2:
            extra = extra[:2] + extra[4:]  # the first segment starts fresh
        two_machines(arguments(shards, tokenizer_dir, tmp_path / "run", BATCH, total, *extra), tmp_path / "log")
    for rank in range(2):
        assert steps(tmp_path / "log", rank) == steps(log, rank)
    assert losses(tmp_path / "run") == losses(run)


def test_one_process_with_the_global_batch_trains_on_the_same_blocks(uninterrupted, shards, tokenizer_dir,
                                                                     tmp_path):  # fmt: skip
    run, log, _, total = uninterrupted
    AcceleratorState._reset_state(reset_partial_state=True)
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from shard_training_run import BatchLog

    try:
        train(*parse_train_arguments(arguments(shards, tokenizer_dir, tmp_path / "run", BATCH * RANKS, total)),
              hooks=[BatchLog(str(tmp_path / "log.rank0.jsonl"))])  # fmt: skip
    finally:
        sys.path.remove(str(REPO_ROOT / "tests"))
    one = steps(tmp_path / "log", 0)
    two = [steps(log, rank) for rank in range(2)]
    assert [sorted(step) for step in one] == [sorted(a + b) for a, b in zip(*two, strict=True)]
    assert losses(tmp_path / "run") == pytest.approx(losses(run), rel=1e-5)
    # The two machines' checkpoint names its processes: one process may not resume it (its blocks would differ).
    AcceleratorState._reset_state(reset_partial_state=True)
    with pytest.raises(ValueError, match=r"sampler.processes: checkpoint 2, now 1"):
        train(*parse_train_arguments(arguments(shards, tokenizer_dir, run, BATCH * RANKS, total + 2,
                                               "--per_device_batch_size", str(BATCH),
                                               "--resume_from_checkpoint", "latest")))  # fmt: skip


def test_shards_need_the_tokenizer_they_were_written_with(shards, tmp_path, capsys):
    world = tinyworld_dataset(TinyWorldConfig(num_train_documents=50, num_validation_documents=1))
    other = str(save_tokenizer(train_tokenizer(world["train"], vocab_size=290), tmp_path / "other"))
    base = ["train", "--dataset", str(shards), "--preset", "debug", "--max_steps", "1", "--output_dir",
            str(tmp_path / "run"), "--report_to", "none"]  # fmt: skip
    message = cli_user_error([*base, "--tokenizer", other], capsys)
    assert "was tokenised with another tokenizer" in message and "--tokenizer" in message
    message = cli_user_error(base, capsys)
    assert "holds token shards: pass --tokenizer" in message


def two_process_trainer(args: list[str], log: Path) -> None:
    """The Trainer on two processes (gloo), launched as any run: configs/accelerate/cpu_2proc.yaml."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO_ROOT / "configs/accelerate/cpu_2proc.yaml"), "--main_process_port", str(free_port()),
               "tests/trainer_batch_run.py", *args]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "BATCH_LOG": str(log)}
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


def test_the_trainer_on_two_ranks_covers_the_blocks_and_resumes_mid_epoch(shards, tokenizer_dir, blocks, tmp_path):
    """The Trainer's own sampler, sharded once by Accelerate: each epoch's blocks over both ranks cover the corpus,
    and a run stopped mid-epoch and resumed sees the uninterrupted run's batches on each rank."""
    per_epoch = len(blocks) // (RANKS * BATCH)
    total, stop = per_epoch + per_epoch // 2 + 1, per_epoch // 2

    def run(output_dir: Path, max_steps: int, log: Path, *extra: str) -> None:
        two_process_trainer([
            "--dataset", str(shards), "--tokenizer", tokenizer_dir, "--preset", "debug", "--block_size", str(BLOCK),
            "--per_device_train_batch_size", str(BATCH), "--max_steps", str(max_steps), "--save_steps", str(stop),
            "--eval_strategy", "no", "--report_to", "none", "--output_dir", str(output_dir), "--seed", "3",
            "--dataloader_pin_memory", "false", "--dataloader_drop_last", "true", "--use_cpu", *extra,
        ], log)  # fmt: skip

    run(tmp_path / "whole", total, tmp_path / "whole-log")
    run(tmp_path / "parts", stop, tmp_path / "parts-log")
    run(tmp_path / "parts", total, tmp_path / "parts-log", "--resume_from_checkpoint",
        str(tmp_path / "parts" / f"checkpoint-{stop}"))  # fmt: skip
    ranks = []
    for rank in range(RANKS):
        rows = [json.loads(line)["blocks"] for line in Path(f"{tmp_path}/whole-log.rank{rank}.jsonl").read_text()
                .splitlines()]  # fmt: skip
        resumed = [json.loads(line)["blocks"] for line in Path(f"{tmp_path}/parts-log.rank{rank}.jsonl").read_text()
                   .splitlines()]  # fmt: skip
        assert len(rows) == total and resumed == rows
        ranks.append(rows)
    first_epoch = [blocks[d] for rank in ranks for step in rank[:per_epoch] for d in step]
    assert len(set(first_epoch)) == len(first_epoch) == per_epoch * RANKS * BATCH  # disjoint, less the remainder
    assert ranks[0][0] != ranks[0][per_epoch]  # the second epoch is another order


def test_the_trainer_launched_on_several_cpu_processes_without_use_cpu_is_refused(tmp_path, monkeypatch, capsys):
    """Without --use_cpu, transformers' TrainingArguments leaves processes launched on a CPU machine apart (world
    size 1 each): every process would train on every batch. The run says so instead."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    message = cli_user_error(["train-trainer", "--output_dir", str(tmp_path), "--max_steps", "1"], capsys)
    assert "launched as 2 processes" in message and "--use_cpu" in message
