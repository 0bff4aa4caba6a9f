"""`tinyllm tokenize` and the token shards it writes: the blocks training reads from them are `pack_dataset`'s
blocks, the output is byte-identical whatever the worker count or interruptions (a SIGKILL at any file), and bad
input, a used folder or another tokenizer each get one error line."""

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO_ROOT, cli_user_error

from hf_tinyllm.data import TinyWorldConfig, pack_dataset, tinyworld_dataset, tokenize_dataset
from hf_tinyllm.data.holdout import HOLDOUT_RULE, held_out
from hf_tinyllm.data.packing import DataCollatorForCausalLM, document_position_ids, documents_per_block
from hf_tinyllm.data.shard_writer import write_token_shards
from hf_tinyllm.data.shards import TokenBlocks, TokenShards, read_manifest, token_dtype
from hf_tinyllm.faults import CRASH_ENV
from hf_tinyllm.tokenization import load_tokenizer
from hf_tinyllm.training import DataArguments
from hf_tinyllm.training.data import prepare_training_data

SHARD_TOKENS = 2000  # a few files for a 300-document corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """300 TinyWorld documents as one JSON Lines file (no validation split: the writer holds one out)."""
    folder = tmp_path_factory.mktemp("corpus")
    world = tinyworld_dataset(TinyWorldConfig(num_train_documents=300, num_validation_documents=1))
    world["train"].select_columns(["text"]).to_json(folder / "train.jsonl", lines=True)
    return folder / "train.jsonl"


