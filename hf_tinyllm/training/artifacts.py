"""The final model folder of a run: weights (safetensors), config, generation config, tokenizer, a training summary
and a loss-curve plot, written atomically."""

import json
import shutil
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerFast

from ..atomic import atomic_directory
from ..faults import crash_point
from ..insight.figures import FLOOR_LABEL, SOURCE_LABEL, pyplot, save_figure
from ..insight.learning import plot_learning_curves, probe_records
from ..model_card import LEARNING_CURVES_FILE, LOSS_CURVE_FILE, SUMMARY_FILE, TRAINING_LOG_FILE
from ..tokenization import write_tokenizer_files


def save_final_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    path: Path,
    summary: dict,
    history: list[dict],
    floor_bits_per_byte: float | None = None,
    timeline: Path | None = None,
) -> Path:
    """The final model folder, atomically: weights, tokenizer, training records, their pictures and the run's
    timeline of snapshots (`timeline`, a run's `timeline/` folder) when it recorded one."""
    model.config.use_cache = True  # training turned it off; generation wants it
    model.config.cross_entropy_chunk_size = 0  # a training-time choice: the saved model computes the plain loss
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        write_tokenizer_files(tokenizer, tmp)
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (tmp / TRAINING_LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in history))
        plot_loss_curve(history, tmp / LOSS_CURVE_FILE, floor_bits_per_byte)
        if probe_records(history):
            plot_learning_curves(history, tmp / LEARNING_CURVES_FILE, floor_bits_per_byte)
        if timeline is not None and timeline.is_dir():
            shutil.copytree(timeline, tmp / timeline.name)
        crash_point("final-model-written")
    return path


def plot_loss_curve(history: list[dict], path: Path, floor_bits_per_byte: float | None = None) -> Path:
    """Training loss per step and, where evaluated, validation bits per byte against the true distribution's code
    length on the same documents (the floor to compare with) and the corpus floor (its expectation)."""
    plt = pyplot()

    train = [(r["step"], r["loss"]) for r in history if "loss" in r]
    evals = [(r["step"], r["eval/bits_per_byte"]) for r in history if "eval/bits_per_byte" in r]
    fig, (ax_loss, ax_bpb) = plt.subplots(1, 2, figsize=(10, 4))
    _plot_series(ax_loss, train, "training loss (nats/token)", "more often: lower logging_steps")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy")
    if train:
        ax_loss.set_yscale("log")
    _plot_series(ax_bpb, evals, "validation bits per byte", "a curve: evaluate every N steps (eval_steps)")
    sources = [r["eval/source_bits_per_byte"] for r in history if "eval/source_bits_per_byte" in r]
    if sources:
        ax_bpb.axhline(sources[-1], color="k", linestyle=":", label=SOURCE_LABEL)
    if floor_bits_per_byte is not None:
        ax_bpb.axhline(floor_bits_per_byte, color="0.5", linestyle="--", label=FLOOR_LABEL)
    ax_bpb.set_xlabel("step")
    ax_bpb.set_ylabel("bits per byte")
    ax_bpb.legend(loc="upper right")
    return save_figure(fig, path)


def _plot_series(ax, points: list[tuple[int, float]], label: str, hint: str) -> None:
    """A line of (step, value) points; with fewer than two, markers and a note saying how to log more."""
    if points:
        ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 2 else None, label=label)
        ax.legend()
    if len(points) < 2:
        logged = f"one point (step {points[0][0]}: {points[0][1]:.4g})" if points else "nothing"
        ax.text(0.5, 0.5, f"{label}: {logged} logged;\nfor {hint}", transform=ax.transAxes, ha="center",
                va="center", fontsize=9, color="0.3")  # fmt: skip


__all__ = ["plot_loss_curve", "save_final_model"]
