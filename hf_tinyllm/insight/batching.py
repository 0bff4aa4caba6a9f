"""Batching stabilises learning: the same model, from the same initial weights, trained at several batch sizes on the
SAME token stream for the SAME number of tokens.

A small batch takes many steps, each from a noisy gradient estimate; a large batch takes few steps, each from a
smoother one. Plotted against tokens the runs compare sample efficiency; plotted against steps they compare how much
each step is worth (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training": below the critical batch
size, doubling the batch halves the steps at about the same tokens; above it, extra tokens per step are wasted).

Every run reads the blocks in one seeded order (epochs of a seeded permutation), grouped into batches of its own
size, so the runs differ only in how the stream is batched and in the learning rate the scaling rule gives them. The
data, the order, the optimizer and the step are `small_runs`', shared with the other training studies.
"""

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedConfig, get_constant_schedule_with_warmup

from .figures import pyplot, save_figure
from .model_parts import InsightError
from .small_runs import (
    WARMUP_FRACTION,
    TinyWorldBlocks,
    block_order,
    new_optimizer,
    tinyworld_blocks,
    train_step,
    validation_loss,
)

LR_SCALINGS = ("sqrt", "none", "linear")


@dataclass
class BatchRun:
    batch_size: int
    learning_rate: float  # peak, after the scaling rule
    steps: int  # total_tokens // (batch_size * block_size)
    tokens: list[int]  # (steps,) tokens seen after each step
    train_losses: list[float]  # (steps,) the loss of each step's batch, before its update
    eval_steps: list[int]  # (E,) steps after which the validation loss was measured (0 = initial weights)
    eval_tokens: list[int]  # (E,) the same points in tokens, equal across runs
    validation_losses: list[float]  # (E,) mean next-token cross-entropy (nats) on the validation blocks
    final_validation_loss: float
    train_loss_noise: float  # std of consecutive training-loss differences, last half of the steps (nan if < 3)
    seconds: float  # wall time of the run, evaluations included


@dataclass
class BatchingResult:
    runs: list[BatchRun]  # one per batch size, in the order given
    total_tokens: int  # tokens every run saw (the request rounded down to a multiple of lcm(batch sizes) * T)
    block_size: int  # T
    base_learning_rate: float  # the learning rate of the smallest batch
    lr_scaling: str
    warmup_steps_fraction: float
    num_parameters: int
    seed: int


def scaled_learning_rate(learning_rate: float, batch_size: int, smallest: int, lr_scaling: str) -> float:
    """`learning_rate` (meant for the `smallest` batch) scaled to `batch_size`: times (b / b_min) ** 0.5 for
    "sqrt", ** 1 for "linear", unchanged for "none"."""
    exponent = {"sqrt": 0.5, "linear": 1.0, "none": 0.0}[lr_scaling]
    return learning_rate * (batch_size / smallest) ** exponent


