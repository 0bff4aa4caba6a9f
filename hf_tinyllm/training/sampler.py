"""The sampler of training on token shards: every process's blocks of every epoch, and a resume that replays
nothing.

Each epoch is a permutation of all blocks drawn from `seed + epoch` (the same on every process), cut to whole global
batches (`num_replicas * batch_size` blocks; the remainder, fewer than one global batch, is left out that epoch and
stated by `dropped_per_epoch`), and dealt out rank-strided: process r takes positions r, r + W, r + 2W, ... So the
processes' k-th batches together are exactly the k-th batch of one process with a W times larger batch, every process
runs the same number of steps (none waits on another at an epoch's end), and the position in training is two
numbers, (epoch, batches consumed in it), which the loop checkpoints: resuming sets them (`set_position`) and
starts there, in O(1), where a replay would draw and discard every batch before it.
"""

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    def __init__(self, num_blocks: int, batch_size: int, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas}).")
        self.num_blocks, self.batch_size = num_blocks, batch_size
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed
        self.epoch, self.start_batch = 0, 0

    @property
    def batches_per_epoch(self) -> int:
        return self.num_blocks // (self.num_replicas * self.batch_size)

    @property
    def dropped_per_epoch(self) -> int:
        """Blocks left out of each epoch (a different set every epoch): fewer than one global batch."""
        return self.num_blocks - self.batches_per_epoch * self.num_replicas * self.batch_size

    def set_position(self, epoch: int, batches_consumed: int) -> None:
        """Start the next iteration at batch `batches_consumed` of `epoch`."""
        if not 0 <= batches_consumed <= self.batches_per_epoch:
            raise ValueError(f"batches_consumed={batches_consumed} is outside an epoch of {self.batches_per_epoch}.")
        self.epoch, self.start_batch = epoch, batches_consumed

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """All processes' blocks of `epoch` in the order they are consumed (global batch after global batch)."""
        order = torch.randperm(self.num_blocks, generator=torch.Generator().manual_seed(self.seed + epoch))
        return order[: self.batches_per_epoch * self.num_replicas * self.batch_size]

    def __len__(self) -> int:
        return (self.batches_per_epoch - self.start_batch) * self.batch_size

    def __iter__(self) -> Iterator[int]:
        mine = self.epoch_order(self.epoch)[self.rank :: self.num_replicas]
        yield from mine[self.start_batch * self.batch_size :].tolist()


__all__ = ["EpochSampler"]
