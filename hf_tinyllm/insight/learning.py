"""Learning dynamics: the probes a training run records every N steps, so that *how* the model learned can be seen
afterwards, not only where it ended.

One `LearningProbe.measure(model, optimizer)` call gives, as flat `probe/...` numbers:
- memorisation vs generalisation: greedy exact match on arithmetic problems that occur in the training text
  (`trained_exact_match`) against problems that never do (`heldout_exact_match`), through the same
  `arithmetic_exact_match` as `evaluate_model`;
- geometry emerging from prediction: the rank of `queen` for `king - man + woman` and the parallelism score of the
  gender pairs against its random-pair baseline (`insight.geometry`);
- sparse updates: on a fixed batch of training blocks, its distinct tokens, the embedding rows with an input-side
  gradient, all rows with gradient (the tied head reaches every row) and the rows the run's own AdamW would change
  (`insight.gradients.embedding_sparsity`, on a copy);
- blame: the shares of the gradient norm of one example by stage, summed over layers (`insight.gradients`);
- validation bits per byte of a few documents against the corpus floor (`evaluate_model`).

The batch is fixed (not the step's own) so that the numbers are comparable from step to step and identical between the
Accelerate loop and the Trainer. Measurements a model or corpus cannot support (words missing from the vocabulary, no
arithmetic) are left out of the record rather than guessed.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.tinyworld import FAMILIES
from ..evaluation import arithmetic_exact_match, evaluate_model
from .figures import FLOOR_LABEL, SOURCE_LABEL, pyplot, save_figure
from .geometry import analogy, parallelism_score
from .gradients import embedding_sparsity, gradient_blame
from .model_parts import InsightError, eval_mode
from .truth import POSITION_KINDS, TruthProbe

PREFIX = "probe/"
DEFAULT_ANALOGY = ("king", "man", "woman", "queen")
BLAME_GROUPS = {"embeddings": "embeddings", "attention": "attention", "mlp": "MLP", "final_norm": "final norm",
                "head": "head"}  # fmt: skip


@dataclass
class LearningProbe:
    tokenizer: PreTrainedTokenizerBase
    probe_batch: torch.Tensor  # (B, T) token ids: a fixed batch of training blocks
    trained_problems: list[dict] | None = None  # prompt/answer of arithmetic problems seen in training
    heldout_problems: list[dict] | None = None  # ... and of problems never seen
    validation_documents: list[dict] | None = None  # rows with "text" (and TinyWorld's "nll_bits")
    floor_bits_per_byte: float | None = None
    blame_text: str = "two plus three equals five."
    analogy_words: tuple[str, str, str, str] = DEFAULT_ANALOGY
    truth: TruthProbe | None = None  # the gap to TinyWorld's exact truth, per family and kind of word

    def measure(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer | None = None) -> dict[str, float]:
        """The probe's numbers for `model` now (keys prefixed `probe/`); weights and mode are left as found."""
        started = time.perf_counter()
        record: dict[str, float] = {}
        with eval_mode(model):
            self._memorisation(model, record)
            self._geometry(model, record)
            self._gradients(model, optimizer, record)
            if self.validation_documents:
                metrics = evaluate_model(model, self.tokenizer, self.validation_documents,
                                         floor_bits_per_byte=self.floor_bits_per_byte)  # fmt: skip
                record["validation_bits_per_byte"] = metrics["bits_per_byte"]
                for key in ("source_bits_per_byte", "gap_to_source", "gap_to_floor"):
                    if key in metrics:
                        record[key] = metrics[key]
            if self.truth is not None:
                record.update(self.truth.measure(model, self.tokenizer))
        record["seconds"] = time.perf_counter() - started  # what the probe costs the run
        return {PREFIX + key: float(value) for key, value in record.items()}

    def _memorisation(self, model: PreTrainedModel, record: dict) -> None:
        for name, problems in (("trained", self.trained_problems), ("heldout", self.heldout_problems)):
            if problems:
                record[f"{name}_exact_match"] = arithmetic_exact_match(model, self.tokenizer, problems)["exact_match"]

    def _geometry(self, model: PreTrainedModel, record: dict) -> None:
        a, b, c, expected = self.analogy_words
        try:
            result = analogy(model, self.tokenizer, a, b, c, expected=expected)
            if result.expected_rank is not None:
                record[f"analogy_rank_{expected}"] = result.expected_rank
            parallel = parallelism_score(model, self.tokenizer)
            record["parallelism"], record["parallelism_baseline"] = parallel.score, parallel.baseline
        except InsightError:  # the vocabulary lacks the words: not a TinyWorld-like corpus
            pass

    def _gradients(self, model: PreTrainedModel, optimizer: torch.optim.Optimizer | None, record: dict) -> None:
        sparsity = embedding_sparsity(model, self.probe_batch.to(model.device), optimizer=optimizer)
        record["batch_distinct_tokens"] = sparsity.distinct_tokens
        record["rows_with_input_gradient"] = sparsity.rows_with_input_gradient
        record["rows_with_gradient"] = sparsity.rows_with_gradient
        record["rows_changed_by_adamw"] = sparsity.rows_changed_by_adamw
        record["vocab_size"] = sparsity.vocab_size
        try:
            blame = gradient_blame(model, self.tokenizer, self.blame_text)
        except InsightError:
            return
        for key, marker in BLAME_GROUPS.items():
            record[f"blame_{key}"] = sum(
                s for stage, s in zip(blame.stages, blame.shares, strict=True) if marker in stage
            )


def probe_records(history: list[dict]) -> list[dict]:
    """The probe records of a run's history (`training_log.jsonl` rows or the Trainer's log history), by step."""
    return [
        {"step": row["step"], **{k.removeprefix(PREFIX): v for k, v in row.items() if k.startswith(PREFIX)}}
        for row in history
        if any(k.startswith(PREFIX) for k in row)
    ]