@pytest.fixture(scope="module")
def shards(corpus, tokenizer_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards") / "out"
    write_token_shards(corpus, out, load_tokenizer(tokenizer_dir), tokenizer_dir, validation_fraction=0.1,
                       shard_tokens=SHARD_TOKENS, progress_bar=False)  # fmt: skip
    return out


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_format_is_datatrove_layout_with_a_manifest(shards, tokenizer_dir):
    manifest = read_manifest(shards)
    tokenizer = load_tokenizer(tokenizer_dir)
    assert manifest["dtype"] == "<u2" and token_dtype(65536) == np.dtype("<u2") and token_dtype(65537).itemsize == 4
    train = manifest["splits"]["train"]
    assert len(train["shards"]) >= 3 and all(s["tokens"] >= SHARD_TOKENS for s in train["shards"][:-1])
    assert manifest["splits"]["validation"]["documents"] > 0
    assert train["documents"] + manifest["splits"]["validation"]["documents"] == 300
    for shard in train["shards"]:
        tokens = np.fromfile(shards / shard["file"], dtype="<u2")  # 2 bytes a token, nothing else
        ends = np.fromfile(shards / (shard["file"] + ".index"), dtype="<u8")
        assert len(tokens) == shard["tokens"] == ends[-1] and len(ends) == shard["documents"]
        starts = np.concatenate([np.zeros(1, ends.dtype), ends[:-1]])
        assert (tokens[starts] == tokenizer.bos_token_id).all() and (tokens[ends - 1] == tokenizer.eos_token_id).all()
        assert (shards / (shard["file"] + ".metadata")).read_text().splitlines()[:2] == [
            tokenizer_dir,
            str(shard["tokens"]),
        ]
    assert not (shards / ".progress.json").exists()


def test_blocks_from_shards_are_the_blocks_pack_dataset_cuts(shards, corpus, tokenizer_dir):
    """The same documents in the same order through the Arrow path give the same blocks and positions; positions
    come from the index and restart at every document (documents stay apart)."""
    from hf_tinyllm.data import load_text_dataset

    tokenizer = load_tokenizer(tokenizer_dir)
    shard_docs = TokenShards(shards, "train")
    texts = [tokenizer.decode(shard_docs.document(i)[1:-1]) for i in range(shard_docs.num_documents)]
    originals = set(load_text_dataset(corpus)["text"])
    assert set(texts) <= originals and len(texts) == shard_docs.num_documents  # decoded back exactly
    from datasets import Dataset

    reference = pack_dataset(tokenize_dataset(Dataset.from_dict({"text": texts}), tokenizer), 32,
                             document_positions=True, bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    blocks = TokenBlocks(shard_docs, 32)
    assert len(blocks) == len(reference)
    for i in range(len(blocks)):
        assert blocks[i]["input_ids"].tolist() == reference[i]["input_ids"]
        assert blocks[i]["position_ids"].tolist() == reference[i]["position_ids"]
        bos_rule = document_position_ids(blocks[i]["input_ids"], tokenizer.bos_token_id)
        assert (bos_rule[blocks[i]["input_ids"] == tokenizer.bos_token_id] == 0).all()
    assert documents_per_block(blocks) == documents_per_block(reference) > 1
    flat = DataCollatorForCausalLM(0, flatten=True)([blocks[i] for i in range(4)])
    assert flat["cu_seq_lens_q"].tolist() == DataCollatorForCausalLM(0, flatten=True)(
        [reference[i] for i in range(4)])["cu_seq_lens_q"].tolist()  # fmt: skip


def test_the_hold_out_is_the_streaming_rule_and_copies_of_a_document_stay_on_one_side(corpus, tokenizer_dir, tmp_path):
    """Token shards and `--streaming` of the same source, seed and fraction hold out the same documents (one rule:
    `held_out` of each text), and a document that appears twice is never in training and validation at once."""
    lines = corpus.read_text().splitlines()
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text("\n".join(lines + lines[:60]) + "\n")  # the first 60 documents twice
    texts = [json.loads(line)["text"] for line in lines + lines[:60]]
    write_token_shards(doubled, tmp_path / "shards", load_tokenizer(tokenizer_dir), tokenizer_dir,
                       validation_fraction=0.1, seed=3, shard_tokens=SHARD_TOKENS, progress_bar=False)  # fmt: skip
    manifest = read_manifest(tmp_path / "shards")
    assert manifest["holdout"] == HOLDOUT_RULE and manifest["seed"] == 3

    tokenizer = load_tokenizer(tokenizer_dir)
    split = {name: [tokenizer.decode(d.document(i)[1:-1]) for i in range(d.num_documents)]
             for name in ("train", "validation") for d in [TokenShards(tmp_path / "shards", name)]}  # fmt: skip
    assert split["validation"] == [t for t in texts if held_out(t, 3, 0.1)]
    assert split["train"] == [t for t in texts if not held_out(t, 3, 0.1)]
    repeated = set(texts[:60])
    assert repeated & set(split["validation"]) and not set(split["validation"]) & set(split["train"])

    options = dict(tokenizer=tokenizer_dir, block_size=16, validation_fraction=0.1)
    streamed = prepare_training_data(DataArguments(dataset=str(doubled), streaming=True, **options), nullcontext,
                                     tmp_path / "stream", seed=3)  # fmt: skip
    sharded = prepare_training_data(DataArguments(dataset=str(tmp_path / "shards"), **options), nullcontext,
                                    tmp_path / "sharded", seed=3)  # fmt: skip
    assert streamed.validation_documents["text"] == sharded.validation_documents["text"] == split["validation"]


def test_workers_and_reruns_give_byte_identical_shards(shards, corpus, tokenizer_dir, tmp_path):
    write_token_shards(corpus, tmp_path / "again", load_tokenizer(tokenizer_dir), tokenizer_dir,
                       validation_fraction=0.1, shard_tokens=SHARD_TOKENS, num_proc=2, progress_bar=False)  # fmt: skip
    assert files(tmp_path / "again") == files(shards)


@pytest.mark.parametrize("crash_at", ["shard-written:2", "shard-tokens-written:3"])
def test_a_killed_tokenize_resumes_to_byte_identical_shards(shards, corpus, tokenizer_dir, tmp_path, crash_at):
    """SIGKILL after the second file is recorded, or inside the third file's write before its rename: no file carries
    a final name half-written, and `tinyllm tokenize` run again finishes the very same shards."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "hf_tinyllm.cli", "tokenize", str(corpus), str(out), "--tokenizer", tokenizer_dir,
           "--validation_fraction", "0.1", "--shard_tokens", str(SHARD_TOKENS)]  # fmt: skip
    killed = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ,
                            CRASH_ENV: crash_at})  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "manifest.json").exists()
    progress = json.loads((out / ".progress.json").read_text())
    recorded = {s["file"] for split in progress["splits"].values() for s in split["shards"]}
    final_names = {str(p.relative_to(out)) for p in out.rglob("*.ds")}
    assert final_names == recorded and len(recorded) == 2
    if crash_at.startswith("shard-tokens"):  # the third file was complete under its temporary name only
        assert [p.name[:10] for p in out.rglob(".*.tmp-*")] == [".00002.ds."]
    for name in final_names:  # whatever carries a final name is complete
        assert (out / name).read_bytes() == (shards / name).read_bytes()
    finished = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert files(out) == files(shards)


def test_bad_input_a_used_folder_and_changed_settings_get_one_error_line(corpus, tokenizer_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "one"}\n{"text": "two"}\n{"text": 3}\n')
    message = cli_user_error(["tokenize", str(bad), str(tmp_path / "o1"), "--tokenizer", tokenizer_dir], capsys)
    assert str(bad) in message and "line 3" in message
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    message = cli_user_error(["tokenize", str(corpus), str(used), "--tokenizer", tokenizer_dir], capsys)
    assert "not empty" in message and (used / "notes.txt").read_text() == "mine"
    out = tmp_path / "o2"
    out.mkdir()
    (out / ".progress.json").write_text(json.dumps({"settings": {"seed": 7}, "splits": {}}))
    message = cli_user_error(["tokenize", str(corpus), str(out), "--tokenizer", tokenizer_dir], capsys)
    assert "interrupted tokenisation with other settings" in message and "seed: 7 then, 0 now" in message


def test_a_finished_folder_is_never_overwritten(shards, corpus, tokenizer_dir, capsys):
    before = files(shards)
    message = cli_user_error(["tokenize", str(corpus), str(shards), "--tokenizer", tokenizer_dir], capsys)
    assert "already holds finished shards" in message and files(shards) == before
