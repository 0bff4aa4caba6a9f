"""`tinyllm explain memorise [MODEL]`: one model trained for the same steps on growing slices of TinyWorld, to see
it memorise scarce data and compress plentiful data into rules.

MODEL is a preset name (a 512-token tokenizer is trained on TinyWorld and the preset sized to it) or a model folder
(its config and tokenizer are used, its weights are NOT: every slice starts from the same fresh, seeded weights).
"""

import argparse
from pathlib import Path

from ..insight.memorisation import DEFAULT_SLICES, MemorisationResult, memorisation_sweep, plot_memorisation
from ..insight.model_parts import InsightError
from ..insight.small_runs import demo_family_weights, tinyworld_corpus
from ..presets import PRESETS
from . import distinct_positive_integers
from .batching import DEMO_MODEL, config_and_tokenizer
from .capacity import _machine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help=f"A preset ({', '.join(PRESETS)}) or a model folder whose config and tokenizer are used "
                             f"(weights re-initialised); default {DEMO_MODEL} if it exists, else debug.")  # fmt: skip
    parser.add_argument("--slices", default=",".join(map(str, DEFAULT_SLICES)),
                        help="Comma-separated numbers of training documents (nested slices).")  # fmt: skip
    parser.add_argument("--max_steps", type=int, default=300, help="Training steps on every slice.")
    parser.add_argument("--batch_size", type=int, default=16, help="Blocks per step (the demo's 16).")
    parser.add_argument("--block_size", type=int, default=128, help="Tokens per block (the demo's 128).")
    parser.add_argument("--learning_rate", type=float, default=6e-3, help="Peak learning rate (the demo's 6e-3).")
    parser.add_argument("--eval_documents", type=int, default=300,
                        help="Documents scored of the slice (seen) and of validation (unseen).")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> tuple[str, MemorisationResult]:
    slices = distinct_positive_integers(args.slices, "--slices", "50,200,1000,5000")
    if args.eval_documents < 1:
        raise InsightError(f"--eval_documents {args.eval_documents} must be positive, e.g. 300.")
    config, tokenizer, source = config_and_tokenizer(args.model, args.block_size)
    corpus = tinyworld_corpus(max(slices), args.eval_documents, demo_family_weights(), args.seed)
    result = memorisation_sweep(config, tokenizer, corpus, slices, max_steps=args.max_steps,
                                block_size=args.block_size, batch_size=args.batch_size,
                                learning_rate=args.learning_rate, eval_documents=args.eval_documents,
                                seed=args.seed)  # fmt: skip
    png = plot_memorisation(result, Path(args.output_dir) / "memorise.png")
    header = (f"Memorise or compress: {source}, {result.num_parameters:,} parameters, the same initial weights "
              f"trained {result.max_steps} steps (batch {result.batch_size} x {result.block_size} tokens, peak lr "
              f"{result.learning_rate:g}, warmup and cosine decay) on each slice: the first N TinyWorld documents "
              f"(the demo's mix); {_machine()}.\n"
              f"Gap = bits per byte minus TinyWorld's exact code length of the same documents: on training documents "
              f"seen whole (at most {args.eval_documents}) and on {result.num_validation_documents} validation "
              f"documents. Exact match on the slice's own arithmetic problems (as many as there are held-out "
              f"ones, fewer when the slice has fewer) and on the {result.num_heldout_problems} held-out "
              "problems.")  # fmt: skip
    rows = [f"{'slice':>6} {'blocks':>6} {'epochs':>7} {'trained EM':>12} {'held-out EM':>12} {'train gap':>10} "
            f"{'val gap':>8} {'seconds':>8}"]  # fmt: skip
    for r in result.runs:
        rows.append(f"{r.num_documents:>6,} {r.num_blocks:>6} {r.epochs:>7.1f} "
                    f"{_percent(r.trained_exact_match, r.num_trained_problems):>12} "
                    f"{_percent(r.heldout_exact_match, result.num_heldout_problems):>12} {r.train_gap:>+10.4f} "
                    f"{r.validation_gap:>+8.4f} {r.seconds:>8.1f}")  # fmt: skip
    report = "\n".join([header, "", *rows, "", _reading(result), f"Plot: {png}"])
    return report, result


def _percent(value: float, count: int) -> str:
    return "n/a" if count == 0 else f"{value:.0%} of {count}"


def _reading(result: MemorisationResult) -> str:
    """What the numbers show, stated from the numbers (never assumed from theory)."""
    below = [r.num_documents for r in result.runs if r.train_gap < 0]
    if below:
        text = (f"Training documents scored below their exact code length (only memorising gets there) with "
                f"{', '.join(f'{n:,}' for n in below)} documents.")  # fmt: skip
    else:
        text = "No slice's training documents scored below their exact code length (no memorisation at this budget)."
    small, large = result.runs[0], result.runs[-1]
    text += (f" Smallest slice ({small.num_documents:,}): trained {small.trained_exact_match:.0%} against held-out "
             f"{small.heldout_exact_match:.0%}, validation gap {small.validation_gap:+.3f}. Largest "
             f"({large.num_documents:,}): trained {large.trained_exact_match:.0%} against held-out "
             f"{large.heldout_exact_match:.0%}, validation gap {large.validation_gap:+.3f}.")  # fmt: skip
    return text


__all__ = ["add_arguments", "run"]
