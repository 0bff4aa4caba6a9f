"""The machinery the training studies share (`batching`, `capacity`, `memorisation`): TinyWorld documents and their
packed blocks, a seeded order of blocks the same for every run, the training script's AdamW, one training step, and
a plain torch loop that trains for a budget of optimizer steps or of wall-clock seconds.

A run of a study is a few hundred steps of a small model on the machine's own device, in a plain loop, so that the
runs of a study differ only in what the study varies (a batch size, a width, a slice of the data).
"""

import itertools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from datasets import Dataset
from torch import nn
from transformers import PreTrainedTokenizerBase

from ..data.tinyworld import TinyWorld, TinyWorldConfig, tinyworld_dataset
from ..training.arguments import OptimArguments
from ..training.optim import build_optimizers
from .model_parts import InsightError

WARMUP_FRACTION = 0.05  # of each run's budget (steps or seconds)
EVAL_BATCH_ROWS = 64
OPTIM_DEFAULTS = OptimArguments()  # the training script's AdamW: betas, weight decay groups, clipping, min lr ratio


@dataclass
class TinyWorldBlocks:
    train: torch.Tensor  # (N, T) token ids
    train_positions: torch.Tensor  # (N, T) positions restarting at each document's bos
    validation: torch.Tensor  # (M, T)
    validation_positions: torch.Tensor  # (M, T)


@dataclass
class TinyWorldCorpus:
    world: TinyWorld  # the generator: its configuration, exact floor and the problems of its training documents
    train_documents: Dataset  # text, nll_bits (exact -log2 p of the document), family, num_bytes
    validation_documents: Dataset  # drawn independently of the training documents
    heldout_problems: list[dict]  # prompt/answer of the arithmetic problems no document contains
    floor_bits_per_byte: float  # the corpus entropy floor (expected over all TinyWorld text)


@dataclass
class TrainingTrace:
    steps: int
    tokens: int  # steps * batch_size * T
    seconds: float  # wall time of the training steps alone (no evaluation)
    train_losses: list[float]  # (steps,) the loss of each step's batch, before its update
    elapsed: list[float]  # (steps,) training seconds after each step


def demo_family_weights() -> dict[str, float]:
    """TinyWorld's family weights in the demo recipe (`configs/runs/demo.yaml`: half the documents arithmetic)."""
    import yaml

    from ..resources import resource_path

    recipe = yaml.safe_load(resource_path("configs", "runs", "demo.yaml").read_text())
    return json.loads(recipe["tinyworld_weights"])


def tinyworld_corpus(
    num_documents: int,
    num_validation_documents: int,
    family_weights: dict[str, float] | None = None,
    seed: int = 0,
) -> TinyWorldCorpus:
    """TinyWorld documents with their exact code lengths, the held-out arithmetic problems and the floor.

    Training documents are drawn one after the other from one seeded generator, so the first n documents of a corpus
    are the n documents of a smaller corpus of the same seed: slices of a corpus are nested."""
    if num_documents < 1 or num_validation_documents < 1:
        raise InsightError(f"A corpus of {num_documents} training and {num_validation_documents} validation "
                           "documents is empty; ask for at least one of each.")  # fmt: skip
    config = TinyWorldConfig(seed=seed, num_train_documents=num_documents,
                             num_validation_documents=num_validation_documents)  # fmt: skip
    if family_weights is not None:
        config.family_weights = dict(family_weights)
    world = TinyWorld(config)
    splits = tinyworld_dataset(world)
    heldout = [{"prompt": row["prompt"], "answer": row["answer"]} for row in splits["heldout_arithmetic"]]
    return TinyWorldCorpus(world, splits["train"], splits["validation"], heldout, world.floor_bits_per_byte())


