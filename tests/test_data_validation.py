"""Bad data fails at load time (or, streaming, when the stream reaches it) with one line naming the file, the byte
offset or line, and the fix; good data in a named encoding loads; no file is silently skipped by DataLoader workers."""

import json
import random
import re
from itertools import islice
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT, expect_user_error, run_script
from torch.utils.data import DataLoader

from hf_tinyllm.data.loading import load_text_dataset
from hf_tinyllm.data.packing import pack_dataset, tokenize_dataset
from hf_tinyllm.tokenization import train_tokenizer

GOOD_LINES = [f"the king walked {i} miles." for i in range(4)]
GOOD_PREFIX = "".join(line + "\n" for line in GOOD_LINES).encode()


def jsonl(rows: list) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_bad_inputs(root: Path) -> None:
    rng = random.Random(0)
    (root / "binary.txt").write_bytes(GOOD_PREFIX + b"\xff" + rng.randbytes(2000))
    (root / "empty.txt").write_bytes(b"")
    (root / "empty_folder").mkdir()
    (root / "empty_files").mkdir()
    (root / "empty_files" / "a.jsonl").write_bytes(b"")
    (root / "empty_files" / "b.jsonl").write_bytes(b"")
    broken = jsonl([{"text": t} for t in GOOD_LINES]) + '{"text": "no closing quote}\n' + jsonl([{"text": "x"}])
    (root / "broken.jsonl").write_text(broken)
    (root / "no_text.json").write_text(jsonl([{"story": t, "id": i} for i, t in enumerate(GOOD_LINES)]))
    (root / "ints.jsonl").write_text(jsonl([{"text": 7}, {"text": 8}]))
    (root / "mixed.jsonl").write_text(jsonl([{"text": "a king"}, {"text": ["a", "list"]}]))
    latin = jsonl([{"text": t} for t in GOOD_LINES[:2]]) + '{"text": "café"}\n'
    (root / "latin1.jsonl").write_bytes(latin.encode("latin-1"))
    pd.DataFrame({"text": [1, 2, 3]}).to_csv(root / "ints.csv", index=False)
    (root / "garbage.parquet").write_bytes(rng.randbytes(100))
    (root / "folder").mkdir()
    (root / "folder" / "a_good.jsonl").write_text(jsonl([{"text": t} for t in GOOD_LINES]))
    (root / "folder" / "b_bad.jsonl").write_text(jsonl([{"text": "fine"}]) + "not json at all\n")


LATIN1_OFFSET = len(jsonl([{"text": t} for t in GOOD_LINES[:2]]).encode()) + len('{"text": "caf')
FIX_ENCODING = r"convert it to UTF-8 or pass its encoding with --encoding \(e\.g\. --encoding latin-1\)\.$"