def batch_size_sweep(
    config: PreTrainedConfig,
    train_blocks: torch.Tensor,
    validation_blocks: torch.Tensor,
    train_positions: torch.Tensor | None = None,
    validation_positions: torch.Tensor | None = None,
    batch_sizes: tuple[int, ...] = (4, 16, 64),
    total_tokens: int = 2**18,
    learning_rate: float = 3e-3,
    lr_scaling: str = "sqrt",
    eval_points: int = 8,
    seed: int = 0,
) -> BatchingResult:
    """Train a fresh model of `config` once per batch size, all from the same seeded initial weights, for the same
    number of tokens; record the training loss of every step and the validation loss at `eval_points` token counts.

    `train_blocks` (N, T) and `validation_blocks` (M, T) are token ids; the optional `*_positions` (same shapes) are
    packed-document position ids, passed to the model with them. Each run uses the training script's AdamW
    (`training.optim.build_optimizers` with `OptimArguments` defaults: betas 0.9/0.95, weight decay 0.1 on the blocks'
    2-D weights only, gradient clipping at 1.0) and a linear warmup
    over the first 5% of its steps (so the same share of tokens for every batch size), then a constant rate.

    `learning_rate` is for the smallest batch; `lr_scaling` sets it for the others. "sqrt" (lr grows with
    sqrt(batch)) is the usual rule for Adam: it keeps the noise of the update about constant (Hoffer et al. 2017,
    "Train longer, generalize better"; Malladi et al. 2022, "On the SDEs and Scaling Rules for Adaptive Gradient
    Algorithms"), whereas the "linear" rule (Goyal et al. 2017) is derived for SGD; "none" keeps one learning rate.

    Runs on the device of `train_blocks`, in a plain torch loop; the models are its own and the global RNG state is
    restored afterwards, so nothing of the caller's changes. Deterministic under `seed`.
    """
    batch_sizes = _check_inputs(train_blocks, validation_blocks, train_positions, validation_positions, batch_sizes,
                                lr_scaling, eval_points)  # fmt: skip
    block_size = train_blocks.shape[1]
    unit = math.lcm(*batch_sizes) * block_size  # the smallest token count every batch size reaches in whole steps
    units = total_tokens // unit
    if units == 0:
        raise InsightError(
            f"total_tokens={total_tokens} is less than one step of every batch size (lcm({batch_sizes}) x block "
            f"{block_size} = {unit} tokens); use --total_tokens {unit} or more."
        )
    total = units * unit
    eval_tokens = sorted({round(i * units / (eval_points - 1)) * unit for i in range(eval_points)})
    smallest = min(batch_sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initial = AutoModelForCausalLM.from_config(config)
        runs = []
        for batch_size in batch_sizes:
            lr = scaled_learning_rate(learning_rate, batch_size, smallest, lr_scaling)
            runs.append(_train_run(initial, batch_size, lr, total, eval_tokens, train_blocks, validation_blocks,
                                   train_positions, validation_positions, seed))  # fmt: skip
    num_parameters = sum(p.numel() for p in initial.parameters())
    return BatchingResult(runs, total, block_size, learning_rate, lr_scaling, WARMUP_FRACTION, num_parameters, seed)


def _check_inputs(
    train_blocks: torch.Tensor,
    validation_blocks: torch.Tensor,
    train_positions: torch.Tensor | None,
    validation_positions: torch.Tensor | None,
    batch_sizes: tuple[int, ...],
    lr_scaling: str,
    eval_points: int,
) -> tuple[int, ...]:
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1 or len(set(batch_sizes)) != len(batch_sizes):
        raise InsightError(f"batch_sizes={batch_sizes} must be distinct positive integers, e.g. 4,16,64.")
    if lr_scaling not in LR_SCALINGS:
        raise InsightError(f"lr_scaling={lr_scaling!r} is not known; choose one of {', '.join(LR_SCALINGS)}.")
    if eval_points < 2:
        raise InsightError(f"eval_points={eval_points} must be at least 2 (the initial and the final loss).")
    if train_blocks.ndim != 2 or validation_blocks.ndim != 2 or len(train_blocks) == 0 or len(validation_blocks) == 0:
        raise InsightError("train and validation blocks must be non-empty (N, T) tensors of token ids.")
    if train_blocks.shape[1] != validation_blocks.shape[1]:
        raise InsightError(f"train blocks have length {train_blocks.shape[1]} but validation blocks "
                           f"{validation_blocks.shape[1]}; pack both with the same block_size.")  # fmt: skip
    for name, positions, blocks in (("train", train_positions, train_blocks),
                                    ("validation", validation_positions, validation_blocks)):  # fmt: skip
        if positions is not None and positions.shape != blocks.shape:
            raise InsightError(f"{name} position_ids {tuple(positions.shape)} do not match its blocks "
                               f"{tuple(blocks.shape)}; pass the position_ids packed with them.")  # fmt: skip
    return batch_sizes


def _train_run(
    initial,
    batch_size: int,
    learning_rate: float,
    total_tokens: int,
    eval_tokens: list[int],
    train_blocks: torch.Tensor,
    validation_blocks: torch.Tensor,
    train_positions: torch.Tensor | None,
    validation_positions: torch.Tensor | None,
    seed: int,
) -> BatchRun:
    start_time = time.perf_counter()
    block_size = train_blocks.shape[1]
    tokens_per_step = batch_size * block_size
    steps = total_tokens // tokens_per_step
    model = copy.deepcopy(initial).to(train_blocks.device).train()
    optimizer = new_optimizer(model, learning_rate)
    # warmup over the same share of the steps, i.e. of the token budget, for every batch size
    scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=round(WARMUP_FRACTION * steps))
    order = block_order(len(train_blocks), steps * batch_size, seed, train_blocks.device)
    eval_steps = [t // tokens_per_step for t in eval_tokens]
    validation_losses, train_losses = [], []
    if 0 in eval_steps:
        validation_losses.append(validation_loss(model, validation_blocks, validation_positions))
    for step in range(1, steps + 1):
        rows = order[(step - 1) * batch_size : step * batch_size]
        pos = None if train_positions is None else train_positions[rows]
        train_losses.append(train_step(model, optimizer, train_blocks[rows], pos))
        scheduler.step()
        if step in eval_steps:
            validation_losses.append(validation_loss(model, validation_blocks, validation_positions))
    late = np.asarray(train_losses[len(train_losses) // 2 :])
    noise = float(np.diff(late).std()) if len(late) >= 3 else float("nan")
    return BatchRun(
        batch_size=batch_size,
        learning_rate=learning_rate,
        steps=steps,
        tokens=[s * tokens_per_step for s in range(1, steps + 1)],
        train_losses=train_losses,
        eval_steps=eval_steps,
        eval_tokens=list(eval_tokens),
        validation_losses=validation_losses,
        final_validation_loss=validation_losses[-1],
        train_loss_noise=noise,
        seconds=time.perf_counter() - start_time,
    )


def plot_batching(result: BatchingResult, path: str | Path) -> Path:
    """Two panels: loss against tokens (training loss thin, validation loss as markers and line) and loss against
    steps (log axis); one colour per batch size."""
    plt = pyplot()

    fig, (by_tokens, by_steps) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.75, len(result.runs)))
    for run, colour in zip(result.runs, colours, strict=True):
        label = f"batch {run.batch_size} (lr {run.learning_rate:.2g}, {run.steps} steps)"
        by_tokens.plot(run.tokens, run.train_losses, color=colour, lw=0.6, alpha=0.45)
        by_tokens.plot(run.eval_tokens, run.validation_losses, "o-", color=colour, ms=4, lw=1.5, label=label)
        by_steps.plot(range(1, run.steps + 1), run.train_losses, color=colour, lw=0.6, alpha=0.45)
        later = [i for i, s in enumerate(run.eval_steps) if s > 0]  # step 0 has no place on a log axis
        by_steps.plot([run.eval_steps[i] for i in later], [run.validation_losses[i] for i in later], "o-",
                      color=colour, ms=4, lw=1.5, label=label)  # fmt: skip
    top = max(run.validation_losses[0] for run in result.runs)
    bottom = min(min(run.validation_losses + run.train_losses) for run in result.runs)
    for ax in (by_tokens, by_steps):
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.1 * (top - bottom))
        ax.set_ylabel("loss (nats / token)")
        ax.grid(alpha=0.3)
    by_tokens.set_xlabel("tokens seen")
    by_tokens.set_title(f"Equal tokens ({result.total_tokens:,}): thin = training, dots = validation", fontsize=10)
    by_tokens.legend(fontsize=8)
    by_steps.set_xscale("log")
    by_steps.set_xlabel("optimizer steps (log)")
    by_steps.set_title(f"The same runs per step ({result.lr_scaling} lr scaling)", fontsize=10)
    return save_figure(fig, path)


__all__ = [
    "LR_SCALINGS",
    "BatchRun",
    "BatchingResult",
    "TinyWorldBlocks",
    "batch_size_sweep",
    "plot_batching",
    "scaled_learning_rate",
    "tinyworld_blocks",
]
