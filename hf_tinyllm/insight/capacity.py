"""Capacity, or why higher dimensions: models of several widths, trained for the SAME wall-clock time on the same
TinyWorld stream, measured three ways.

A width is the hidden size C; the MLP grows in proportion (intermediate_size * C / C_model), the layers and heads stay
the model's (head_dim = C / heads). Each width starts from its own seeded initial weights and reads the training
blocks in the one seeded order of `small_runs`, with the training script's AdamW, warmup and cosine decay over its
budget. Equal time is the budget a practitioner has (one machine, one afternoon): a wider model does more work per
token, so in the same time it takes fewer steps and sees fewer tokens; every run reports both, so the reader can weigh
capacity against data. The widths train one step each in turn, each counting only its own steps' time, so that a
change in the machine's load during the study falls on all of them alike. Equal time is not reproducible from run to
run on a shared machine; equal training compute is: a budget of FLOPs (`flops`) gives each width the whole steps
that fit in it at `training.throughput`'s count (6 N per token plus attention, the count behind MFU), the yardstick
of scaling laws, deterministic and the same on every machine. A budget of steps (`max_steps`) is deterministic too.

The three measures, all on data no run trained on:
- loss above the floor: validation bits per byte minus TinyWorld's exact code length of the same documents
  (`evaluate_model`'s `gap_bits_per_byte`); 0 is the true distribution, and no model can go below it on held-out text;
- held-out arithmetic: greedy exact match on the problems TinyWorld never puts in a document (`evaluate_model`);
- parallelism of the gender pairs in the input embedding (`geometry.parallelism_score`), against random pairs.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, PreTrainedConfig, PreTrainedTokenizerBase

from ..evaluation import evaluate_model
from ..training.throughput import matmul_parameters, training_flops_per_token
from .figures import pyplot, save_figure
from .geometry import parallelism_score
from .model_parts import InsightError
from .small_runs import BudgetedRun, TinyWorldCorpus, check_budget, pack_documents, train_interleaved

DEFAULT_WIDTHS = (32, 64, 128, 256)
SMOOTHING_STEPS = 20  # the running mean of the training-loss curves in the picture


@dataclass
class WidthRun:
    hidden_size: int
    intermediate_size: int
    head_dim: int
    num_parameters: int
    steps: int
    tokens: int  # steps * batch_size * T: what the run saw in its budget
    train_seconds: float  # wall time of the training steps (the budget; evaluation not counted)
    train_flops: float  # steps * FLOPs of one step (`training.throughput`'s count)
    train_losses: list[float]  # (steps,) nats per token of each step's batch
    elapsed: list[float]  # (steps,) training seconds after each step
    validation_bits_per_byte: float
    loss_above_floor: float  # validation_bits_per_byte - source_bits_per_byte (the same documents)
    heldout_exact_match: float
    parallelism: float  # nan when the tokenizer cannot spell two gender pairs
    parallelism_baseline: float


@dataclass
class CapacityResult:
    runs: list[WidthRun]  # one per width, in the order given
    budget: str  # "seconds", "steps" or "flops"
    seconds: float | None  # the budget of every run, when in seconds
    max_steps: int | None  # ... when in steps
    flops: float | None  # ... when in training FLOPs
    source_bits_per_byte: float  # TinyWorld's exact code length of the validation documents (the floor they share)
    floor_bits_per_byte: float  # the corpus entropy floor (expected over all TinyWorld text)
    num_validation_documents: int
    num_heldout_problems: int
    num_train_blocks: int
    block_size: int
    batch_size: int
    learning_rate: float
    seed: int


def check_widths(widths: Sequence[int]) -> tuple[int, ...]:
    """`widths` as a tuple of distinct positive integers (anything else is an `InsightError`)."""
    widths = tuple(widths)
    if (not widths or any(isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1 for w in widths)
            or len(set(widths)) != len(widths)):  # fmt: skip
        raise InsightError(f"widths={widths} must be distinct positive integers (hidden sizes), e.g. 32,64,128,256.")
    return tuple(int(w) for w in widths)


def check_capacity_budget(seconds: float | None, max_steps: int | None, flops: float | None) -> None:
    """Exactly one budget: seconds, steps (`small_runs.check_budget`) or a positive number of training FLOPs."""
    if flops is None:
        check_budget(seconds, max_steps)
        return
    if seconds is not None or max_steps is not None:
        raise InsightError("Give one training budget, seconds, max_steps or flops (not several), e.g. flops=4e12.")
    if isinstance(flops, bool) or not isinstance(flops, (int, float)) or not math.isfinite(flops) or flops <= 0:
        raise InsightError(f"flops={flops!r} is not a positive budget; use e.g. --flops 4e12.")


def flops_per_step(model: torch.nn.Module, block_size: int, batch_size: int) -> float:
    """Training FLOPs of one step of `batch_size` blocks of `block_size` tokens (`training.throughput`'s count)."""
    per_token = training_flops_per_token(model.config, matmul_parameters(model), block_size)
    return per_token * block_size * batch_size


def steps_in_flops(flops: float, per_step: float, width: int) -> int:
    """The whole steps that fit in `flops` at `per_step` each; an `InsightError` when not even one does."""
    steps = int(flops // per_step)
    if steps < 1:
        raise InsightError(f"flops={flops:.3g} buys width {width} no whole step (one step costs {per_step:.3g} "
                           f"FLOPs); raise the budget, e.g. --flops {100 * per_step:.1e}.")  # fmt: skip
    return steps


def width_config(config: PreTrainedConfig, width: int) -> PreTrainedConfig:
    """`config` at hidden size `width`: the MLP in proportion, the same layers and heads, head_dim = width / heads."""
    heads = getattr(config, "num_attention_heads", None)
    if heads is None or getattr(config, "intermediate_size", None) is None:
        raise InsightError(f"{type(config).__name__} has no num_attention_heads and intermediate_size to scale; "
                           "capacity needs a TinyLLM- or Llama-like config.")  # fmt: skip
    if width % heads:
        raise InsightError(f"Width {width} is not a multiple of the model's {heads} attention heads; use multiples "
                           f"of {heads}, e.g. {heads * 8},{heads * 16},{heads * 32}.")  # fmt: skip
    intermediate = max(1, round(config.intermediate_size * width / config.hidden_size))
    values = {**config.to_dict(), "hidden_size": width, "intermediate_size": intermediate, "head_dim": width // heads}
    try:
        return type(config).from_dict(values)
    except ValueError as err:
        raise InsightError(f"Width {width}: {str(err).strip().splitlines()[0]}") from err


def capacity_sweep(
    config: PreTrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    corpus: TinyWorldCorpus,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    seconds: float | None = None,
    max_steps: int | None = None,
    flops: float | None = None,
    block_size: int = 128,
    batch_size: int = 16,
    learning_rate: float = 6e-3,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> CapacityResult:
    """Train a fresh model of `config` at each width in `widths` for the same budget (`seconds` of training time,
    `max_steps` steps or `flops` training FLOPs: exactly one) on the corpus's packed training documents, then measure
    each on the corpus's validation documents and held-out problems (see the module docstring). Deterministic under
    `seed` with `max_steps` or `flops`; the global RNG state is restored afterwards."""
    widths = check_widths(widths)
    check_capacity_budget(seconds, max_steps, flops)
    configs = [width_config(config, width) for width in widths]  # every width checked before any training
    blocks, positions, _ = pack_documents(corpus.train_documents, tokenizer, block_size, "TinyWorld training split")
    blocks, positions = blocks.to(device), positions.to(device)
    runs, source = [], math.nan
    with torch.random.fork_rng(devices=[]):
        models = []
        for width_cfg in configs:
            torch.manual_seed(seed)
            models.append(AutoModelForCausalLM.from_config(width_cfg).to(device))
        per_step = [flops_per_step(model, block_size, batch_size) for model in models]
        steps = [max_steps] * len(models)
        if flops is not None:  # every width checked before any training
            steps = [steps_in_flops(flops, cost, width) for cost, width in zip(per_step, widths, strict=True)]
        # one step of each width in turn: a change in the machine's load falls on every width alike
        traces = train_interleaved([BudgetedRun(model, blocks, positions, batch_size, learning_rate, seconds, n, seed)
                                    for model, n in zip(models, steps, strict=True)])  # fmt: skip
        for width_cfg, model, trace, cost in zip(configs, models, traces, per_step, strict=True):
            metrics = evaluate_model(model, tokenizer, corpus.validation_documents,
                                     heldout_arithmetic=corpus.heldout_problems,
                                     floor_bits_per_byte=corpus.floor_bits_per_byte)  # fmt: skip
            source = metrics["source_bits_per_byte"]
            parallel, baseline = _parallelism(model, tokenizer, seed)
            runs.append(WidthRun(
                hidden_size=width_cfg.hidden_size, intermediate_size=width_cfg.intermediate_size,
                head_dim=width_cfg.head_dim, num_parameters=sum(p.numel() for p in model.parameters()),
                steps=trace.steps, tokens=trace.tokens, train_seconds=trace.seconds, train_flops=trace.steps * cost,
                train_losses=trace.train_losses,
                elapsed=trace.elapsed, validation_bits_per_byte=metrics["bits_per_byte"],
                loss_above_floor=metrics["gap_bits_per_byte"], heldout_exact_match=metrics["arithmetic_exact_match"],
                parallelism=parallel, parallelism_baseline=baseline,
            ))  # fmt: skip
    return CapacityResult(
        runs=runs, budget="seconds" if seconds is not None else "steps" if max_steps is not None else "flops",
        seconds=seconds, max_steps=max_steps, flops=flops,
        source_bits_per_byte=source, floor_bits_per_byte=corpus.floor_bits_per_byte,
        num_validation_documents=len(corpus.validation_documents), num_heldout_problems=len(corpus.heldout_problems),
        num_train_blocks=len(blocks), block_size=block_size, batch_size=batch_size, learning_rate=learning_rate,
        seed=seed,
    )  # fmt: skip


def _parallelism(model, tokenizer: PreTrainedTokenizerBase, seed: int) -> tuple[float, float]:
    try:
        result = parallelism_score(model, tokenizer, seed=seed)
    except InsightError:  # fewer than two gender pairs in the vocabulary: not measured
        return math.nan, math.nan
    return result.score, result.baseline


def _running_mean(values: list[float], window: int) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    window = max(1, min(window, len(values)))
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.maximum(np.arange(1, len(values) + 1) - window, 0)]) / counts


def budget_text(result: CapacityResult) -> str:
    """The budget every width had, in words."""
    if result.budget == "seconds":
        return f"{result.seconds:g} s of training"
    return f"{result.max_steps} steps" if result.budget == "steps" else f"{result.flops:.3g} training FLOPs"


def plot_capacity(result: CapacityResult, path: str | Path) -> Path:
    """Four panels, one colour per width: the training loss over the budget (running mean), and per width the loss
    above the floor (with the tokens each run saw), held-out arithmetic exact match and gender-pair parallelism."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), dpi=100)
    (curves, gap), (arithmetic, parallel) = axes
    colours = plt.get_cmap("viridis")(np.linspace(0.0, 0.8, len(result.runs)))
    labels = [f"{r.hidden_size}\n{r.num_parameters / 1e6:.2g}M params" for r in result.runs]
    x = np.arange(len(result.runs))
    for run, colour in zip(result.runs, colours, strict=True):
        steps = np.arange(1, run.steps + 1)
        xs = {"seconds": run.elapsed, "steps": steps, "flops": steps * (run.train_flops / run.steps)}[result.budget]
        curves.plot(xs, _running_mean(run.train_losses, SMOOTHING_STEPS), color=colour, lw=1.4,
                    label=f"width {run.hidden_size}: {run.steps} steps, {run.tokens / 1e6:.2f}M tokens")  # fmt: skip
    budget = budget_text(result)
    curves.set_xlabel({"seconds": "training seconds", "steps": "optimizer steps",
                       "flops": "training FLOPs"}[result.budget])  # fmt: skip
    curves.set_ylabel("training loss (nats / token)")
    curves.set_title(f"Equal budget: {budget} each (running mean of {SMOOTHING_STEPS} steps)", fontsize=10)
    curves.legend(fontsize=8)

    bars = gap.bar(x, [r.loss_above_floor for r in result.runs], color=colours)
    for bar, run in zip(bars, result.runs, strict=True):
        gap.annotate(f"{run.loss_above_floor:.3f}\n{run.tokens / 1e6:.2f}M tok", (bar.get_x() + bar.get_width() / 2,
                     bar.get_height()), ha="center", va="bottom", fontsize=8)  # fmt: skip
    gaps = [r.loss_above_floor for r in result.runs]
    if min(gaps) > 0:  # gaps of several orders of magnitude: a log axis keeps the small ones readable
        gap.set_yscale("log")
        gap.set_ylim(min(gaps) / 2, max(gaps) * 4)
    else:  # a gap at or below 0 is sampling noise of a model at the floor
        gap.margins(y=0.25)
    gap.set_ylabel("bits per byte above the floor" + (" (log)" if min(gaps) > 0 else ""))
    gap.set_title(f"Validation loss above TinyWorld's exact floor ({result.source_bits_per_byte:.3f} bpb)\n"
                  "labels: the gap (0 = the true distribution) and the tokens seen", fontsize=10)  # fmt: skip

    bars = arithmetic.bar(x, [100 * r.heldout_exact_match for r in result.runs], color=colours)
    for bar, run in zip(bars, result.runs, strict=True):
        arithmetic.annotate(f"{run.heldout_exact_match:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=8)  # fmt: skip
    arithmetic.set_ylim(0, 105)
    arithmetic.set_ylabel("exact match (%)")
    arithmetic.set_title(f"Held-out arithmetic ({result.num_heldout_problems} problems never in training)",
                         fontsize=10)  # fmt: skip

    parallel.bar(x, [r.parallelism for r in result.runs], color=colours, label="gender pairs")
    parallel.plot(x, [r.parallelism_baseline for r in result.runs], "k_", ms=30, mew=2, label="random pairs")
    parallel.axhline(0, color="0.5", lw=0.8)
    parallel.set_ylabel("mean cosine between offsets")
    parallel.set_title("Parallelism of she - he, queen - king, ... in the embedding", fontsize=10)
    parallel.legend(fontsize=8, markerscale=0.4)
    for ax in (gap, arithmetic, parallel):
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel("width (hidden size)")
        ax.grid(alpha=0.3, axis="y")
    curves.grid(alpha=0.3)
    return save_figure(fig, path)


__all__ = [
    "DEFAULT_WIDTHS",
    "CapacityResult",
    "WidthRun",
    "budget_text",
    "capacity_sweep",
    "check_capacity_budget",
    "check_widths",
    "flops_per_step",
    "plot_capacity",
    "steps_in_flops",
    "width_config",
]
