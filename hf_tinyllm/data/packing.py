"""Tokenise documents with batched `datasets.map`, pack them into fixed-length blocks, and collate batches.

Every document becomes `[bos] tokens [eos]`; packing concatenates documents in order and cuts the stream into
blocks of `block_size` tokens, so the end-of-text token separates documents inside a block. With
`document_positions=True` each block also gets `position_ids` that restart at every document start: transformers'
mask builder then confines attention to the document (packed-sequence support), and RoPE/learned positions see the
same positions as for the document alone.
"""

from collections.abc import Iterator

import numpy as np
import torch
from datasets import Dataset, DatasetDict, IterableDataset
from transformers import PreTrainedConfig, PreTrainedTokenizerBase

from .loading import unix_newlines


def tokenize_dataset(
    dataset: Dataset | IterableDataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str = "text",
    num_proc: int | None = None,
    batch_size: int = 1000,
) -> Dataset | IterableDataset:
    """Columns `input_ids` (`[bos] text [eos]`) and `num_bytes` (UTF-8 bytes of the text + 1 for the separator,
    the convention of the bits-per-byte metric and the TinyWorld floor). Empty texts are dropped. On a dataset
    backed by files (loaded from disk), `map` caches the result, so a second run with the same data and tokenizer
    reads the cache instead of tokenising again."""
    check_separator(tokenizer)

    def tokenize(batch: dict) -> dict:
        ids, num_bytes = encode_documents(tokenizer, [t for t in batch[text_column] if t])
        return {"input_ids": ids, "num_bytes": num_bytes}

    kwargs = dict(batched=True, batch_size=batch_size, remove_columns=dataset.column_names)
    if isinstance(dataset, Dataset):
        if len(dataset) == 0:
            raise ValueError("The dataset is empty; nothing to tokenise. Check the data source and any filters.")
        kwargs.update(num_proc=num_proc, desc="Tokenising")
    tokenized = dataset.map(tokenize, **kwargs)
    if isinstance(tokenized, Dataset) and len(tokenized) == 0:
        raise ValueError(f"Every text in column {text_column!r} is empty; nothing to train on.")
    return tokenized


