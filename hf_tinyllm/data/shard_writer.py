"""`tinyllm tokenize`: any source the loader reads, streamed, tokenised (in worker processes) and written as token
shards (the format: `shards.py`).

- The input is streamed (`load_text_dataset(..., streaming=True)`): never held whole. Batches of documents go to
  `num_proc` worker processes, at most two batches per worker in flight, and come back in order.
- The output depends only on the input and the settings, never on `num_proc` or on interruptions: a file closes
  after the document that brings it to `shard_tokens` tokens, and the validation hold-out (when the source has no
  validation split) is a seeded hash of each document's text (`holdout.held_out`, the rule `--streaming` uses, so
  both hold out the same documents). A re-run gives byte-identical shards (tested).
- A file is written under a `.tmp` name and renamed when complete; `.progress.json` then records it and, per split,
  the first input document not yet in a closed file. A killed run started again with the same settings resumes
  there (tested with SIGKILL); the manifest is written last, so its presence means the folder is finished.
"""

import json
import os
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ..atomic import atomic_file
from ..faults import crash_point
from .holdout import HOLDOUT_RULE, held_out
from .loading import load_text_dataset
from .packing import check_separator, encode_documents
from .shards import (
    FORMAT,
    FORMAT_VERSION,
    INDEX_DTYPE,
    INDEX_SUFFIX,
    MANIFEST,
    METADATA_SUFFIX,
    TOKENS_SUFFIX,
    token_dtype,
    tokenizer_fingerprint,
)

PROGRESS = ".progress.json"
DEFAULT_SHARD_TOKENS = 100_000_000  # 200 MB files at 2 bytes a token, as nanoGPT's FineWeb shards
BATCH_DOCUMENTS = 1000


@dataclass
class _Split:
    """The files of one split, the one being written, and where a resumed run must start feeding it."""

    name: str
    shards: list[dict] = field(default_factory=list)
    resume_document: int = 0  # first input document (of this split's stream) not in a closed file
    tokens: list[np.ndarray] = field(default_factory=list)  # the open file's tokens, in pieces
    lengths: list[np.ndarray] = field(default_factory=list)  # its documents' token counts, in pieces
    count: int = 0
    num_bytes: int = 0
    next_document: int = 0


class _Writer:
    def __init__(self, folder: Path, settings: dict, tokenizer_name: str, dtype: np.dtype) -> None:
        self.folder, self.settings, self.tokenizer_name, self.dtype = folder, settings, tokenizer_name, dtype
        self.shard_tokens = settings["shard_tokens"]
        self.splits: dict[str, _Split] = {}
        progress = folder / PROGRESS
        if progress.is_file():
            saved = json.loads(progress.read_text())
            for name, state in saved["splits"].items():
                self.splits[name] = _Split(name, state["shards"], state["resume_document"])
            for stale in folder.glob("*/.*.tmp-*"):  # a file being written when the run was killed
                stale.unlink()
        else:
            self.save_progress()  # first, so that a run killed before its first file still resumes

    def split(self, name: str) -> _Split:
        return self.splits.setdefault(name, _Split(name))

    def add(self, split: _Split, indices: np.ndarray, lengths: np.ndarray, tokens: np.ndarray,
            num_bytes: np.ndarray) -> None:  # fmt: skip
        """Documents of one batch (input indices, token counts, tokens end to end, byte counts), closing the open
        file after the document that brings it to `shard_tokens`."""
        offsets = np.concatenate([np.zeros(1, np.int64), np.cumsum(lengths)])
        start = 0
        while start < len(lengths):
            reach = np.cumsum(lengths[start:])
            stop = min(start + int(np.searchsorted(reach, self.shard_tokens - split.count)) + 1, len(lengths))
            split.tokens.append(tokens[offsets[start] : offsets[stop]])
            split.lengths.append(lengths[start:stop])
            split.count += int(offsets[stop] - offsets[start])
            split.num_bytes += int(num_bytes[start:stop].sum())
            split.next_document = int(indices[stop - 1]) + 1
            if split.count >= self.shard_tokens:
                self.close(split)
            start = stop

    def close(self, split: _Split) -> None:
        """Write the open file of `split` under temporary names, rename it into place, then record it."""
        if not split.count:
            return
        name = f"{split.name}/{len(split.shards):05d}"
        base = self.folder / name
        base.parent.mkdir(parents=True, exist_ok=True)
        lengths = np.concatenate(split.lengths)
        with atomic_file(base.with_name(base.name + INDEX_SUFFIX)) as tmp:
            tmp.write_bytes(np.cumsum(lengths).astype(INDEX_DTYPE).tobytes())
        with atomic_file(base.with_name(base.name + METADATA_SUFFIX)) as tmp:
            tmp.write_text(f"{self.tokenizer_name}\n{split.count}\n{split.count / 1e6:.1f}M tokens")
        with atomic_file(base.with_name(base.name + TOKENS_SUFFIX)) as tmp:
            with tmp.open("wb") as f:
                for piece in split.tokens:
                    f.write(piece.astype(self.dtype, copy=False).tobytes())
            crash_point("shard-tokens-written")  # complete, not yet renamed
        split.shards.append({"file": name + TOKENS_SUFFIX, "tokens": split.count, "documents": len(lengths),
                             "bytes": split.num_bytes})  # fmt: skip
        split.resume_document = split.next_document
        split.tokens, split.lengths, split.count, split.num_bytes = [], [], 0, 0
        self.save_progress()
        crash_point("shard-written")

    def save_progress(self) -> None:
        state = {name: {"shards": s.shards, "resume_document": s.resume_document} for name, s in self.splits.items()}
        with atomic_file(self.folder / PROGRESS) as tmp:
            tmp.write_text(json.dumps({"settings": self.settings, "splits": state}, indent=1))