def pack_documents(
    documents: Dataset, tokenizer: PreTrainedTokenizerBase, block_size: int, name: str = "TinyWorld documents"
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """`documents` tokenised (`[bos] text [eos]`) and packed with the library's pipeline into (N, T) blocks with
    document position ids, and the indices of the documents that lie whole inside one block: the ones a model
    trained on the blocks saw as they are scored alone (a block boundary cuts the others in two, each part read
    without the other; packing drops the final partial block). Errors name the documents `name`."""
    import datasets

    from ..data.packing import pack_dataset, tokenize_dataset

    bars_were_on = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        tokenized = tokenize_dataset(documents, tokenizer)
        packed = pack_dataset(tokenized, block_size, document_positions=True, bos_token_id=tokenizer.bos_token_id)
    except ValueError as err:
        raise InsightError(f"{name}: {err}") from err
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if len(packed) == 0:
        raise InsightError(f"{name}: {len(documents)} documents make fewer than {block_size} tokens, not one block; "
                           "use more documents or a smaller block_size.")  # fmt: skip
    ends = list(itertools.accumulate(len(ids) for ids in tokenized["input_ids"]))
    starts = [0, *ends[:-1]]
    intact = [i for i, (start, end) in enumerate(zip(starts, ends, strict=True))
              if start // block_size == (end - 1) // block_size and end <= len(packed) * block_size]  # fmt: skip
    return torch.tensor(packed["input_ids"]), torch.tensor(packed["position_ids"]), intact


def tinyworld_blocks(
    tokenizer: PreTrainedTokenizerBase, block_size: int = 64, num_documents: int = 10_000, seed: int = 0
) -> TinyWorldBlocks:
    """TinyWorld (`num_documents` training documents, a tenth as many for validation, at least 50) tokenised and
    packed with the library's pipeline into (N, T) / (M, T) blocks with document position ids."""
    if num_documents < 1:
        raise InsightError(f"num_documents={num_documents} must be positive, e.g. 10000.")
    world = tinyworld_dataset(TinyWorldConfig(seed=seed, num_train_documents=num_documents,
                                              num_validation_documents=max(50, num_documents // 10)))  # fmt: skip
    packed = {split: pack_documents(world[split], tokenizer, block_size, f"TinyWorld {split} split")[:2]
              for split in ("train", "validation")}  # fmt: skip
    return TinyWorldBlocks(*packed["train"], *packed["validation"])


def _epochs(num_blocks: int, seed: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    while True:
        yield torch.randperm(num_blocks, generator=generator)


def block_order(num_blocks: int, needed: int, seed: int, device: torch.device) -> torch.Tensor:
    """(needed,) block indices: epochs of a seeded permutation, the same for every run."""
    epochs = itertools.islice(_epochs(num_blocks, seed), -(-needed // num_blocks))
    return torch.cat(list(epochs))[:needed].to(device)


def block_batches(num_blocks: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless consecutive (batch_size,) slices of the stream `block_order` starts (for runs of unknown length)."""
    pending = torch.zeros(0, dtype=torch.long)
    for epoch in _epochs(num_blocks, seed):
        pending = torch.cat([pending, epoch])
        while len(pending) >= batch_size:
            yield pending[:batch_size]
            pending = pending[batch_size:]


@torch.no_grad()
def validation_loss(model, blocks: torch.Tensor, positions: torch.Tensor | None) -> float:
    """Mean next-token loss over all (M, T) blocks (every block has T - 1 labels, so rows weigh equally)."""
    model.eval()
    total = 0.0
    for start in range(0, len(blocks), EVAL_BATCH_ROWS):
        ids = blocks[start : start + EVAL_BATCH_ROWS]
        pos = None if positions is None else positions[start : start + EVAL_BATCH_ROWS]
        total += model(input_ids=ids, position_ids=pos, labels=ids, use_cache=False).loss.item() * len(ids)
    model.train()
    return total / len(blocks)


def new_optimizer(model: nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """The training script's AdamW (`build_optimizers` with `OptimArguments` defaults: betas 0.9/0.95, weight decay
    0.1 on the blocks' 2-D weights only) at `learning_rate`."""
    (optimizer,) = build_optimizers(model, replace(OPTIM_DEFAULTS, learning_rate=learning_rate))
    return optimizer


def train_step(
    model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor, positions: torch.Tensor | None
) -> float:
    """One update on the (B, T) blocks `ids`: forward, backward, gradient clipping at the script's 1.0, step; returns
    the batch's loss before the update."""
    loss = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False).loss
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), OPTIM_DEFAULTS.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def schedule_factor(progress: float) -> float:
    """The learning rate over the peak at `progress` (0..1) of a run: linear warmup over the first 5%, then the
    training script's cosine down to `min_lr_ratio` (0.1) at the end, as transformers' "cosine_with_min_lr"."""
    if progress < WARMUP_FRACTION:
        return progress / WARMUP_FRACTION
    decayed = min(1.0, (progress - WARMUP_FRACTION) / (1.0 - WARMUP_FRACTION))
    floor = OPTIM_DEFAULTS.min_lr_ratio
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * decayed))


def check_budget(seconds: float | None, max_steps: int | None) -> None:
    """Exactly one budget: positive seconds of training, or a positive whole number of steps."""
    if (seconds is None) == (max_steps is None):
        raise InsightError("Give one training budget, seconds or max_steps (not both, not neither), e.g. seconds=40.")
    if seconds is not None and not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and seconds > 0):
        raise InsightError(f"seconds={seconds!r} is not a positive budget; use e.g. --seconds 40.")
    if max_steps is not None and (isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1):
        raise InsightError(f"max_steps={max_steps!r} is not a positive whole number of steps; use e.g. "
                           "--max_steps 300.")  # fmt: skip


class BudgetedRun:
    """One model training in place on (N, T) `blocks` in the seeded block order until its budget is spent:
    `max_steps` steps, or as many steps as start within `seconds` of its own training time (evaluation is never
    counted). The learning rate follows `schedule_factor` of the budget's progress (steps done / max_steps, or seconds
    spent / seconds), so a run of either kind warms up and decays over its whole budget. With `max_steps` the run is
    deterministic. `step()` takes one step; `train_for` and `train_interleaved` drive runs to the end."""

    def __init__(
        self,
        model: nn.Module,
        blocks: torch.Tensor,
        positions: torch.Tensor | None,
        batch_size: int,
        learning_rate: float,
        seconds: float | None = None,
        max_steps: int | None = None,
        seed: int = 0,
    ) -> None:
        check_budget(seconds, max_steps)
        if batch_size < 1:
            raise InsightError(f"batch_size={batch_size} must be a positive number of blocks per step, e.g. 16.")
        self.model, self.blocks, self.positions = model.train(), blocks, positions
        self.batch_size, self.learning_rate = batch_size, learning_rate
        self.seconds, self.max_steps = seconds, max_steps
        self.optimizer = new_optimizer(model, learning_rate)
        self.batches = block_batches(len(blocks), batch_size, seed)
        self.losses: list[float] = []
        self.elapsed: list[float] = []
        self.spent = 0.0

    @property
    def progress(self) -> float:
        return len(self.losses) / self.max_steps if self.max_steps is not None else self.spent / self.seconds

    @property
    def done(self) -> bool:
        return self.progress >= 1.0

    def step(self) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate * schedule_factor(self.progress)
        rows = next(self.batches).to(self.blocks.device)
        positions = None if self.positions is None else self.positions[rows]
        started = time.perf_counter()
        self.losses.append(train_step(self.model, self.optimizer, self.blocks[rows], positions))
        self.spent += time.perf_counter() - started
        self.elapsed.append(self.spent)
        if self.done:
            self.model.eval()

    def trace(self) -> TrainingTrace:
        steps = len(self.losses)
        return TrainingTrace(steps, steps * self.batch_size * self.blocks.shape[1], self.spent, self.losses,
                             self.elapsed)  # fmt: skip


def train_for(
    model: nn.Module,
    blocks: torch.Tensor,
    positions: torch.Tensor | None,
    batch_size: int,
    learning_rate: float,
    seconds: float | None = None,
    max_steps: int | None = None,
    seed: int = 0,
) -> TrainingTrace:
    """Train `model` in place to the end of its budget (see `BudgetedRun`); it is left in eval mode."""
    run = BudgetedRun(model, blocks, positions, batch_size, learning_rate, seconds, max_steps, seed)
    return train_interleaved([run])[0]


def train_interleaved(runs: list[BudgetedRun]) -> list[TrainingTrace]:
    """Drive `runs` to the ends of their budgets one step of each in turn, so that a change in the machine's load
    (other processes, thermal throttling) falls on all of them alike; each counts only its own steps' time. The
    models' results are those of running them one after the other (training draws no global randomness)."""
    while not all(run.done for run in runs):
        for run in runs:
            if not run.done:
                run.step()
    for run in runs:
        run.model.eval()
    return [run.trace() for run in runs]


__all__ = [
    "OPTIM_DEFAULTS",
    "WARMUP_FRACTION",
    "BudgetedRun",
    "TinyWorldBlocks",
    "TinyWorldCorpus",
    "TrainingTrace",
    "block_batches",
    "block_order",
    "check_budget",
    "demo_family_weights",
    "new_optimizer",
    "pack_documents",
    "schedule_factor",
    "tinyworld_blocks",
    "tinyworld_corpus",
    "train_for",
    "train_interleaved",
    "train_step",
    "validation_loss",
]
