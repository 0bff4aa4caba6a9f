"""Memorise or compress: one model, from the same initial weights, trained for the same number of steps on growing
slices of TinyWorld (its first 50, 200, 1,000, 5,000 documents: each slice contains the smaller ones).

TinyWorld knows the exact probability of every document, so the two ways a model can fit its data can be told apart:
- on held-out text no model can beat the true distribution: validation bits per byte minus the documents' exact code
  length (the gap to the source) is >= 0 up to sampling noise, and small when the model learned the rules;
- on its own training documents a model CAN go below it, by remembering those very documents: a training-slice gap
  below 0 is memorisation, crisply, because generalising alone never gets there.
Arithmetic says the same in exact match: problems whose sentence is in the slice (trained) against the problems
TinyWorld never puts in any document (held-out). Scarce data is memorised (trained high, held-out low, training gap
below 0); plentiful data is compressed into the rules (both high, both gaps near 0).
"""

import copy
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, PreTrainedConfig, PreTrainedTokenizerBase

from ..data.tinyworld import TinyWorld
from ..evaluation import arithmetic_exact_match, evaluate_model
from .figures import pyplot, save_figure
from .model_parts import InsightError
from .small_runs import TinyWorldCorpus, check_budget, pack_documents, train_for

DEFAULT_SLICES = (50, 200, 1000, 5000)


@dataclass
class SliceRun:
    num_documents: int  # the slice: the corpus's first num_documents training documents
    num_blocks: int  # packed blocks of T tokens
    intact_documents: int  # documents whole inside one block: seen as they are scored (the others were cut in two)
    epochs: float  # steps * batch_size / num_blocks: how often the run read each block
    steps: int
    tokens: int
    seconds: float  # wall time of the training steps
    train_losses: list[float]  # (steps,) nats per token
    num_train_eval_documents: int  # the first min(intact_documents, eval_documents) intact documents of the slice
    train_bits_per_byte: float
    train_source_bits_per_byte: float  # TinyWorld's exact code length of those documents
    train_gap: float  # train_bits_per_byte - train_source_bits_per_byte; below 0 only by memorising
    validation_bits_per_byte: float
    validation_source_bits_per_byte: float
    validation_gap: float  # >= 0 up to sampling noise: nobody beats the source on unseen text
    trained_exact_match: float  # on arithmetic problems whose sentence is in an intact document of the slice
    heldout_exact_match: float  # on the problems no TinyWorld document contains
    num_trained_problems: int


@dataclass
class MemorisationResult:
    runs: list[SliceRun]  # one per slice, smallest first
    max_steps: int
    batch_size: int
    block_size: int
    learning_rate: float
    num_parameters: int
    floor_bits_per_byte: float  # the corpus entropy floor (expected over all TinyWorld text)
    num_validation_documents: int
    num_heldout_problems: int
    seed: int


def check_slices(slices: Sequence[int], num_documents: int) -> tuple[int, ...]:
    """`slices` sorted, as distinct positive integers no larger than the corpus (else an `InsightError`)."""
    slices = tuple(slices)
    if (not slices or any(isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1 for n in slices)
            or len(set(slices)) != len(slices)):  # fmt: skip
        raise InsightError(f"slices={slices} must be distinct positive numbers of documents, e.g. 50,200,1000,5000.")
    if max(slices) > num_documents:
        raise InsightError(f"The slice of {max(slices)} documents is larger than the corpus's {num_documents} "
                           f"training documents; make the corpus at least {max(slices)} documents or drop that "
                           "slice.")  # fmt: skip
    return tuple(sorted(int(n) for n in slices))


def training_slice(corpus: TinyWorldCorpus, num_documents: int) -> Dataset:
    """The corpus's first `num_documents` training documents (so a smaller slice is inside every larger one)."""
    check_slices([num_documents], len(corpus.train_documents))
    return corpus.train_documents.select(range(num_documents))


def slice_problems(
    corpus: TinyWorldCorpus, documents: Sequence[int], count: int | None = None, seed: int = 0
) -> list[dict]:
    """Prompt/answer of the arithmetic problems whose sentence occurs in the training documents of index `documents`
    (`TinyWorld.trained_problems` of the same generator, cut to them), a seeded sample of `count` when given."""
    if not documents:
        return []
    prefix = replace(corpus.world.config, num_train_documents=max(documents) + 1, num_validation_documents=0)
    texts = corpus.train_documents.select(documents)["text"]
    sentences = {part.strip() for text in texts for part in text.split(".")}
    problems = [p for p in TinyWorld(prefix).trained_problems() if f"{p.prompt} {p.answer}" in sentences]
    if count is not None and count < len(problems):
        problems = sorted(random.Random(f"memorisation:{seed}").sample(problems, count), key=problems.index)
    return [{"prompt": p.prompt, "answer": p.answer} for p in problems]


