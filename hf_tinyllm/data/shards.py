"""Pre-tokenised token shards: the on-disk format, and packed blocks read from it by memory map.

The layout is datatrove's tokenised-file layout (`DocumentTokenizer`, which nanotron's Nanosets read), one folder per
split, plus a manifest, so their tools can read our shards and write ones we read:

    OUT/manifest.json                 format and version, tokenizer fingerprint, token dtype, special ids, seed,
                                      per split and per shard: token, document and byte counts
    OUT/<split>/NNNNN.ds              the tokens of whole documents, little-endian uint16 (uint32 when the
                                      vocabulary has more than 65,536 ids): 2 bytes a token, readable by np.memmap
    OUT/<split>/NNNNN.ds.index        each document's end offset in that file, in tokens, little-endian uint64
    OUT/<split>/NNNNN.ds.metadata     datatrove's three lines: tokenizer name, token count, token count in words

Every document is `[bos] text [eos]` exactly as `tokenize_dataset` writes it, and never crosses files. A split's
token stream is its files in order; blocks are cut from that stream as `pack_dataset` cuts them (the same blocks,
tested), and document positions come from the index.
"""

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

FORMAT = "hf_tinyllm-token-shards"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS_SUFFIX = ".ds"
INDEX_SUFFIX = ".ds.index"
METADATA_SUFFIX = ".ds.metadata"
INDEX_DTYPE = np.dtype("<u8")
UINT16_LIMIT = 1 << 16


class ShardFormatError(ValueError):
    """A shards folder that is incomplete, of another format or version, or made with another tokenizer."""


def token_dtype(vocab_size: int) -> np.dtype:
    """2 bytes a token while every id fits (vocabularies up to 65,536), else 4."""
    return np.dtype("<u2") if vocab_size <= UINT16_LIMIT else np.dtype("<u4")


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of what decides the ids a text becomes: the model (vocabulary, merges), added tokens, normaliser,
    pre-tokeniser and post-processor of the `tokenizers` backend, in canonical JSON (indifferent to how the
    tokenizer.json file is formatted)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    parts = {key: spec.get(key) for key in ("model", "added_tokens", "normalizer", "pre_tokenizer", "post_processor")}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def is_token_shards(path: str | Path) -> bool:
    """Whether `path` is a folder `tinyllm tokenize` finished (it has the manifest, written last)."""
    return (Path(path) / MANIFEST).is_file()


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a finished shards folder, its format and version checked."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ShardFormatError(
            f"{folder} has no {MANIFEST}: it is not a finished shards folder; run `tinyllm tokenize SOURCE {folder} "
            "--tokenizer TOKENIZER` (again: it resumes where it stopped)."
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise ShardFormatError(
            f"{path} is format {manifest.get('format')!r} version {manifest.get('format_version')!r}; this release "
            f"reads {FORMAT!r} version {FORMAT_VERSION}. Tokenise the corpus again with this release."
        )
    return manifest