# The settings the manifest repeats (`holdout`: how validation documents were chosen, when the writer chose them).
MANIFEST_SETTINGS = ("source", "dataset_config", "text_column", "validation_fraction", "holdout", "seed",
                     "shard_tokens")  # fmt: skip


def write_token_shards(
    source: str | Path,
    output_dir: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    tokenizer_name: str,
    text_column: str = "text",
    encoding: str = "utf-8",
    dataset_config: str | None = None,
    validation_fraction: float = 0.02,
    seed: int = 0,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    num_proc: int | None = None,
    progress_bar: bool = True,
) -> dict:
    """Tokenise `source` into token shards in `output_dir` (see the module); returns the manifest. The source's own
    validation split is used when it has one; otherwise a seeded `validation_fraction` of its documents (0: none).
    `tokenizer_name` is what the manifest calls the tokenizer (its folder or Hub id)."""
    check_separator(tokenizer)
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens={shard_tokens} must be at least 1, e.g. 100000000 (200 MB files).")
    if not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction={validation_fraction} must be in [0, 1), e.g. 0.02 (0: no hold-out).")
    folder = Path(output_dir)
    streams = _streams(source, text_column, encoding, dataset_config)
    holdout = validation_fraction if len(streams) == 1 else None
    settings = {"format_version": FORMAT_VERSION, "source": str(source), "dataset_config": dataset_config,
                "text_column": text_column,
                "encoding": encoding, "tokenizer": tokenizer_fingerprint(tokenizer), "validation_fraction": holdout,
                "holdout": HOLDOUT_RULE if holdout else None, "seed": seed, "shard_tokens": shard_tokens}  # fmt: skip
    _check_folder(folder, settings)
    folder.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(len(tokenizer))
    writer = _Writer(folder, settings, tokenizer_name, dtype)
    bar = tqdm(desc=f"Tokenising {source}", unit=" docs", disable=not progress_bar, dynamic_ncols=True)
    with _Encoder(tokenizer, num_proc, seed, holdout or 0.0) as encoder:
        for stream_name, stream in streams:
            names = ["train", "validation"] if stream_name == "train" and holdout else [stream_name]
            splits = [writer.split(n) for n in names]
            start = min(s.resume_document for s in splits)
            batches = _batches(stream.skip(start) if start else stream, text_column, start)
            for indices, lengths, tokens, num_bytes, side, rows in encoder.map(batches):
                bar.update(rows)
                for number, split in enumerate(splits):
                    mine = (side == number) & (indices >= split.resume_document)
                    if mine.any():
                        writer.add(split, indices[mine], lengths[mine], tokens[np.repeat(mine, lengths)],
                                   num_bytes[mine])  # fmt: skip
            for split in splits:
                writer.close(split)
    bar.close()
    manifest = _manifest(writer, tokenizer, tokenizer_name, settings, dtype)
    with atomic_file(folder / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    (folder / PROGRESS).unlink()
    return manifest


def _streams(source: str | Path, text_column: str, encoding: str, config: str | None) -> list[tuple]:
    options = dict(text_column=text_column, streaming=True, encoding=encoding, config=config)
    streams = [("train", load_text_dataset(source, split="train", **options))]
    with suppress(ValueError):  # no validation split: a seeded fraction is held out (or none)
        streams.append(("validation", load_text_dataset(source, split="validation", **options)))
    return streams


def _check_folder(folder: Path, settings: dict) -> None:
    if (folder / MANIFEST).exists():
        raise FileExistsError(
            f"{folder} already holds finished shards ({MANIFEST}); write to another folder, or delete it first."
        )
    progress = folder / PROGRESS
    if progress.is_file():
        saved = json.loads(progress.read_text())["settings"]
        if saved != settings:
            changed = ", ".join(f"{k}: {saved.get(k)!r} then, {v!r} now" for k, v in settings.items()
                                if saved.get(k) != v)  # fmt: skip
            raise ValueError(
                f"{folder} holds an interrupted tokenisation with other settings ({changed}); run it again with "
                "the same settings to resume, or write to another folder."
            )
    elif folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty and holds no tokenisation; write to a new or empty folder.")


def _batches(stream, text_column: str, first: int):
    """(index of the batch's first document, its texts) in input order."""
    for batch in stream.iter(batch_size=BATCH_DOCUMENTS):
        texts = batch[text_column]
        yield first, texts
        first += len(texts)


class _Encoder:
    """Batches encoded in order, in this process or in `num_proc` workers with a bounded number in flight (so a
    fast reader never queues the corpus in memory)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, num_proc: int | None, seed: int, fraction: float) -> None:
        self.tokenizer, self.num_proc, self.pool = tokenizer, num_proc or 1, None
        self.holdout = (seed, fraction)

    def __enter__(self) -> "_Encoder":
        if self.num_proc > 1:
            self.pool = get_context("spawn").Pool(self.num_proc, initializer=_set_worker_tokenizer,
                                                  initargs=(self.tokenizer,))  # fmt: skip
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def map(self, batches):
        """(document indices, token counts, tokens end to end, byte counts, sides (1: validation), input rows) per
        batch, in input order."""
        if self.pool is None:
            for first, texts in batches:
                yield _encode(self.tokenizer, first, texts, *self.holdout)
            return
        pending: deque = deque()
        for first, texts in batches:
            pending.append(self.pool.apply_async(_encode_in_worker, (first, texts, *self.holdout)))
            if len(pending) >= 2 * self.num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


_worker_tokenizer: PreTrainedTokenizerBase | None = None


def _set_worker_tokenizer(tokenizer: PreTrainedTokenizerBase) -> None:
    global _worker_tokenizer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # one thread a worker: the workers are the parallelism
    _worker_tokenizer = tokenizer


def _encode_in_worker(first: int, texts: list, seed: int, fraction: float) -> tuple:
    return _encode(_worker_tokenizer, first, texts, seed, fraction)


def _encode(tokenizer: PreTrainedTokenizerBase, first: int, texts: list, seed: int, fraction: float) -> tuple:
    kept = [i for i, t in enumerate(texts) if t]  # empty texts add no document, but keep their index
    ids, num_bytes = encode_documents(tokenizer, [texts[i] for i in kept])
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    tokens = np.fromiter((t for row in ids for t in row), dtype=np.uint32, count=int(lengths.sum()))
    side = np.fromiter((fraction > 0 and held_out(texts[i], seed, fraction) for i in kept), np.int64, len(kept))
    return (np.asarray(kept, np.int64) + first, lengths, tokens, np.asarray(num_bytes, np.int64), side,
            len(texts))  # fmt: skip


def _manifest(writer: _Writer, tokenizer: PreTrainedTokenizerBase, name: str, settings: dict, dtype: np.dtype) -> dict:
    from .. import __version__

    splits = {}
    for split_name, split in sorted(writer.splits.items()):
        splits[split_name] = {
            "tokens": sum(s["tokens"] for s in split.shards),
            "documents": sum(s["documents"] for s in split.shards),
            "bytes": sum(s["bytes"] for s in split.shards),
            "shards": split.shards,
        }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"hf_tinyllm {__version__}",
        "documents": "[bos] text [eos], never across files; index: each document's end offset (tokens, uint64)",
        "dtype": dtype.str,
        "tokenizer": {
            "name": name,
            "fingerprint": settings["tokenizer"],
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        **{key: settings[key] for key in MANIFEST_SETTINGS},
        "splits": splits,
    }


__all__ = ["DEFAULT_SHARD_TOKENS", "write_token_shards"]