def memorisation_sweep(
    config: PreTrainedConfig,
    tokenizer: PreTrainedTokenizerBase,
    corpus: TinyWorldCorpus,
    slices: Sequence[int] = DEFAULT_SLICES,
    max_steps: int = 300,
    block_size: int = 128,
    batch_size: int = 16,
    learning_rate: float = 6e-3,
    eval_documents: int = 300,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> MemorisationResult:
    """Train a copy of one seeded model of `config` for `max_steps` steps on each slice of the corpus's training
    documents (in the seeded block order, the training script's AdamW, warmup and cosine decay), then measure the gap
    to the source on the slice's first `eval_documents` intact documents (whole inside one block, so seen as they are
    scored) and on the corpus's validation documents, and exact match on as many of the arithmetic problems of the
    intact documents as there are held-out ones (fewer if there are fewer) and on the held-out problems.
    Deterministic under `seed`; the global RNG state is restored afterwards."""
    slices = check_slices(slices, len(corpus.train_documents))
    check_budget(None, max_steps)
    if eval_documents < 1:
        raise InsightError(f"eval_documents={eval_documents} must be positive, e.g. 300.")
    # every slice packed (and so checked) before any training
    packed = [pack_documents(training_slice(corpus, n), tokenizer, block_size, f"The slice of {n} documents")
              for n in slices]  # fmt: skip
    heldout = corpus.heldout_problems
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        initial = AutoModelForCausalLM.from_config(config)
        runs = []
        for n, (blocks, positions, intact) in zip(slices, packed, strict=True):
            model = copy.deepcopy(initial).to(device)
            blocks, positions = blocks.to(device), positions.to(device)
            trace = train_for(model, blocks, positions, batch_size, learning_rate, max_steps=max_steps, seed=seed)
            seen = corpus.train_documents.select(intact[:eval_documents])
            on_train = evaluate_model(model, tokenizer, seen)
            on_validation = evaluate_model(model, tokenizer, corpus.validation_documents, heldout_arithmetic=heldout)
            trained = slice_problems(corpus, intact, count=len(heldout), seed=seed)
            trained_match = arithmetic_exact_match(model, tokenizer, trained)["exact_match"] if trained else math.nan
            runs.append(SliceRun(
                num_documents=n, num_blocks=len(blocks), intact_documents=len(intact),
                epochs=trace.steps * batch_size / len(blocks), steps=trace.steps, tokens=trace.tokens,
                seconds=trace.seconds, train_losses=trace.train_losses, num_train_eval_documents=len(seen),
                train_bits_per_byte=on_train["bits_per_byte"],
                train_source_bits_per_byte=on_train["source_bits_per_byte"], train_gap=on_train["gap_bits_per_byte"],
                validation_bits_per_byte=on_validation["bits_per_byte"],
                validation_source_bits_per_byte=on_validation["source_bits_per_byte"],
                validation_gap=on_validation["gap_bits_per_byte"], trained_exact_match=trained_match,
                heldout_exact_match=on_validation["arithmetic_exact_match"], num_trained_problems=len(trained),
            ))  # fmt: skip
    return MemorisationResult(
        runs=runs, max_steps=max_steps, batch_size=batch_size, block_size=block_size, learning_rate=learning_rate,
        num_parameters=sum(p.numel() for p in initial.parameters()), floor_bits_per_byte=corpus.floor_bits_per_byte,
        num_validation_documents=len(corpus.validation_documents), num_heldout_problems=len(heldout), seed=seed,
    )  # fmt: skip


def plot_memorisation(result: MemorisationResult, path: str | Path) -> Path:
    """Two panels against the slice size (log axis): trained against held-out arithmetic exact match, and the gap to
    the source on the training slice against the validation documents, with the region only memorising reaches."""
    plt = pyplot()
    fig, (match, gaps) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    sizes = [r.num_documents for r in result.runs]
    match.plot(sizes, [100 * r.trained_exact_match for r in result.runs], "o-", color="tab:orange",
               label="trained problems (their sentence is in the slice)")  # fmt: skip
    match.plot(sizes, [100 * r.heldout_exact_match for r in result.runs], "s--", color="tab:blue",
               label=f"held-out problems ({result.num_heldout_problems}, in no document)")  # fmt: skip
    match.set_ylim(-3, 105)
    match.set_ylabel("arithmetic exact match (%)")
    match.set_title(f"Same model, {result.max_steps} steps on each slice: what it can answer", fontsize=10)

    gaps.plot(sizes, [r.train_gap for r in result.runs], "o-", color="tab:orange", label="training documents (seen)")
    gaps.plot(sizes, [r.validation_gap for r in result.runs], "s--", color="tab:blue",
              label="validation documents (unseen)")  # fmt: skip
    for run in result.runs:
        gaps.annotate(f"{run.epochs:.3g} epochs", (run.num_documents, run.train_gap), textcoords="offset points",
                      xytext=(0, -14), ha="center", fontsize=8, color="tab:orange")  # fmt: skip
    low = min(min(r.train_gap, r.validation_gap) for r in result.runs)
    high = max(max(r.train_gap, r.validation_gap) for r in result.runs)
    span = max(high - low, 0.05)
    gaps.set_ylim(min(low, 0) - 0.25 * span, max(high, 0) + 0.15 * span)
    gaps.axhline(0, color="0.3", lw=1.2, label="the true distribution on the same documents")
    gaps.axhspan(gaps.get_ylim()[0], 0, color="tab:red", alpha=0.08, label="below the source: only memorising")
    gaps.set_ylabel("bits per byte above the source (exact)")
    gaps.set_title("Gap to TinyWorld's exact code length of the documents", fontsize=10)
    for ax in (match, gaps):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("training documents in the slice (log)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


__all__ = [
    "DEFAULT_SLICES",
    "MemorisationResult",
    "SliceRun",
    "check_slices",
    "memorisation_sweep",
    "plot_memorisation",
    "slice_problems",
    "training_slice",
]