# (input under the data folder, the message it must raise)
CASES = [
    ("binary.txt", rf"binary\.txt is not UTF-8 text \(byte 0xff at offset {len(GOOD_PREFIX)}\); {FIX_ENCODING}"),
    ("latin1.jsonl", rf"latin1\.jsonl is not UTF-8 text \(byte 0xe9 at offset {LATIN1_OFFSET}\); {FIX_ENCODING}"),
    ("empty.txt", r"empty\.txt has no text \(the file is empty\); pass data with text\.$"),
    ("empty_folder", r"empty_folder is an empty folder; put \.txt/\.json/\.jsonl/\.csv/\.parquet files in it\.$"),
    ("empty_files", r"empty_files has no text \(all 2 of its files are empty\); pass data with text\.$"),
    ("broken.jsonl", r"broken\.jsonl line 5 is not valid JSON \(column \d+: .+\); fix or remove that line\.$"),
    ("no_text.json", r"no_text\.json has no column 'text'; its columns are \['story', 'id'\]\. Pass text_column="),
    ("ints.jsonl", r"ints\.jsonl line 1: 'text' is 7 \(int\), not a string; make every text a string, or pass "),
    ("mixed.jsonl", r"mixed\.jsonl line 2: 'text' is \[\"a\", \"list\"\] \(list\), not a string; make every text"),
    ("ints.csv", r"ints\.csv: column 'text' holds int64 values, not strings; pass text_column=\.\.\. naming"),
    ("garbage.parquet", r"garbage\.parquet is not a Parquet file \(.+\); pass a valid \.parquet file\.$"),
    ("folder", r"b_bad\.jsonl line 2 is not valid JSON \(column 1: Expecting value\); fix or remove that line\.$"),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_data")
    write_bad_inputs(root)
    return root


def read_everything(source: Path, streaming: bool, **kwargs) -> list[dict]:
    return list(load_text_dataset(source, streaming=streaming, **kwargs))


@pytest.mark.parametrize("streaming", [False, True], ids=["map-style", "streaming"])
@pytest.mark.parametrize(("name", "message"), CASES, ids=[name for name, _ in CASES])
def test_bad_input_raises_one_line_naming_the_file_and_the_fix(data, name, message, streaming):
    with pytest.raises(ValueError) as caught:
        read_everything(data / name, streaming)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(str(data / name)), text
    assert re.search(message, text), text


def test_streaming_reports_a_bad_file_when_the_stream_reaches_it(data):
    stream = iter(load_text_dataset(data / "folder", streaming=True))
    assert [row["text"] for row in islice(stream, len(GOOD_LINES))] == GOOD_LINES  # a_good.jsonl, read lazily
    with pytest.raises(ValueError, match=r"b_bad\.jsonl line 2 is not valid JSON"):
        list(stream)


def test_streaming_error_surfaces_through_tokenising_and_packing(data):
    tokenizer = train_tokenizer(GOOD_LINES * 10, vocab_size=300)
    blocks = pack_dataset(tokenize_dataset(load_text_dataset(data / "binary.txt", streaming=True), tokenizer), 8)
    with pytest.raises(ValueError, match=rf"binary\.txt is not UTF-8 text \(byte 0xff at offset {len(GOOD_PREFIX)}\)"):
        list(blocks)


def test_the_named_encoding_reads_the_file(data):
    for streaming in (False, True):
        texts = [row["text"] for row in read_everything(data / "latin1.jsonl", streaming, encoding="latin-1")]
        assert texts == [*GOOD_LINES[:2], "café"]
    with pytest.raises(ValueError, match=r"encoding='utf-9' is not a known text encoding; pass a Python codec name"):
        load_text_dataset(data / "latin1.jsonl", encoding="utf-9")


def test_dataloader_workers_read_every_file_of_a_streamed_folder(tmp_path):
    for k in range(2):
        (tmp_path / f"part{k}.jsonl").write_text(jsonl([{"text": f"part {k} row {i}"} for i in range(5)]))
    stream = load_text_dataset(tmp_path, streaming=True)
    assert stream.num_shards == 2
    loader = DataLoader(stream, batch_size=4, num_workers=2)
    texts = sorted(text for batch in loader for text in batch["text"])
    assert texts == sorted(f"part {k} row {i}" for k in range(2) for i in range(5))


def test_a_local_file_is_one_train_split(data):
    # Asking it for a validation split once returned the training rows, so training evaluated on its own data.
    with pytest.raises(ValueError, match=r"no_text\.json is read as one 'train' split, not 'validation'; hold out"):
        load_text_dataset(data / "no_text.json", text_column="story", split="validation")


def test_train_script_prints_the_message_for_a_binary_dataset(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.delenv("TINYLLM_DEBUG", raising=False)  # debug mode would show the traceback instead
    argv = ["--dataset", str(data / "binary.txt"), "--output_dir", str(tmp_path / "run"), "--report_to", "none",
            "--max_steps", "30"]  # fmt: skip
    line = expect_user_error(lambda: run_script("scripts/train.py", argv, training=True), capsys)
    assert f"{data / 'binary.txt'} is not UTF-8 text (byte 0xff at offset {len(GOOD_PREFIX)})" in line


@pytest.mark.parametrize("streaming", [False, True], ids=["map", "streaming"])
def test_windows_line_ends_read_as_newlines_in_every_source(tmp_path, streaming):
    """CRLF (and a lone CR) inside texts of JSON lines, CSV and parquet, and a CRLF .txt file: the tokenizer never
    learns a carriage return, and the tokens and byte counts are those of the same texts with LF."""
    texts = ["the king fed his dog.\r\nthe queen sang.", "one\rtwo\r\nthree"]
    unix = [t.replace("\r\n", "\n").replace("\r", "\n") for t in texts]
    sources = {"jsonl": tmp_path / "a.jsonl", "csv": tmp_path / "b.csv", "parquet": tmp_path / "c.parquet"}
    sources["jsonl"].write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    pd.DataFrame({"text": texts}).to_csv(sources["csv"], index=False)
    pd.DataFrame({"text": texts}).to_parquet(sources["parquet"])
    (tmp_path / "d.txt").write_bytes(b"the king fed his dog.\r\nthe queen sang.\r\n")
    tokenizer = train_tokenizer([*texts * 20, "the king fed his dog.\r\n"], vocab_size=300)
    assert not [token for token in tokenizer.get_vocab() if "\r" in token]
    expected = tokenize_dataset(load_text_dataset(_jsonl(tmp_path, unix), split="train"), tokenizer)
    for name, path in sources.items():
        tokenized = tokenize_dataset(load_text_dataset(path, split="train", streaming=streaming), tokenizer)
        rows = list(tokenized)
        assert [r["input_ids"] for r in rows] == expected["input_ids"], name
        assert [r["num_bytes"] for r in rows] == [len(t.encode()) + 1 for t in unix], name
    txt = list(tokenize_dataset(load_text_dataset(tmp_path / "d.txt", split="train", streaming=streaming), tokenizer))
    assert [r["input_ids"] for r in txt] == [tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]
                                             for line in unix[0].split("\n")]  # fmt: skip


def _jsonl(folder: Path, texts: list[str]) -> Path:
    path = folder / "unix" / "e.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path
