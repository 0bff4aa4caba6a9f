"""`tinyllm explain capacity [MODEL]`: the model's architecture at several widths, each trained on TinyWorld for the
same wall-clock time (or the same training FLOPs, `--flops`, reproducible on any machine), measured by the loss above
the exact floor, held-out arithmetic and gender-pair parallelism.

MODEL is a preset name (a 512-token tokenizer is trained on TinyWorld and the preset sized to it) or a model folder
(its config and tokenizer are used, its weights are NOT: every width starts from fresh, seeded initial weights).
"""

import argparse
import math
import platform
from pathlib import Path

import torch

from ..insight.capacity import DEFAULT_WIDTHS, CapacityResult, budget_text, capacity_sweep, plot_capacity
from ..insight.small_runs import demo_family_weights, tinyworld_corpus
from ..presets import PRESETS
from . import distinct_positive_integers
from .batching import DEMO_MODEL, config_and_tokenizer

DEFAULT_SECONDS = 40.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help=f"A preset ({', '.join(PRESETS)}) or a model folder whose config and tokenizer are used "
                             f"(weights re-initialised); default {DEMO_MODEL} if it exists, else debug.")  # fmt: skip
    parser.add_argument("--widths", default=",".join(map(str, DEFAULT_WIDTHS)),
                        help="Comma-separated hidden sizes (multiples of the model's attention heads).")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"Training seconds per width (default {DEFAULT_SECONDS:g}, or --max_steps).")  # fmt: skip
    parser.add_argument("--max_steps", type=int, default=None,
                        help="Train each width this many steps instead of equal time (deterministic).")  # fmt: skip
    parser.add_argument("--flops", type=float, default=None,
                        help="Train each width for this many training FLOPs (6N per token plus attention) instead of "
                             "equal time: equal compute, deterministic and the same on any machine; e.g. 4e12 "
                             "(about the demo width's 40 s here).")  # fmt: skip
    parser.add_argument("--batch_size", type=int, default=16, help="Blocks per step (the demo's 16).")
    parser.add_argument("--block_size", type=int, default=128, help="Tokens per block (the demo's 128).")
    parser.add_argument("--learning_rate", type=float, default=6e-3, help="Peak learning rate (the demo's 6e-3).")
    parser.add_argument("--documents", type=int, default=40_000, help="TinyWorld training documents (the demo's).")
    parser.add_argument("--eval_documents", type=int, default=300, help="Validation documents for the loss gap.")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> tuple[str, CapacityResult]:
    widths = distinct_positive_integers(args.widths, "--widths", "32,64,128,256")
    given = (args.seconds, args.max_steps, args.flops)
    seconds = DEFAULT_SECONDS if given == (None, None, None) else args.seconds
    config, tokenizer, source = config_and_tokenizer(args.model, args.block_size)
    corpus = tinyworld_corpus(args.documents, args.eval_documents, demo_family_weights(), args.seed)
    result = capacity_sweep(config, tokenizer, corpus, widths, seconds=seconds, max_steps=args.max_steps,
                            flops=args.flops, block_size=args.block_size, batch_size=args.batch_size,
                            learning_rate=args.learning_rate, seed=args.seed)  # fmt: skip
    png = plot_capacity(result, Path(args.output_dir) / "capacity.png")
    header = (f"Capacity: {source} at {len(widths)} widths (layers and heads kept, MLP in proportion), each trained "
              f"for {budget_text(result)} on {result.num_train_blocks} blocks of {result.block_size} tokens from "
              f"{args.documents:,} TinyWorld documents (the demo's mix), batch {result.batch_size}, peak lr "
              f"{result.learning_rate:g}, warmup and cosine decay over the budget; {_machine()}.\n"
              f"Measured on {result.num_validation_documents} validation documents (their exact floor "
              f"{result.source_bits_per_byte:.4f} bits per byte; the corpus floor {result.floor_bits_per_byte:.4f}) "
              f"and {result.num_heldout_problems} held-out arithmetic problems.")  # fmt: skip
    rows = [f"{'width':>6} {'params':>10} {'steps':>6} {'tokens':>10} {'seconds':>8} {'FLOPs':>9} {'above floor':>12} "
            f"{'held-out arith':>15} {'parallelism':>12}",
            f"{'':>6} {'':>10} {'':>6} {'':>10} {'':>8} {'':>9} {'(bits/byte)':>12} {'(exact match)':>15} "
            f"{'(random)':>12}"]  # fmt: skip
    for r in result.runs:
        parallel = (f"{_two(r.parallelism)} ({_two(r.parallelism_baseline)})" if not math.isnan(r.parallelism)
                    else "n/a")  # fmt: skip
        rows.append(f"{r.hidden_size:>6} {r.num_parameters:>10,} {r.steps:>6} {r.tokens:>10,} {r.train_seconds:>8.1f} "
                    f"{r.train_flops:>9.3g} {r.loss_above_floor:>12.4f} {r.heldout_exact_match:>15.1%} "
                    f"{parallel:>12}")  # fmt: skip
    report = "\n".join([header, "", *rows, "", _reading(result), f"Plot: {png}"])
    return report, result


def _two(value: float) -> str:
    return f"{round(value, 2) + 0.0:.2f}"  # no "-0.00"


def _machine() -> str:
    device = "CPU" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    threads = torch.get_num_threads()
    return f"fp32 on {device} ({platform.machine()}, {threads} torch thread{'s' if threads != 1 else ''})"


def _reading(result: CapacityResult) -> str:
    """What the numbers show, stated from the numbers (never assumed from theory)."""
    runs = result.runs
    best = min(runs, key=lambda r: r.loss_above_floor)
    top = max(r.heldout_exact_match for r in runs)
    leaders = [str(r.hidden_size) for r in runs if r.heldout_exact_match == top]
    leaders = ("width " if len(leaders) == 1 else "widths ") + " and ".join(leaders)
    text = f"Lowest loss above the floor: width {best.hidden_size} ({best.loss_above_floor:.4f} bits per byte); "
    text += (f"best held-out arithmetic: {leaders} ({top:.0%})." if top > 0
             else "no width answered a held-out problem yet.")  # fmt: skip
    if len(runs) > 1:
        narrow, wide = min(runs, key=lambda r: r.hidden_size), max(runs, key=lambda r: r.hidden_size)
        text += (f" In the same budget width {wide.hidden_size} took {wide.steps} steps ({wide.tokens:,} tokens) "
                 f"against {narrow.steps} ({narrow.tokens:,}) for width {narrow.hidden_size}: "
                 f"{wide.num_parameters / narrow.num_parameters:.1f}x the parameters, "
                 f"{wide.tokens / max(narrow.tokens, 1):.2f}x the tokens.")  # fmt: skip
    return text


__all__ = ["add_arguments", "run"]
