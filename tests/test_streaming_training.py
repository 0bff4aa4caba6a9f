"""Streaming training (`--streaming`) for real: text files read, tokenised and packed as training goes, under two
"machines" on 127.0.0.1 (as tests/test_shard_training.py) with two loader workers each, and in one process without
workers. The files are of uneven sizes, so one rank's shards run out long before the other's.

- no rank waits for another: a rank whose shards end starts its next epoch by itself;
- a run stopped and resumed (twice in one process) sees the uninterrupted run's batches on every rank and logs its
  losses bit for bit, each process (and worker) resuming from its own saved state;
- the blocks are the in-memory path's blocks of the same documents in the same order;
- what cannot resume exactly is refused with the way out: shards that do not divide over processes x workers, a
  resume with another worker count.
"""

import json
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import REPO_ROOT
from datasets import Dataset
from test_shard_training import losses, steps, two_machines

from hf_tinyllm.data import TinyWorldConfig, pack_dataset, tinyworld_dataset, tokenize_dataset
from hf_tinyllm.data.holdout import held_out
from hf_tinyllm.tokenization import load_tokenizer
from hf_tinyllm.training import DataArguments, parse_train_arguments, train
from hf_tinyllm.training.data import prepare_training_data

FILE_SIZES = (30, 6, 24, 8)  # documents per file: ranks get files {0, 2} and {1, 3}, 54 against 14 documents


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stream")
    texts = list(tinyworld_dataset(TinyWorldConfig(num_train_documents=sum(FILE_SIZES),
                                                   num_validation_documents=1))["train"]["text"])  # fmt: skip
    start = 0
    for number, size in enumerate(FILE_SIZES):
        rows = texts[start : start + size]
        (folder / f"part-{number}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
        start += size
    return folder


def arguments(corpus: Path, tokenizer_dir: str, output_dir: Path, max_steps: int, *extra: str) -> list[str]:
    return [
        "--dataset", str(corpus), "--streaming", "true", "--validation_fraction", "0.1", "--tokenizer",
        tokenizer_dir, "--preset", "debug", "--block_size", "16", "--per_device_batch_size", "2", "--max_steps",
        str(max_steps), "--warmup_steps", "2", "--logging_steps", "1", "--save_steps", "100", "--eval_documents", "2",
        "--report_to", "none", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def in_process(args: list[str], log: Path) -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from shard_training_run import BatchLog

    try:
        train(*parse_train_arguments(args), hooks=[BatchLog(f"{log}.rank0.jsonl")])
    finally:
        sys.path.remove(str(REPO_ROOT / "tests"))


def test_the_stream_packs_the_documents_as_the_in_memory_path(corpus, tokenizer_dir, tmp_path):
    args = DataArguments(dataset=str(corpus), streaming=True, tokenizer=tokenizer_dir, block_size=16,
                         validation_fraction=0.1)  # fmt: skip
    data = prepare_training_data(args, lambda: torch.no_grad(), tmp_path, seed=0)
    texts = [json.loads(line)["text"] for f in sorted(corpus.glob("*.jsonl")) for line in f.read_text().splitlines()]
    kept = [t for t in texts if not held_out(t, 0, 0.1)]
    assert len(texts) - len(kept) > 0 and sorted(data.validation_documents["text"]) == sorted(set(texts) - set(kept))
    reference = pack_dataset(tokenize_dataset(Dataset.from_dict({"text": kept}), load_tokenizer(tokenizer_dir)), 16,
                             document_positions=True, bos_token_id=data.tokenizer.bos_token_id)  # fmt: skip
    stream = iter(data.train_blocks.for_process(0, 1))
    for expected in reference:
        block = next(stream)
        assert block["input_ids"].tolist() == expected["input_ids"]
        assert block["position_ids"].tolist() == expected["position_ids"]
    next(stream)  # the second epoch follows the first: the stream never ends


def test_two_machines_with_uneven_shards_resume_to_the_uninterrupted_batches(corpus, tokenizer_dir, tmp_path):
    total = 24  # rank 1's 14 documents fill about 10 batches of 2 blocks: it is in its third epoch by then
    whole = tmp_path / "whole"
    two_machines(arguments(corpus, tokenizer_dir, whole / "run", total, "--dataloader_num_workers", "2"),
                 whole / "log")  # fmt: skip
    parts = tmp_path / "parts"
    for stop, resume in ((13, False), (None, True)):  # rank 1 stops in its second epoch, mid-file
        extra = ["--dataloader_num_workers", "2"] + (["--stop_after_steps", str(stop)] if stop else [])
        extra += ["--resume_from_checkpoint", "latest"] if resume else []
        two_machines(arguments(corpus, tokenizer_dir, parts / "run", total, *extra), parts / "log")
    for rank in range(2):
        assert len(steps(whole / "log", rank)) == total
        assert steps(parts / "log", rank) == steps(whole / "log", rank)
    assert steps(whole / "log", 0) != steps(whole / "log", 1)
    assert losses(parts / "run") == losses(whole / "run")
    states = [torch.load(parts / "run/checkpoints/checkpoint-13" / f"loader_state_{r}.pt") for r in range(2)]
    assert states[0] != states[1]  # each process saved its own position


def test_one_process_without_workers_resumes_exactly_and_refuses_another_worker_count(corpus, tokenizer_dir,
                                                                                       tmp_path):  # fmt: skip
    total = 40  # about two and a half epochs of all four files
    in_process(arguments(corpus, tokenizer_dir, tmp_path / "whole", total), tmp_path / "whole-log")
    in_process(arguments(corpus, tokenizer_dir, tmp_path / "parts", total, "--stop_after_steps", "17"),
               tmp_path / "parts-log")  # fmt: skip
    for stop in ("30", "40"):
        in_process(arguments(corpus, tokenizer_dir, tmp_path / "parts", total, "--resume_from_checkpoint", "latest",
                             "--stop_after_steps", stop), tmp_path / "parts-log")  # fmt: skip
    assert steps(tmp_path / "parts-log", 0) == steps(tmp_path / "whole-log", 0)
    assert losses(tmp_path / "parts") == losses(tmp_path / "whole")
    blocks = [b for step in steps(tmp_path / "whole-log", 0) for b in step]
    assert len(set(blocks)) < len(blocks)  # it went round the data more than once
    with pytest.raises(ValueError, match=r"sampler.dataloader_num_workers: checkpoint 0, now 2"):
        in_process(arguments(corpus, tokenizer_dir, tmp_path / "parts", total + 4, "--resume_from_checkpoint",
                             "latest", "--dataloader_num_workers", "2"), tmp_path / "other-log")  # fmt: skip


def test_shards_that_do_not_divide_over_the_readers_are_refused(corpus, tokenizer_dir, tmp_path):
    with pytest.raises(ValueError, match=r"4 shard\(s\) \(files\), which do not divide over 1 process\(es\) x 3"):
        in_process(arguments(corpus, tokenizer_dir, tmp_path / "run", 4, "--dataloader_num_workers", "3"),
                   tmp_path / "log")  # fmt: skip