def check_tokenizer(manifest: dict, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> None:
    """The shards were written by this very tokenizer, else ids would mean other tokens."""
    if manifest["tokenizer"]["fingerprint"] != tokenizer_fingerprint(tokenizer):
        raise ShardFormatError(
            f"{folder} was tokenised with another tokenizer ({manifest['tokenizer']['name']}, fingerprint "
            f"{manifest['tokenizer']['fingerprint'][:12]}) than the one given (fingerprint "
            f"{tokenizer_fingerprint(tokenizer)[:12]}); pass --tokenizer {manifest['tokenizer']['name']}, or tokenise "
            "the corpus again with this tokenizer."
        )


class TokenShards:
    """One split of a shards folder: its token stream and documents, read by memory map. The maps open lazily and
    are not pickled, so each DataLoader worker opens its own (and a fork shares no file state)."""

    def __init__(self, folder: str | Path, split: str = "train") -> None:
        self.folder = Path(folder)
        self.manifest = read_manifest(folder)
        if split not in self.manifest["splits"]:
            raise ShardFormatError(
                f"{folder} has the splits {sorted(self.manifest['splits'])}, not {split!r}; tokenise with a "
                "validation fraction, or pass a source with that split."
            )
        self.split = split
        self.dtype = np.dtype(self.manifest["dtype"])
        shards = self.manifest["splits"][split]["shards"]
        self.files = [self.folder / s["file"] for s in shards]
        self.starts = np.cumsum([0] + [s["tokens"] for s in shards])  # each file's first token in the stream
        self.document_offsets = np.cumsum([0] + [s["documents"] for s in shards])
        self._maps: list[tuple[np.memmap, np.memmap]] | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def _opened(self) -> list[tuple[np.ndarray, np.ndarray]]:
        if self._maps is None:
            self._maps = [(_memmap(f, self.dtype), _memmap(f.with_name(f.name[: -len(TOKENS_SUFFIX)] + INDEX_SUFFIX),
                                                           INDEX_DTYPE)) for f in self.files]  # fmt: skip
            for (tokens, _), file, count in zip(self._maps, self.files, np.diff(self.starts), strict=True):
                if len(tokens) != count:
                    raise ShardFormatError(
                        f"{file} holds {len(tokens)} tokens, the manifest says {count}: the folder was changed after "
                        "it was written; tokenise the corpus again."
                    )
        return self._maps

    @property
    def num_tokens(self) -> int:
        return int(self.starts[-1])

    @property
    def num_documents(self) -> int:
        return int(self.document_offsets[-1])

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) of the stream as int64, across file ends."""
        return np.concatenate([tokens[lo:hi].astype(np.int64) for tokens, _, _, lo, hi in self._pieces(start, stop)])

    def positions(self, start: int, stop: int) -> np.ndarray:
        """Positions of tokens [start, stop) as a block's, by the index (not by the tokens): counted from their
        document's first token, or from `start` for the document the span begins inside (as `pack_dataset`)."""
        out = []
        for _, ends, offset, lo, hi in self._pieces(start, stop):
            local = np.arange(lo, hi, dtype=ends.dtype)  # the index's dtype: a mixed one would copy the whole index
            document = np.searchsorted(ends, local, side="right")  # the document each token is in
            first = np.where(document > 0, ends[np.maximum(document - 1, 0)], 0).astype(np.int64)
            out.append(local.astype(np.int64) + offset - np.maximum(first + offset, start))
        return np.concatenate(out)

    def _pieces(self, start: int, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray, int, int, int]]:
        """(tokens, index, the file's first token in the stream, lo, hi) for each file [start, stop) touches."""
        maps = self._opened()
        first = int(np.searchsorted(self.starts, start, side="right")) - 1
        for i in range(first, len(maps)):
            offset = int(self.starts[i])
            if offset >= stop:
                break
            lo, hi = max(start - offset, 0), min(stop - offset, int(self.starts[i + 1]) - offset)
            if hi > lo:
                yield maps[i][0], maps[i][1], offset, lo, hi

    def document(self, i: int) -> np.ndarray:
        """Document `i` of the split (`[bos] ... [eos]`) as int64."""
        file = int(np.searchsorted(self.document_offsets, i, side="right")) - 1
        tokens, ends = self._opened()[file]
        local = i - int(self.document_offsets[file])
        begin = int(ends[local - 1]) if local > 0 else 0
        return tokens[begin : int(ends[local])].astype(np.int64)

    def document_starts(self) -> Iterator[np.ndarray]:
        """Every document's first token in the stream, file by file (constant memory beyond one file's index)."""
        for (_, ends), offset in zip(self._opened(), self.starts, strict=False):
            yield np.concatenate([np.zeros(1, np.int64), ends[:-1].astype(np.int64)]) + int(offset)


def _memmap(path: Path, dtype: np.dtype) -> np.ndarray:
    if not path.is_file():
        raise ShardFormatError(f"{path} is missing: the shards folder is incomplete; tokenise the corpus again.")
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


class TokenBlocks(torch.utils.data.Dataset):
    """Packed blocks of `block_size` tokens over a split's shards: block i is tokens [i * T, (i + 1) * T) of the
    stream, as `pack_dataset` cuts them (the final partial block dropped), with document positions from the index
    when `document_positions`. Map-style, so any sampler can address any block in O(1)."""

    def __init__(self, shards: TokenShards, block_size: int, document_positions: bool = True) -> None:
        if block_size < 2:
            raise ValueError(f"block_size={block_size} must be at least 2 (an input token and its next-token label).")
        if shards.num_tokens < block_size:
            raise ValueError(
                f"{shards.folder} ({shards.split}) has {shards.num_tokens} tokens, fewer than one block of "
                f"block_size={block_size}; use a smaller block_size or more data."
            )
        self.shards = shards
        self.block_size = block_size
        self.document_positions = document_positions

    def __len__(self) -> int:
        return self.shards.num_tokens // self.block_size

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        if not 0 <= i < len(self):
            raise IndexError(f"block {i} of {len(self)}")
        start, stop = i * self.block_size, (i + 1) * self.block_size
        item = {"input_ids": self.shards.tokens(start, stop)}
        if self.document_positions:
            item["position_ids"] = self.shards.positions(start, stop)
        return item

    def documents_per_block(self) -> int:
        """The most documents any block holds (a block's first token starts one, as in `document_starts`), from the
        index alone."""
        best, last_block, last_count = 0, -1, 0  # blocks rise through the files: carry the last one across
        for starts in self.shards.document_starts():
            inside = starts[(starts % self.block_size != 0) & (starts < len(self) * self.block_size)]
            blocks, counts = np.unique(inside // self.block_size, return_counts=True)
            if len(blocks) == 0:
                continue
            if blocks[0] == last_block:
                counts[0] += last_count
            else:
                best = max(best, last_count)
            best = max(best, int(counts[:-1].max(initial=0)))
            last_block, last_count = int(blocks[-1]), int(counts[-1])
        return 1 + max(best, last_count)


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST",
    "ShardFormatError",
    "TokenBlocks",
    "TokenShards",
    "check_tokenizer",
    "is_token_shards",
    "read_manifest",
    "token_dtype",
    "tokenizer_fingerprint",
]
