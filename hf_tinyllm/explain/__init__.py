"""`tinyllm explain TOPIC MODEL [options]`: one command per idea of `hf_tinyllm.insight`, on the user's own model.

Each topic is a module here with `add_arguments(parser)` and `run(args) -> (report, data)`: `report` is the readable
text printed by default, `data` what `--json` prints; PNGs go to `--output_dir`. Topics only format and lay out what
`insight` computes. Bad input (a word not in the vocabulary, an empty prompt, a missing model folder) ends with one
line, `error: ...`, and exit status 1.
"""

import argparse
import dataclasses
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import USAGE_ERROR_STATUS
from ..insight.model_parts import InsightError

TOPICS = {
    "next": "the next-token distribution of a prompt, sampling settings, a guess, per-token surprise",
    "layers": "the logit lens (the prediction after each layer) and attention maps",
    "geometry": "nearest neighbours, analogies, the parallelism of gender pairs, a 2-D map of word sets",
    "gradients": "each stage's share of the gradient, and which embedding rows a batch and AdamW update",
    "batching": "the same tiny model trained at several batch sizes with equal tokens",
    "timeline": "how the embedding moved in training: parallelism per step, the word map as an animation",
    "microscope": "one optimizer step on a copy: distributions before and after, the rows that moved, the blame",
    "steer": "add a direction to the residual stream: flip rates of embedding offsets, difference of means, random",
    "context": "the same word in different contexts: how far apart its hidden states are, layer by layer",
    "capacity": "widths trained for equal time: loss above the floor, held-out arithmetic, parallelism",
    "memorise": "one model trained on growing slices of the data: memorising against generalising",
}


def load_model_and_tokenizer(name_or_path: str):
    """A causal LM and its tokenizer from a folder or Hub id (importing hf_tinyllm registered tinyllm, so no remote
    code runs)."""
    from transformers import AutoModelForCausalLM

    from ..tokenization import load_tokenizer

    if not Path(name_or_path).exists() and name_or_path.count("/") != 1:
        raise InsightError(f"{name_or_path} is neither a model folder nor a Hub id (user/name); train one first: "
                           "make demo writes outputs/demo/model.")  # fmt: skip
    try:
        model = AutoModelForCausalLM.from_pretrained(name_or_path).eval()
    except (OSError, ValueError, KeyError) as err:  # not a folder of a causal LM and its tokenizer
        first_line = str(err).strip().splitlines()[0]
        raise InsightError(f"Cannot load a model from {name_or_path}: {first_line}") from err
    return model, load_tokenizer(name_or_path)


def to_jsonable(value):
    """Dataclasses, tensors and numpy values as plain JSON types (non-finite floats as null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def distinct_positive_integers(text: str, flag: str, example: str) -> tuple[int, ...]:
    """A command-line list like "4,16,64" as integers, each positive and none twice; `InsightError` names the flag
    and gives `example` otherwise."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or min(values) < 1 or len(set(values)) != len(values):
        raise InsightError(f"{flag} {text!r} must be distinct positive integers separated by commas, e.g. {example}.")
    return values


def build_parser(topic: str) -> argparse.ArgumentParser:
    module = importlib.import_module(f".{topic}", __name__)
    parser = argparse.ArgumentParser(prog=f"tinyllm explain {topic}", description=TOPICS[topic])
    parser.add_argument("--output_dir", default=f"outputs/explain/{topic}", help="Where the PNGs are written.")
    parser.add_argument("--json", action="store_true", help="Print the data as JSON instead of the report.")
    module.add_arguments(parser)
    return parser


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in TOPICS:
        lines = "\n".join(f"  {name:<10} {text}" for name, text in TOPICS.items())
        asked = argv[:1] in (["--help"], ["-h"])
        print(f"usage: tinyllm explain TOPIC MODEL [options]  (tinyllm explain TOPIC --help)\n{lines}",
              file=sys.stdout if asked else sys.stderr)  # fmt: skip
        sys.exit(0 if asked else USAGE_ERROR_STATUS)
    topic = argv[0]
    args = build_parser(topic).parse_args(argv[1:])
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    report, data = importlib.import_module(f".{topic}", __name__).run(args)
    print(json.dumps(to_jsonable(data), indent=2) if args.json else report)


__all__ = ["TOPICS", "build_parser", "distinct_positive_integers", "load_model_and_tokenizer", "main", "to_jsonable"]
