"""`tinyllm explain geometry MODEL`: nearest neighbours of a word, analogies (3CosAdd), how parallel the gender
offsets are against random pairs, and a 2-D map of word sets, all on the model's input embedding."""

import argparse
from pathlib import Path

from ..insight.geometry import analogy, nearest_neighbours, parallelism_score, plot_word_map, word_map
from ..insight.model_parts import InsightError
from . import load_model_and_tokenizer

# "a - b + c = expected", all words of the TinyWorld corpus.
DEFAULT_ANALOGIES = (
    "king,man,woman,queen",
    "he,man,woman,she",
    "boy,man,woman,girl",
    "father,man,woman,mother",
    "his,he,she,her",
)
TOP_SHOWN = 3  # the report's "in the top 3" count


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder (with its tokenizer) or Hub id.")
    parser.add_argument("--word", default="queen", help="The word whose nearest neighbours are listed.")
    parser.add_argument("--analogy", action="append", metavar="A,B,C[,EXPECTED]",
                        help="An analogy A - B + C (= EXPECTED); repeatable. Default: five gender analogies "
                             "of the TinyWorld corpus, e.g. king,man,woman,queen.")  # fmt: skip
    parser.add_argument("--k", type=int, default=5, help="How many neighbours and analogy answers to list.")


def _parse_analogy(spec: str) -> tuple[str, str, str, str | None]:
    words = [word.strip() for word in spec.split(",")]
    if len(words) not in (3, 4) or not all(words):
        raise InsightError(f"--analogy {spec!r} must be three or four comma-separated words, e.g. "
                           "king,man,woman,queen.")  # fmt: skip
    return words[0], words[1], words[2], words[3] if len(words) == 4 else None


def _tokens(word: str, num_tokens: dict[str, int]) -> str:
    count = num_tokens.get(word, 1)
    return word if count == 1 else f"{word} ({count} tokens)"


def run(args: argparse.Namespace) -> tuple[str, dict]:
    if args.k < 1:
        raise InsightError(f"--k={args.k} must be at least 1.")
    model, tokenizer = load_model_and_tokenizer(args.model)
    neighbours = nearest_neighbours(model, tokenizer, args.word, k=args.k)
    specs = args.analogy or list(DEFAULT_ANALOGIES)
    analogies, skipped = [], []
    for spec in specs:
        try:
            a, b, c, expected = _parse_analogy(spec)
            analogies.append(analogy(model, tokenizer, a, b, c, k=args.k, expected=expected))
        except InsightError as err:
            if args.analogy:  # the user's own analogies must work; the defaults are skipped on other vocabularies
                raise
            skipped.append(f"{spec}: {err}")
    parallelism = parallelism_score(model, tokenizer)
    wmap = word_map(model, tokenizer)
    png = plot_word_map(wmap, Path(args.output_dir) / "word_map.png")

    lines = [f"Input embedding of {args.model}; a word's vector is the mean of its tokens' embeddings.", ""]
    tokens = "" if neighbours.num_tokens == 1 else f" ({neighbours.num_tokens} tokens, averaged)"
    lines.append(f"Nearest neighbours of {neighbours.word!r}{tokens} by cosine:")
    lines += [f"  {word:<14} {cosine:+.3f}" for word, cosine in neighbours.neighbours]
    lines += ["", f"Analogies a - b + c (3CosAdd, a, b, c excluded), top {args.k}:"]
    for result in analogies:
        words = ", ".join(f"{word} {cosine:+.2f}" for word, cosine in result.top)
        lines.append(f"  {result.a} - {result.b} + {result.c}: {words}")
        if result.expected is not None:
            rank = f"rank {result.expected_rank}" if result.expected_rank else "not a single-token word"
            cosine = f"{result.expected_cosine:+.2f}"
            lines.append(f"    expected {_tokens(result.expected, result.num_tokens)}: {rank}, cosine {cosine}")
    expected = [r for r in analogies if r.expected is not None]
    if expected:
        first = sum(r.expected_rank == 1 for r in expected)
        top = sum(r.expected_rank is not None and r.expected_rank <= TOP_SHOWN for r in expected)
        lines.append(f"  expected word first in {first} of {len(expected)}, in the top {TOP_SHOWN} in {top} "
                     f"of {len(expected)}")  # fmt: skip
    lines += [f"  skipped {line}" for line in skipped]
    lines += [
        "",
        f"Parallelism of the {parallelism.num_pairs} gender offsets vec(female) - vec(male): mean pairwise cosine "
        f"{parallelism.score:+.3f}",
        f"  random pairs of words ({parallelism.num_random}): {parallelism.baseline:+.3f} ± "
        f"{parallelism.baseline_std:.3f} (std of one cosine); 1 would be one shared 'gender direction'",
    ]
    if parallelism.pairs_skipped:
        lines.append(f"  skipped (not in the vocabulary): {parallelism.pairs_skipped}")
    variance = " + ".join(f"{100 * v:.0f}%" for v in wmap.explained_variance)
    lines += ["", f"Word map of {len(wmap.words)} words (2-D PCA, {variance} of the variance): {png}"]
    data = {"neighbours": neighbours, "analogies": analogies, "analogies_skipped": skipped,
            "parallelism": parallelism, "word_map": wmap, "png": png}  # fmt: skip
    return "\n".join(lines), data


__all__ = ["DEFAULT_ANALOGIES", "add_arguments", "run"]