def _missing(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.3", wrap=True)


def plot_learning_curves(history: list[dict], path: str | Path, floor_bits_per_byte: float | None = None) -> Path:
    """Panels over training steps: memorisation vs generalisation, the analogy rank, the parallelism score, sparse
    updates, blame shares, validation bits per byte against the floor, and (TinyWorld, `--probe_truth_documents`)
    the gap to the exact truth per kind of word and per family: which rule is learned first."""
    plt = pyplot()
    from matplotlib.ticker import ScalarFormatter

    records = probe_records(history)
    if not records:
        raise InsightError("The run's history has no probe records; train with --probe_steps N to record them.")
    steps = [r["step"] for r in records]

    def series(key: str) -> list[float]:
        return [r.get(key, float("nan")) for r in records]

    truth = "gap_bits" in records[-1]
    fig, axes = plt.subplots(2, 4 if truth else 3, figsize=(20 if truth else 15, 8))
    axes = axes.ravel()
    ax = axes[0]
    for key, label in (("trained_exact_match", "trained problems (memorised?)"),
                       ("heldout_exact_match", "held-out problems (generalised?)")):  # fmt: skip
        if key in records[-1]:
            ax.plot(steps, [100 * v for v in series(key)], marker="o", label=label)
    ax.set(title="arithmetic exact match (memorised vs general)", xlabel="step", ylabel="%", ylim=(-3, 103))
    if ax.get_lines():
        ax.legend(loc="best", fontsize=8)
    else:
        _missing(ax, "arithmetic: the data has no TinyWorld problems")

    ax = axes[1]
    rank_key = next((k for k in records[-1] if k.startswith("analogy_rank_")), None)
    if rank_key is not None:
        a, b, c, expected = DEFAULT_ANALOGY
        ranks = series(rank_key)
        ax.plot(steps, ranks, marker="o", color="C2")
        ax.set_yscale("log")
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000) if t <= 2 * max(ranks)]
        ax.set_yticks(ticks, labels=[str(t) for t in ticks])
        ax.minorticks_off()
        ax.invert_yaxis()
        ax.set(title=f"{a} - {b} + {c}: rank of {expected}", ylabel="rank (1 = nearest)")
    else:
        _missing(ax, "analogy: its words are not single tokens of this vocabulary")
    ax.set_xlabel("step")

    ax = axes[2]
    if "parallelism" in records[-1]:
        ax.plot(steps, series("parallelism"), marker="s", color="C3", label="gender pairs (king->queen, ...)")
        ax.plot(steps, series("parallelism_baseline"), linestyle="--", color="C7", label="random word pairs")
        ax.legend(loc="best", fontsize=8)
    else:
        _missing(ax, "parallelism: the gender pairs are not in this vocabulary")
    ax.set(title="parallelism of gender pair offsets", xlabel="step", ylabel="mean cosine")

    ax = axes[3]
    vocab = records[-1]["vocab_size"]
    for key, label in (("batch_distinct_tokens", "distinct tokens in the batch"),
                       ("rows_with_input_gradient", "rows with input-side gradient"),
                       ("rows_with_gradient", "rows with gradient (head included if tied)"),
                       ("rows_changed_by_adamw", "rows AdamW changes")):  # fmt: skip
        ax.plot(steps, [100 * v / vocab for v in series(key)], marker=".", label=label)
    ax.set(title=f"embedding rows updated (of {vocab:.0f})", xlabel="step", ylabel="% of the vocabulary",
           ylim=(-3, 103))  # fmt: skip
    ax.legend(loc="best", fontsize=8)

    ax = axes[4]
    blame = [(key, label) for key, label in BLAME_GROUPS.items() if f"blame_{key}" in records[-1]]
    if blame:
        ax.stackplot(steps, *[series(f"blame_{key}") for key, _ in blame], labels=[label for _, label in blame])
        ax.legend(loc="center left", fontsize=8, bbox_to_anchor=(1.0, 0.5))
    else:
        _missing(ax, "blame: the example text could not be scored")
    ax.set(title="blame: share of gradient norm²", xlabel="step", ylim=(0, 1))

    ax = axes[5]
    if "validation_bits_per_byte" in records[-1]:
        ax.plot(steps, series("validation_bits_per_byte"), marker="o", label="validation")
    if "source_bits_per_byte" in records[-1]:
        ax.axhline(records[-1]["source_bits_per_byte"], color="k", linestyle=":", label=SOURCE_LABEL)
    if floor_bits_per_byte is not None:
        ax.axhline(floor_bits_per_byte, color="0.5", linestyle="--", label=FLOOR_LABEL)
    ax.set(title="validation bits per byte (log scale)", xlabel="step")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ScalarFormatter())
    ax.yaxis.set_minor_formatter(ScalarFormatter())
    ax.legend(loc="best", fontsize=8)
    if truth:
        for ax, groups, title in ((axes[6], POSITION_KINDS, "gap to the truth per kind of word"),
                                  (axes[7], FAMILIES, "gap to the truth per family")):  # fmt: skip
            for group in groups:
                if f"gap_bits_{group}" in records[-1]:
                    ax.plot(steps, series(f"gap_bits_{group}"), marker=".", label=group)
            ax.set(title=title, xlabel="step", ylabel="KL(truth || model), bits per word")
            ax.set_yscale("symlog", linthresh=0.01)
            ax.legend(loc="best", fontsize=8)
    return save_figure(fig, path, dpi=70)


__all__ = ["LearningProbe", "plot_learning_curves", "probe_records"]
