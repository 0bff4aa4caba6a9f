"""`tinyllm explain context MODEL`: the same word in two kinds of context, and how far apart its hidden states are
after each layer (held-out nearest-centroid accuracy, the cosine distance of the two means, between/within spread),
with a 2-D PCA per layer.

Built-in studies (`--study`): "pronoun" ('he' in royal against commoner stories) and "number" ('six' as an operand
against the answer), from TinyWorld's templates. Your own: `--word he --context_a "the king ruled. he ate.|..."
--context_b "the man worked. he ate.|..."`: texts separated by "|", or `@FILE` with one text per line; the word's
first occurrence in a text is read unless one is marked in square brackets, "two plus four equals [six].".
"""

import argparse
from pathlib import Path

from ..insight.context import (
    DEFAULT_PER_CONTEXT,
    DEFAULT_SHUFFLES,
    STUDY_NAMES,
    ContextResult,
    built_in_studies,
    context_separation,
    custom_study,
    interpretation,
    plot_context_separation,
)
from ..insight.model_parts import InsightError
from . import load_model_and_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder or Hub id, e.g. outputs/demo/model.")
    parser.add_argument("--study", choices=[*STUDY_NAMES, "all"], default=None,
                        help="A built-in TinyWorld study: 'pronoun' (he: royal vs commoner stories), 'number' (six: "
                             "operand vs answer) or 'all' (default, unless --word is given).")  # fmt: skip
    parser.add_argument("--per_context", type=int, default=DEFAULT_PER_CONTEXT,
                        help="Texts per context in a built-in study (fewer when TinyWorld has fewer).")  # fmt: skip
    parser.add_argument("--num_shuffles", type=int, default=DEFAULT_SHUFFLES,
                        help="Label shuffles behind each layer's chance level (its 95th percentile).")  # fmt: skip
    parser.add_argument("--word", help="Your own study: the word to read (with --context_a and --context_b).")
    parser.add_argument("--context_a", metavar="TEXTS",
                        help='Texts of the first context, separated by "|", or @FILE with one text per line; mark '
                             "an occurrence as [word] to read it instead of the first.")  # fmt: skip
    parser.add_argument("--context_b", metavar="TEXTS", help="Texts of the second context, as --context_a.")
    parser.add_argument("--names", default="context A,context B",
                        help="The two contexts' names, comma-separated (default: 'context A,context B').")  # fmt: skip


def _texts(value: str, option: str) -> list[str]:
    if value.startswith("@"):
        path = Path(value[1:])
        if not path.is_file():
            raise InsightError(f"{option} {value}: {path} is not a file; give @FILE with one text per line.")
        return path.read_text(encoding="utf-8").splitlines()
    return value.split("|")


def _studies(args: argparse.Namespace) -> list:
    custom = [args.word, args.context_a, args.context_b]
    if any(value is not None for value in custom):
        if any(value is None for value in custom):
            raise InsightError("Your own study needs all three of --word, --context_a and --context_b.")
        if args.study is not None:
            raise InsightError("Give either --study or your own --word with --context_a/--context_b, not both.")
        names = tuple(name.strip() for name in args.names.split(","))
        if len(names) != 2 or not all(names):
            raise InsightError(f"--names {args.names!r} must be two comma-separated names, e.g. royal,commoner.")
        texts_a, texts_b = _texts(args.context_a, "--context_a"), _texts(args.context_b, "--context_b")
        return [custom_study(args.word, texts_a, texts_b, names)]
    studies = built_in_studies(args.per_context)
    chosen = STUDY_NAMES if args.study in (None, "all") else [args.study]
    return [studies[name] for name in chosen]


def _report(result: ContextResult, png: Path) -> list[str]:
    names = result.context_names
    counts = [result.labels.count(k) for k in range(2)]
    tokens = ("" if len(result.word_tokens) == 1 else
              f" ({len(result.word_tokens)} tokens, read at the last, {result.word_tokens[-1]!r})")  # fmt: skip
    lines = [
        f"Study {result.study!r}: {result.description}",
        f"  {counts[0]} + {counts[1]} texts; the hidden state of {result.word!r}{tokens} at its position, e.g.",
    ]
    width = max(len(name) for name in names) + 1
    for k, name in enumerate(names):
        lines.append(f"    {name + ':':<{width}} {result.texts[result.labels.index(k)]}")
    name_width = max(len(name) for name in result.layer_names)
    lines.append(f"  {'':<{name_width}}  {'held-out acc':>12}  {'chance 95%':>10}  {'cos dist of means':>17}  "
                 f"{'between/within':>14}")  # fmt: skip
    for layer, name in enumerate(result.layer_names):
        note = ""
        if layer == 0:
            note = ("  same vector in every text: chance by construction" if result.identical_at_embeddings else
                    "  token embedding plus a learned position: not one vector")  # fmt: skip
        scores = (f"{result.accuracy[layer]:>12.1%}  {result.chance_accuracy[layer]:>10.1%}  "
                  f"{result.cosine_distance[layer]:>17.3f}  {result.separation_ratio[layer]:>14.2f}")  # fmt: skip
        lines.append(f"  {name:<{name_width}}  {scores}{note}")
    lines += [f"  {interpretation(result)}", f"  Wrote {png} (2-D PCA of the hidden states, one panel per layer)"]
    return lines


def run(args: argparse.Namespace) -> tuple[str, dict]:
    if args.num_shuffles < 1:
        raise InsightError(f"--num_shuffles {args.num_shuffles} must be at least 1 (20 or more for a 95th percentile).")
    studies = _studies(args)  # bad options fail before the model loads
    model, tokenizer = load_model_and_tokenizer(args.model)
    results, files = [], []
    lines = [
        f"The same word in two contexts, in {args.model}: its hidden state (the residual stream at the word's last "
        "token) after each layer.",
        "  held-out acc: hide one text of each context, average the others per context, guess each hidden text's "
        "context by the nearer average; repeated for every such pair (50% = chance, 100% = every text told apart).",
        "  chance 95%: the held-out acc with the texts' contexts shuffled at random, 95th percentile of "
        f"{args.num_shuffles} shuffles; above it, the layer separates the contexts.",
        "  cos dist of means: 1 - cosine of the two contexts' mean vectors. between/within: distance of the means "
        "over the spread of a context around its mean.",
    ]
    for study in studies:
        result = context_separation(model, tokenizer, study, num_shuffles=args.num_shuffles)
        png = plot_context_separation(result, Path(args.output_dir) / f"context_{result.study}.png")
        results.append(result)
        files.append(str(png))
        lines += ["", *_report(result, png)]
    return "\n".join(lines), {"studies": results, "files": files}


__all__ = ["add_arguments", "run"]