def check_separator(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.eos_token_id is None:
        raise ValueError("The tokenizer has no eos token; documents need an end-of-text separator for packing.")


def encode_documents(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> tuple[list[list[int]], list[int]]:
    """Non-empty texts as documents, `[bos] tokens [eos]`, with their UTF-8 bytes + 1 for the separator (the
    convention of the bits-per-byte metric and the TinyWorld floor). The one encoding of every data path."""
    texts = [unix_newlines(t) for t in texts]
    ids = tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
    eos = tokenizer.eos_token_id
    return [[*row, eos] for row in ids], [len(t.encode("utf-8")) + 1 for t in texts]


def document_position_ids(input_ids: np.ndarray, bos_token_id: int) -> np.ndarray:
    """Positions that restart at 0 on every `bos` token (each document's first token): (N,) -> (N,)."""
    index = np.arange(len(input_ids))
    starts = np.where(input_ids == bos_token_id, index, 0)
    return index - np.maximum.accumulate(starts)


def pack_dataset(
    tokenized: Dataset | IterableDataset,
    block_size: int,
    document_positions: bool = False,
    bos_token_id: int | None = None,
) -> Dataset | IterableDataset:
    """Blocks of exactly `block_size` tokens cut from the concatenated token stream, in order. Lossless: the blocks
    concatenated are the stream's first `len(blocks) * block_size` tokens; only the final partial block (fewer than
    `block_size` tokens) is dropped."""
    if block_size < 2:
        raise ValueError(f"block_size={block_size} must be at least 2 (an input token and its next-token label).")
    if document_positions and bos_token_id is None:
        raise ValueError("document_positions=True needs bos_token_id (documents start at bos).")
    if isinstance(tokenized, IterableDataset):
        return IterableDataset.from_generator(
            _stream_blocks,
            gen_kwargs=dict(
                tokenized=tokenized,
                block_size=block_size,
                bos_token_id=bos_token_id,
                document_positions=document_positions,
            ),
        )
    stream = np.asarray(tokenized.data.column("input_ids").combine_chunks().flatten(), dtype=np.int64)
    num_blocks = len(stream) // block_size
    if num_blocks == 0:
        raise ValueError(
            f"The corpus has {len(stream)} tokens, fewer than one block of block_size={block_size}; use a smaller "
            "block_size or more data."
        )
    blocks = stream[: num_blocks * block_size].reshape(num_blocks, block_size)
    columns = {"input_ids": blocks}
    if document_positions:
        columns["position_ids"] = np.stack([document_position_ids(b, bos_token_id) for b in blocks])
    return Dataset.from_dict(columns)


def _stream_blocks(
    tokenized: IterableDataset, block_size: int, bos_token_id: int | None, document_positions: bool
) -> Iterator[dict]:
    buffer: list[int] = []
    for example in tokenized:
        buffer.extend(example["input_ids"])
        while len(buffer) >= block_size:
            block, buffer = np.asarray(buffer[:block_size]), buffer[block_size:]
            item = {"input_ids": block.tolist()}
            if document_positions:
                item["position_ids"] = document_position_ids(block, bos_token_id).tolist()
            yield item


def check_block_size(block_size: int, config: PreTrainedConfig) -> None:
    if block_size > config.max_position_embeddings:
        raise ValueError(
            f"block_size={block_size} is larger than the model's max_position_embeddings="
            f"{config.max_position_embeddings}; use block_size <= {config.max_position_embeddings} or a model with "
            "more positions."
        )


def split_train_validation(dataset: Dataset, validation_fraction: float = 0.05, seed: int = 0) -> DatasetDict:
    """A deterministic (seeded) train/validation split of a map-style dataset."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction={validation_fraction} must be in (0, 1), e.g. 0.05.")
    if len(dataset) < 2:
        raise ValueError(f"Cannot split {len(dataset)} document(s) into train and validation; add more data.")
    parts = dataset.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
    return DatasetDict(train=parts["train"], validation=parts["test"])


class DataCollatorForCausalLM:
    """Batches for the Accelerate loop and the Trainer alike.

    Packed blocks (equal length) are stacked; variable-length examples are right-padded with `pad_token_id` and get
    an `attention_mask`. `labels` are the input ids with padding set to -100; the model shifts them (never shift
    here). `position_ids` pass through when the examples carry them.

    `flatten=True` (flash attention's padding-free contract, as transformers' `DataCollatorWithFlattening`) turns
    packed blocks with document positions into one row of B * T tokens with the documents' boundaries:
    `cu_seq_lens_q/k` (int32, padded to `max_documents + 1` entries with the total length, so their shape never
    changes and a compiled step never recompiles) and `max_length_q/k` (the block size, an upper bound). The first
    label of every block after the first is -100, so the loss is exactly the stacked batch's.
    """

    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None = None, flatten: bool = False,
        max_documents: int | None = None,
    ) -> None:  # fmt: skip
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.flatten = flatten
        self.max_documents = max_documents

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        lengths = [len(e["input_ids"]) for e in examples]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = self.pad_to_multiple_of * -(-width // self.pad_to_multiple_of)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, (example, n) in enumerate(zip(examples, lengths, strict=True)):
            input_ids[row, :n] = torch.as_tensor(example["input_ids"])
            mask[row, :n] = 1
        batch = {"input_ids": input_ids, "labels": input_ids.masked_fill(mask == 0, -100)}
        if min(lengths) != width:
            batch["attention_mask"] = mask
        if "position_ids" in examples[0]:
            positions = torch.zeros_like(input_ids)
            for row, (example, n) in enumerate(zip(examples, lengths, strict=True)):
                positions[row, :n] = torch.as_tensor(example["position_ids"])
            batch["position_ids"] = positions
        return flatten_packed_batch(batch, self.max_documents) if self.flatten else batch


def documents_per_block(blocks) -> int:
    """The most documents any block holds (a document starts wherever positions do not grow by one): with the
    micro-batch size, the fixed size of a flattened batch's boundary tensors (`max_documents`). Blocks read from
    token shards (`TokenBlocks`) count them from their index."""
    if not isinstance(blocks, Dataset):
        return blocks.documents_per_block()
    positions = np.asarray(blocks.data.column("position_ids").combine_chunks().flatten()).reshape(len(blocks), -1)
    return int(document_starts(positions).sum(-1).max())


def document_starts(positions: np.ndarray) -> np.ndarray:
    """(..., T) bool: where a document starts, by transformers' packed-sequence rule (the position does not grow by
    one); every row's first token starts one."""
    starts = np.ones_like(positions, dtype=bool)
    starts[..., 1:] = positions[..., 1:] != positions[..., :-1] + 1
    return starts


def flatten_packed_batch(batch: dict[str, torch.Tensor], max_documents: int | None = None) -> dict:
    """A (B, T) batch of packed blocks with document positions as one (1, B * T) row with its document boundaries
    (see `DataCollatorForCausalLM`). Computed on the host, in the loader: the training step reads nothing back."""
    if "position_ids" not in batch or "attention_mask" in batch:
        raise ValueError(
            "flatten=True needs packed blocks with document positions (pack_dataset(..., document_positions=True), "
            "--document_positions true) and no padding."
        )
    positions = batch["position_ids"].numpy()
    rows, width = positions.shape
    if (positions[:, 0] != 0).any():
        raise ValueError("flatten=True needs blocks whose positions start at 0, as pack_dataset writes them.")
    starts = np.flatnonzero(document_starts(positions).reshape(-1))
    capacity = len(starts) if max_documents is None else max_documents
    if len(starts) > capacity:
        raise ValueError(
            f"A batch holds {len(starts)} documents, more than max_documents={capacity}; raise max_documents to at "
            "least the micro-batch size times documents_per_block(blocks)."
        )
    boundaries = np.full(capacity + 1, rows * width, dtype=np.int32)
    boundaries[: len(starts)] = starts
    labels = batch["labels"].clone()
    labels[1:, 0] = -100  # the last token of a block predicts nothing, as in the stacked batch
    cu_seq_lens = torch.from_numpy(boundaries)
    return {
        "input_ids": batch["input_ids"].reshape(1, -1),
        "labels": labels.reshape(1, -1),
        "position_ids": batch["position_ids"].reshape(1, -1),
        "cu_seq_lens_q": cu_seq_lens,
        "cu_seq_lens_k": cu_seq_lens,
        "max_length_q": width,
        "max_length_k": width,
    }


__all__ = [
    "DataCollatorForCausalLM",
    "check_block_size",
    "check_separator",
    "document_position_ids",
    "document_starts",
    "documents_per_block",
    "encode_documents",
    "flatten_packed_batch",
    "pack_dataset",
    "split_train_validation",
    "tokenize_dataset",
]
