"""Loading with `datasets`, tokenising with cached batched map, lossless packing, document positions, collation."""

import json
import socket

import datasets
import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, last_json_line, run_python, tiny_model
from datasets import Dataset, DatasetDict, IterableDataset

from hf_tinyllm.data.loading import load_text_dataset
from hf_tinyllm.data.packing import (
    DataCollatorForCausalLM,
    check_block_size,
    document_position_ids,
    pack_dataset,
    split_train_validation,
    tokenize_dataset,
)
from hf_tinyllm.modeling_tinyllm import output_cache
from hf_tinyllm.tokenization import train_tokenizer

TEXTS = [f"story {i}: the {'king' if i % 2 else 'queen'} walked {i % 7} miles to the palace." for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


@pytest.fixture
def files(tmp_path):
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    (tmp_path / "data.txt").write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    pd.DataFrame(rows).to_csv(tmp_path / "data.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "data.parquet")
    folder = tmp_path / "folder"
    folder.mkdir()
    for k in range(3):
        (folder / f"part{k}.jsonl").write_text("\n".join(json.dumps(r) for r in rows[k::3]) + "\n", encoding="utf-8")
    DatasetDict(train=Dataset.from_list(rows[:50]), validation=Dataset.from_list(rows[50:])).save_to_disk(
        str(tmp_path / "saved")
    )
    return tmp_path


@pytest.mark.parametrize("name", ["data.txt", "data.jsonl", "data.csv", "data.parquet", "folder"])
def test_loads_local_files_and_folders(files, name):
    dataset = load_text_dataset(files / name)
    assert sorted(dataset["text"]) == sorted(TEXTS)


def test_loads_a_saved_dataset_split_and_streams(files):
    assert load_text_dataset(files / "saved", split="validation")["text"] == TEXTS[50:]
    streamed = load_text_dataset(files / "data.jsonl", streaming=True)
    assert isinstance(streamed, IterableDataset)
    assert [row["text"] for row in streamed] == TEXTS


def test_loading_errors_name_the_problem(files):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_text_dataset(files / "nope.jsonl")
    with pytest.raises(ValueError, match=r"has no column 'story'; its columns are \['text', 'id'\]"):
        load_text_dataset(files / "data.jsonl", text_column="story")
    with pytest.raises(ValueError, match=r"has splits \['train', 'validation'\], not 'test'"):
        load_text_dataset(files / "saved", split="test")
    (files / "folder" / "extra.csv").write_text("text\nx\n")
    with pytest.raises(ValueError, match="mixes formats"):
        load_text_dataset(files / "folder")


def test_a_hub_name_offline_gives_a_clear_error(monkeypatch):
    # What HF_HUB_OFFLINE=1 / HF_DATASETS_OFFLINE=1 set at startup, for this test only: datasets and huggingface_hub
    # read these flags when a request is made. No connection may be attempted, so the error is offline mode's.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    connections = []

    def no_network(*args, **kwargs):
        connections.append(args)
        raise OSError("a network connection was attempted in offline mode")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(ConnectionError) as caught:
        load_text_dataset("someone/some-dataset")
    out = str(caught.value)
    assert "Could not load the Hub dataset 'someone/some-dataset'" in out and "save_to_disk" in out
    assert connections == []


def test_tokenize_adds_bos_and_eos_and_counts_bytes(tokenizer):
    texts = ["the king walked.", "", "déjà vu"]
    tokenized = tokenize_dataset(Dataset.from_dict({"text": texts}), tokenizer)
    assert len(tokenized) == 2  # the empty text is dropped
    first = tokenized[0]["input_ids"]
    assert first[0] == tokenizer.bos_token_id and first[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(first[1:-1]) == "the king walked."
    assert tokenized["num_bytes"] == [len(b"the king walked.") + 1, len("déjà vu".encode()) + 1]


def test_parallel_tokenisation_gives_the_same_result(files, tokenizer):
    dataset = load_text_dataset(files / "data.jsonl")
    assert (
        tokenize_dataset(dataset, tokenizer, num_proc=2)["input_ids"]
        == tokenize_dataset(dataset, tokenizer)["input_ids"]
    )


def test_tokenize_errors(tokenizer):
    with pytest.raises(ValueError, match="The dataset is empty"):
        tokenize_dataset(Dataset.from_dict({"text": []}), tokenizer)
    with pytest.raises(ValueError, match="Every text in column 'text' is empty"):
        tokenize_dataset(Dataset.from_dict({"text": ["", ""]}), tokenizer)


TOKENIZE = """
import os
from transformers import AutoTokenizer
from hf_tinyllm.data.loading import load_text_dataset
from hf_tinyllm.data.packing import tokenize_dataset
tokenizer = AutoTokenizer.from_pretrained({tokenizer!r})
tokenized = tokenize_dataset(load_text_dataset({data!r}), tokenizer, num_proc=1)
files = [f["filename"] for f in tokenized.cache_files]
result = {{"files": files, "mtimes": [os.stat(f).st_mtime_ns for f in files], "rows": len(tokenized)}}
"""


def test_second_run_reads_the_tokenisation_cache(files, tokenizer, tmp_path, monkeypatch):
    """The same code runs twice, first in this process, then in a fresh interpreter: the second finds the cache file
    only if the map's fingerprint depends on nothing of the process that wrote it (object ids, the hash seed)."""
    tokenizer.save_pretrained(tmp_path / "tok")
    cache = tmp_path / "cache"
    # What HF_DATASETS_CACHE=cache sets at startup: the datasets cache and its download folders, for this test only.
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", cache / "downloads")
    monkeypatch.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", cache / "downloads" / "extracted")
    code = TOKENIZE.format(tokenizer=str(tmp_path / "tok"), data=str(files / "data.jsonl"))
    namespace = {}
    exec(code, namespace)
    first = namespace["result"]
    arrow_files = sorted(p for p in cache.rglob("*.arrow"))
    code += "import json\nprint(json.dumps(result))\n"
    second = last_json_line(run_python(code, env={"HF_DATASETS_CACHE": str(cache)}, cwd=REPO_ROOT))
    assert first["rows"] == second["rows"] == len(TEXTS)
    assert any("cache-" in f for f in first["files"])  # map wrote a cache file
    assert second["files"] == first["files"] and second["mtimes"] == first["mtimes"]  # ... which was only read
    assert sorted(p for p in cache.rglob("*.arrow")) == arrow_files  # nothing new was written


def test_packing_is_lossless(tokenizer):
    tokenized = tokenize_dataset(Dataset.from_dict({"text": TEXTS}), tokenizer)
    stream = [t for row in tokenized["input_ids"] for t in row]
    packed = pack_dataset(tokenized, block_size=32)
    blocks = packed["input_ids"]
    assert all(len(b) == 32 for b in blocks)
    assert len(stream) - len(blocks) * 32 < 32  # only a final partial block is dropped
    concatenated = [t for b in blocks for t in b]
    assert concatenated == stream[: len(concatenated)]
    # Removing the separators recovers every complete document's tokens, in order.
    docs, current = [], []
    for token in concatenated:
        if token == tokenizer.eos_token_id:
            docs.append(current)
            current = []
        else:
            current.append(token)
    expected = [row[:-1] for row in tokenized["input_ids"]][: len(docs)]
    assert docs == expected
    assert tokenizer.decode(docs[3][1:]) == TEXTS[3]


def test_streaming_packing_equals_map_style_packing(tokenizer):
    dataset = Dataset.from_dict({"text": TEXTS})
    packed = pack_dataset(tokenize_dataset(dataset, tokenizer), 32, document_positions=True, bos_token_id=1)
    streamed = pack_dataset(
        tokenize_dataset(dataset.to_iterable_dataset(), tokenizer), 32, document_positions=True, bos_token_id=1
    )
    rows = list(streamed)
    assert [r["input_ids"] for r in rows] == packed["input_ids"]
    assert [r["position_ids"] for r in rows] == packed["position_ids"]


def test_document_positions_restart_at_each_document():
    ids = np.array([5, 6, 2, 1, 7, 8, 9, 2, 1, 4])
    assert document_position_ids(ids, bos_token_id=1).tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0, 1]


@pytest.mark.parametrize("use_cache", [False, True, None])
def test_document_positions_confine_attention_to_the_document(arch, use_cache):
    """transformers' packed-sequence masks: with restarting position_ids (and no attention mask), each document in
    a packed block gets exactly the logits it gets alone, whether or not the forward builds a KV cache (None: the
    config's default, `use_cache=True`)."""
    model = tiny_model(**arch)
    doc_a = [1, 17, 23, 45, 2]
    doc_b = [1, 30, 31, 32, 33, 34, 2]
    block = torch.tensor([doc_a + doc_b])
    positions = torch.from_numpy(document_position_ids(block[0].numpy(), bos_token_id=1)).unsqueeze(0)
    packed = model(block, position_ids=positions, use_cache=use_cache)
    alone_a, alone_b = model(torch.tensor([doc_a])).logits, model(torch.tensor([doc_b])).logits
    torch.testing.assert_close(packed.logits[:, : len(doc_a)], alone_a, rtol=0, atol=1e-5)
    torch.testing.assert_close(packed.logits[:, len(doc_a) :], alone_b, rtol=0, atol=1e-5)
    assert (output_cache(packed) is not None) == (use_cache is not False)  # the cache is still returned
    leaky = model(block, use_cache=use_cache).logits  # without document positions, doc_b attends to doc_a
    assert not torch.allclose(leaky[:, len(doc_a) :], alone_b, atol=1e-3)


def test_pack_errors(tokenizer):
    tokenized = tokenize_dataset(Dataset.from_dict({"text": TEXTS[:2]}), tokenizer)
    with pytest.raises(ValueError, match="fewer than one block of block_size=4096"):
        pack_dataset(tokenized, block_size=4096)
    with pytest.raises(ValueError, match="block_size=1 must be at least 2"):
        pack_dataset(tokenized, block_size=1)
    with pytest.raises(ValueError, match="block_size=128 is larger than the model's max_position_embeddings=64"):
        check_block_size(128, tiny_model().config)


def test_collator_for_packed_and_variable_length_examples():
    collate = DataCollatorForCausalLM(pad_token_id=0)
    packed = collate(
        [
            {"input_ids": [1, 5, 2, 1], "position_ids": [0, 1, 2, 0]},
            {"input_ids": [7, 8, 9, 2], "position_ids": [3, 4, 5, 6]},
        ]
    )
    assert packed["input_ids"].tolist() == [[1, 5, 2, 1], [7, 8, 9, 2]]
    assert torch.equal(packed["labels"], packed["input_ids"])  # the model shifts; the collator does not
    assert "attention_mask" not in packed
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0], [3, 4, 5, 6]]
    ragged = DataCollatorForCausalLM(pad_token_id=0, pad_to_multiple_of=4)(
        [{"input_ids": [1, 5, 6]}, {"input_ids": [1, 9]}]
    )
    assert ragged["input_ids"].tolist() == [[1, 5, 6, 0], [1, 9, 0, 0]]
    assert ragged["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert ragged["labels"].tolist() == [[1, 5, 6, -100], [1, 9, -100, -100]]


def test_train_validation_split_is_deterministic():
    dataset = Dataset.from_dict({"text": TEXTS})
    a, b = split_train_validation(dataset, 0.1, seed=3), split_train_validation(dataset, 0.1, seed=3)
    assert a["validation"]["text"] == b["validation"]["text"] and len(a["validation"]) == 6
    assert set(a["train"]["text"]).isdisjoint(a["validation"]["text"])
    assert split_train_validation(dataset, 0.1, seed=4)["validation"]["text"] != a["validation"]["text"]
    with pytest.raises(ValueError, match=r"validation_fraction=1\.5 must be in"):
        split_train_validation(dataset, 1.5)
