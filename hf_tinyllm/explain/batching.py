"""`tinyllm explain batching [MODEL]`: the same tiny model trained on TinyWorld at several batch sizes, equal tokens.

MODEL is a preset name (a 512-token tokenizer is trained on TinyWorld and the preset sized to it) or a model folder
(its config and tokenizer are used, its weights are NOT: every run starts from fresh, seeded initial weights).
"""

import argparse
import itertools
from pathlib import Path

from ..insight.batching import LR_SCALINGS, BatchingResult, batch_size_sweep, plot_batching, tinyworld_blocks
from ..insight.model_parts import InsightError
from ..presets import PRESETS
from . import distinct_positive_integers

DEMO_MODEL = Path("outputs/demo/model")
PRESET_VOCAB_SIZE = 512
TOKENIZER_DOCUMENTS = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=None,
                        help=f"A preset ({', '.join(PRESETS)}) or a model folder whose config and tokenizer are used "
                             f"(weights re-initialised); default {DEMO_MODEL} if it exists, else debug.")  # fmt: skip
    parser.add_argument("--batch_sizes", default="4,16,64", help="Comma-separated batch sizes (blocks per step).")
    parser.add_argument("--total_tokens", type=int, default=2**18, help="Training tokens of every run.")
    parser.add_argument("--block_size", type=int, default=64, help="Tokens per block (T).")
    parser.add_argument("--learning_rate", type=float, default=3e-3, help="Learning rate of the smallest batch.")
    parser.add_argument("--lr_scaling", default="sqrt", choices=LR_SCALINGS,
                        help="How the learning rate grows with the batch, relative to the smallest.")  # fmt: skip
    parser.add_argument("--documents", type=int, default=10_000, help="TinyWorld training documents.")
    parser.add_argument("--seed", type=int, default=0)


def config_and_tokenizer(model: str | None, block_size: int):
    """The config and tokenizer a training study starts from, and a line naming them: a preset (with a TinyWorld
    tokenizer) or a model folder; None: the demo model if it exists, else debug. `block_size` must fit the config."""
    from ..data.packing import check_block_size
    from ..data.tinyworld import TinyWorldConfig, tinyworld_dataset
    from ..presets import preset_config
    from ..tokenization import model_overrides_for, train_tokenizer
    from . import load_model_and_tokenizer

    model = model or (str(DEMO_MODEL) if DEMO_MODEL.exists() else "debug")
    if model in PRESETS:
        world = tinyworld_dataset(TinyWorldConfig(num_train_documents=TOKENIZER_DOCUMENTS, num_validation_documents=1))
        tokenizer = train_tokenizer(world["train"], vocab_size=PRESET_VOCAB_SIZE)
        config, source = preset_config(model, **model_overrides_for(tokenizer)), f"preset {model}"
    else:
        loaded, tokenizer = load_model_and_tokenizer(model)
        config, source = loaded.config, f"the config and tokenizer of {model} (weights re-initialised)"
    try:
        check_block_size(block_size, config)
    except ValueError as err:
        raise InsightError(str(err)) from err
    return config, tokenizer, source


def run(args: argparse.Namespace) -> tuple[str, BatchingResult]:
    batch_sizes = distinct_positive_integers(args.batch_sizes, "--batch_sizes", "4,16,64")
    config, tokenizer, source = config_and_tokenizer(args.model, args.block_size)
    data = tinyworld_blocks(tokenizer, args.block_size, args.documents, args.seed)
    result = batch_size_sweep(config, data.train, data.validation, data.train_positions, data.validation_positions,
                              batch_sizes=batch_sizes, total_tokens=args.total_tokens,
                              learning_rate=args.learning_rate, lr_scaling=args.lr_scaling, seed=args.seed)  # fmt: skip
    png = plot_batching(result, Path(args.output_dir) / "batching.png")
    header = (f"Batching: {source}, {result.num_parameters:,} parameters, {len(data.train)} training blocks of "
              f"{result.block_size} tokens, {result.total_tokens:,} tokens per run, lr {result.base_learning_rate:g} "
              f"for batch {min(batch_sizes)} with {result.lr_scaling} scaling.")  # fmt: skip
    rows = [
        f"{'batch':>6} {'steps':>6} {'lr':>9} {'first val':>10} {'final val':>10} {'train noise':>12} {'seconds':>8}"
    ]
    for r in result.runs:
        rows.append(f"{r.batch_size:>6} {r.steps:>6} {r.learning_rate:>9.3g} {r.validation_losses[0]:>10.3f} "
                    f"{r.final_validation_loss:>10.3f} {r.train_loss_noise:>12.3f} {r.seconds:>8.1f}")  # fmt: skip
    report = "\n".join([header, "", *rows, "", _reading(result), f"Plot: {png}"])
    return report, result


def _reading(result: BatchingResult) -> str:
    """What the numbers show, stated from the numbers (never assumed from theory)."""
    runs = sorted(result.runs, key=lambda r: r.final_validation_loss)
    best, worst = runs[0], runs[-1]
    text = (f"At equal tokens, batch {best.batch_size} ended lowest (validation {best.final_validation_loss:.3f}) and "
            f"batch {worst.batch_size} highest ({worst.final_validation_loss:.3f}).")  # fmt: skip
    by_size = sorted(result.runs, key=lambda r: r.batch_size)
    noises = [r.train_loss_noise for r in by_size]
    if len(by_size) > 1 and all(a > b for a, b in itertools.pairwise(noises)):
        text += (f" The step-to-step noise of the training loss falls as the batch grows, from "
                 f"{noises[0]:.3f} (batch {by_size[0].batch_size}) to {noises[-1]:.3f} "
                 f"(batch {by_size[-1].batch_size}).")  # fmt: skip
    elif len(by_size) > 1:
        listed = ", ".join(f"{r.train_loss_noise:.3f} (batch {r.batch_size})" for r in by_size)
        text += f" The step-to-step noise of the training loss does not fall steadily with the batch: {listed}."
    return text


__all__ = ["add_arguments", "run"]
