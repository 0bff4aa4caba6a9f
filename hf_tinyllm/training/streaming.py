"""Streaming training (`--streaming`): text that is neither in memory nor tokenised (a Hub dataset, a folder of
parquet or JSON Lines) read, tokenised and packed as training goes, with an exact resume.

- The source is a `datasets.IterableDataset`; `split_dataset_by_node` gives each process whole shards (files), and
  inside a process `datasets` gives each loader worker whole shards of those. Documents are filtered (the validation
  hold-out), tokenised (`IterableDataset.map`) and packed into blocks by `PackedStream`.
- The loader is torchdata's `StatefulDataLoader`: its state holds every worker's `PackedStream.state_dict()` (the
  source's position from `datasets`, the tokens left over for the next block, the epoch) as of the last batch the
  loop received. Each process saves its own in every checkpoint (`loader_state_<rank>.pt`), since one saved state for
  all processes would resume every process at the main one's position.
- Exact resume is only possible when every worker owns whole shards: a shard count that does not divide over
  processes x workers is refused, as is resuming with another process or worker count (the checkpoint names them).
  No shuffle buffer is offered (datasets drops a buffer's contents on resume); shuffled training reads token shards.
- A process whose shards run out starts its next epoch by itself: every process always has a next batch, so none
  waits on another when shards are uneven, and no step needs a collective to agree on an epoch's end.
"""

from collections.abc import Iterator

import numpy as np
import torch
from datasets import IterableDataset
from datasets.distributed import split_dataset_by_node

from ..data.packing import document_position_ids, tokenize_dataset


class PackedStream(torch.utils.data.IterableDataset):
    """Blocks of `block_size` tokens packed in order from a tokenised stream (`input_ids` per document), endlessly:
    epoch after epoch of the source. Stateful for `StatefulDataLoader`."""

    def __init__(self, tokenized: IterableDataset, block_size: int, document_positions: bool, bos_token_id: int):
        self.tokenized, self.block_size = tokenized, block_size
        self.document_positions, self.bos_token_id = document_positions, bos_token_id
        self.epoch, self.buffer, self.resumed = 0, [], False

    def for_process(self, rank: int, world_size: int) -> "PackedStream":
        """This process's stream: its whole shards of the source."""
        return PackedStream(split_dataset_by_node(self.tokenized, rank, world_size), self.block_size,
                            self.document_positions, self.bos_token_id)  # fmt: skip

    def documents_per_block(self) -> int:
        """A bound on the documents a block holds (each has at least its bos and eos), for flattened batches."""
        return self.block_size // 2 + 1

    @property
    def num_shards(self) -> int:
        return self.tokenized.num_shards

    def __iter__(self) -> Iterator[dict]:
        while True:
            self.tokenized.set_epoch(self.epoch)
            fresh, self.resumed = not self.resumed, False  # a resumed epoch may have nothing left
            documents = 0
            for example in self.tokenized:
                documents += 1
                self.buffer.extend(example["input_ids"])
                while len(self.buffer) >= self.block_size:
                    block = np.asarray(self.buffer[: self.block_size], dtype=np.int64)
                    del self.buffer[: self.block_size]
                    item = {"input_ids": block}
                    if self.document_positions:
                        item["position_ids"] = document_position_ids(block, self.bos_token_id)
                    yield item
            if documents == 0 and fresh:
                raise ValueError(
                    "A loader worker's shards of the streamed dataset hold no documents; use fewer processes or "
                    "--dataloader_num_workers, or more files."
                )
            self.epoch += 1

    def state_dict(self) -> dict:
        return {"source": self.tokenized.state_dict(), "buffer": list(self.buffer), "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.tokenized.load_state_dict(state["source"])
        self.buffer, self.epoch, self.resumed = list(state["buffer"]), state["epoch"], True


def check_layout(num_shards: int, world_size: int, num_workers: int, source: str) -> None:
    """Every loader worker of every process must own whole shards for the position to be exact."""
    readers = world_size * max(1, num_workers)
    if num_shards % readers:
        raise ValueError(
            f"--streaming: {source} has {num_shards} shard(s) (files), which do not divide over {world_size} "
            f"process(es) x {max(1, num_workers)} loader worker(s); an exact resume needs each reader to own whole "
            f"shards. Split the data into a multiple of {readers} files, change --dataloader_num_workers, or tokenise "
            "it into token shards (`tinyllm tokenize`), which any number of processes reads."
        )


def packed_stream(texts: IterableDataset, tokenizer, block_size: int, document_positions: bool) -> PackedStream:
    """Tokenised and packed as training goes; call `for_process` before iterating."""
    tokens = tokenize_dataset(texts, tokenizer).select_columns(["input_ids"])
    return PackedStream(tokens, block_size, document_positions, tokenizer.bos_token_id)


__all__ = ["PackedStream", "check_layout", "packed_stream"]
