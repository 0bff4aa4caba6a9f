"""`tinyllm explain steer MODEL`: add alpha times a direction to the residual stream after layer L and count how often
"she" overtakes "he" as the next sentence's first word: the embedding offset E(queen) - E(king), the mean offset of
the gender pairs, the residual stream's difference of means (activation addition), and random directions of the
same norm."""

import argparse
import math
from pathlib import Path

from ..insight.model_parts import InsightError, encode_prompt
from ..insight.steering import (
    DEFAULT_PROMPT,
    DIFFERENCE_OF_MEANS,
    EMBEDDING_OFFSET,
    FEMALE_WORD,
    MALE_WORD,
    MEAN_OFFSET,
    NUM_PROMPTS,
    POSITIONS,
    RANDOM,
    SteeringResult,
    kind_label,
    plot_flip_rates,
    steer_prompt,
    steering_report,
)
from . import load_model_and_tokenizer

SHORT = {EMBEDDING_OFFSET: "embedding offset", MEAN_OFFSET: "mean offset", DIFFERENCE_OF_MEANS: "difference of means",
         RANDOM: "random"}  # fmt: skip
EXAMPLE_TOP = 3  # next tokens listed per direction for the example prompt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder (with its tokenizer) or Hub id, e.g. outputs/demo/model.")
    parser.add_argument("--layers", help="Comma-separated layers L, 0 (entering the first decoder layer) to the "
                                         "number of layers (after the last); default: all.")  # fmt: skip
    parser.add_argument("--alpha", default="1", help="The multiple of the direction to add; several comma-separated "
                                                     "values give one table each (default 1).")  # fmt: skip
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="The example prompt shown before and after steering.")
    parser.add_argument("--num_random", type=int, default=5, help="Random directions per layer (the baseline).")
    parser.add_argument("--num_prompts", type=int, default=NUM_PROMPTS,
                        help="Male/female prompt pairs: half fit the difference of means, half are "
                             "held out.")  # fmt: skip
    parser.add_argument("--positions", default="all", choices=POSITIONS,
                        help="Add the direction at every position (all) or at the prompt's last token "
                             "(last).")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Seeds the prompts, their split and the random directions.")


def _numbers(text: str | None, name: str, kind: type) -> list | None:
    if text is None:
        return None
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values:
        example = "0,1,2" if kind is int else "0.5,1,2"
        raise InsightError(f"--{name} {text!r} must be comma-separated numbers, e.g. {example}.")
    return values


def _percent(rate: float) -> str:
    return "n/a" if math.isnan(rate) else f"{100 * rate:.0f}%"


def _cell(result: SteeringResult, kind: str, row: int, column: int) -> str:
    rate = result.flip_rates[kind][row][column]
    return "n/a" if math.isnan(rate) else f"{_percent(rate)} ({result.flips[kind][row][column]}/{result.trials[kind]})"


def _table(result: SteeringResult, row: int) -> list[str]:
    header = ["layer", "norm", *(SHORT[kind] for kind in result.kinds)]
    rows = [[str(layer), f"{norm:.3g}", *(_cell(result, kind, row, column) for kind in result.kinds)]
            for column, (layer, norm) in enumerate(zip(result.layers, result.norms, strict=True))]  # fmt: skip
    change = [[str(layer), "", *("n/a" if math.isnan(v := result.p_she_change[kind][row][column]) else f"{v:+.3f}"
                                 for kind in result.kinds)] for column, layer in enumerate(result.layers)]  # fmt: skip
    widths = [max(len(line[i]) for line in [header, *rows, *change]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  " + "  ".join(f"{cell:<{width}}" for cell, width in zip(cells, widths, strict=True)).rstrip()

    return [line(header), *map(line, rows), f"  mean change of p({FEMALE_WORD}) (before {result.p_she_before:.3f}):",
            *map(line, change)]  # fmt: skip


def findings(result: SteeringResult, row: int) -> list[str]:
    """Sentences that state what the numbers say, whatever they are."""

    def best(kind: str, layers: set[int]) -> tuple[float, int | None]:
        cells = [(rate, layer) for rate, layer in zip(result.flip_rates[kind][row], result.layers, strict=True)
                 if layer in layers and not math.isnan(rate)]  # fmt: skip
        return max(cells, key=lambda cell: cell[0]) if cells else (math.nan, None)

    male, female = result.embedding_pair
    offset = f"E({female}) - E({male})"
    everywhere = set(result.layers)
    later = everywhere - {0}
    emb, emb_layer = best(EMBEDDING_OFFSET, everywhere)
    means, means_layer = best(DIFFERENCE_OF_MEANS, everywhere)
    random_best, _ = best(RANDOM, everywhere)
    random_later, _ = best(RANDOM, later)
    lines = [f"Embedding offset {offset}: flips {_percent(emb)} at its best layer {emb_layer}"]
    emb_later, _ = best(EMBEDDING_OFFSET, later)
    if 0 in everywhere and later:
        named = ", ".join(map(str, sorted(later)))
        lines[0] += f", at most {_percent(emb_later)} after a decoder layer (layer{'s' * (len(later) > 1)} {named})"
    lines[0] += "."
    lines.append(f"Difference of means: flips {_percent(means)} at its best layer {means_layer}; random directions "
                 f"of the same norm at most {_percent(random_best)}.")  # fmt: skip
    if 0 in everywhere and result.positions == "all" and result.flip_rates[EMBEDDING_OFFSET][row][0] > 0.5:
        lines.append(f"At layer 0, where the offset lives, adding it at every position turns E({male}) into "
                     f"E({female}) itself (and moves every other word alike): a respelling of the input.")  # fmt: skip
    if not later:
        return lines
    if not math.isnan(means) and means >= 0.5 and emb_later <= max(random_later, 0.1):
        lines.append(f"So the parallelogram in the input embeddings is not the direction the later layers read: "
                     f"after a decoder layer {offset} flips no more than random directions, at the very norm at which "
                     "the difference of means flips.")  # fmt: skip
    elif not math.isnan(means) and means >= 0.5 and emb_later >= 0.5 * means:
        lines.append(f"Here the later layers do read the input's parallelogram: {offset} flips {_percent(emb_later)} "
                     f"after a decoder layer, against {_percent(means)} for the difference of means.")  # fmt: skip
    else:
        lines.append(f"Neither direction steers clearly at alpha = {result.alphas[row]:g} (difference of means "
                     f"{_percent(means)}, {offset} {_percent(emb_later)} after a decoder layer); try another "
                     "--alpha.")  # fmt: skip
    last = result.num_layers
    pronouns = (MALE_WORD, FEMALE_WORD) in result.mean_offset_pairs
    if result.tied and pronouns and last in later:
        mean_last = result.flip_rates[MEAN_OFFSET][row][result.layers.index(last)]
        if mean_last > max(random_later, 0.1):
            column = result.layers.index(last)
            she, he = result.p_she_change[MEAN_OFFSET][row][column], result.p_he_change[MEAN_OFFSET][row][column]
            how = f", mostly by lowering p({MALE_WORD})" if -he > 2 * she else ""
            lines.append(f"The mean offset includes E({FEMALE_WORD}) - E({MALE_WORD}) itself, and the head is tied to "
                         f"the embedding: after the last layer that term scores {FEMALE_WORD!r} against "
                         f"{MALE_WORD!r} directly (it flips {_percent(mean_last)} there{how}: mean p({MALE_WORD}) "
                         f"{he:+.3f}, p({FEMALE_WORD}) {she:+.3f}).")  # fmt: skip
    return lines


def _example_line(name: str, words: list[float], top: list[tuple[str, float]]) -> str:
    tokens = ", ".join(f"{token!r} {p:.2f}" for token, p in top)
    return f"  {name:<20} p({MALE_WORD}) {words[0]:.3f}  p({FEMALE_WORD}) {words[1]:.3f}  top next tokens: {tokens}"


def run(args: argparse.Namespace) -> tuple[str, dict]:
    layers = _numbers(args.layers, "layers", int)
    alphas = _numbers(args.alpha, "alpha", float)
    model, tokenizer = load_model_and_tokenizer(args.model)
    encode_prompt(model, tokenizer, args.prompt)  # a bad example prompt fails before the long part
    result = steering_report(model, tokenizer, layers=layers, alphas=alphas, num_random=args.num_random,
                             seed=args.seed, num_prompts=args.num_prompts, positions=args.positions)  # fmt: skip
    png = plot_flip_rates(result, Path(args.output_dir) / "flip_rates.png")
    layer, alpha = result.best_layer(DIFFERENCE_OF_MEANS), result.alphas[0]
    column = result.layers.index(layer)
    kinds = [kind for kind in result.kinds if not math.isnan(result.flip_rates[kind][0][column])]
    examples = [steer_prompt(model, tokenizer, args.prompt, kind, layer, alpha, k=EXAMPLE_TOP,
                             positions=args.positions, seed=args.seed, prompts=result.prompts)
                for kind in kinds]  # fmt: skip

    where = "every position" if result.positions == "all" else "the prompt's last token only"
    pair = result.prompts.heldout[0]
    lines = [
        f"Steering {MALE_WORD} -> {FEMALE_WORD} in {args.model}: alpha x a direction added to the residual stream "
        f"at {where}, after L decoder layers (L = 0: entering the first).",
        f"Prompts: {result.num_fit + result.num_heldout} first sentences of TinyWorld royalty stories, each with a "
        f"male and a female subject ({pair[0]!r} / {pair[1]!r}); the next word is the next sentence's pronoun. "
        f"{result.num_fit} fit the difference of means; of the {result.num_heldout} held out, the model continues "
        f"{result.num_eligible} male ones with {MALE_WORD!r} rather than {FEMALE_WORD!r} (mean p({MALE_WORD}) "
        f"{result.p_he_before:.3f}, p({FEMALE_WORD}) {result.p_she_before:.3f}): those are the trials.",
        f"A flip: p({FEMALE_WORD}) > p({MALE_WORD}) after steering, and p({FEMALE_WORD}) has risen. Directions: "
        f"{'; '.join(kind_label(result, kind) for kind in result.kinds)}.",
    ]
    if result.layers[0] == 0:
        lines.append(f"norm: every direction's norm at that layer; layer 0 the embedding offset's own "
                     f"({result.norms[0]:.3g}, so alpha = 1 adds it exactly), later layers the difference of "
                     "means'.")  # fmt: skip
    else:
        lines.append("norm: every direction's norm at that layer: the difference of means'.")
    stream = ", ".join(f"{layer}: {norm:.3g}" for layer, norm in zip(result.layers, result.residual_norms, strict=True))
    cosines = ", ".join(f"{layer}: {cosine:+.2f}" for layer, cosine, means_norm in
                        zip(result.layers, result.cosines[EMBEDDING_OFFSET], result.means_norms, strict=True)
                        if means_norm > 0)  # fmt: skip
    lines += [
        f"  residual stream at the last token, mean norm per layer: {stream}",
        f"  raw norms in the embedding: embedding offset {result.raw_norms[EMBEDDING_OFFSET]:.3g}, mean offset "
        f"{result.raw_norms[MEAN_OFFSET]:.3g}",
    ]
    if cosines:
        lines.append(f"  cosine of the embedding offset to the difference of means per layer: {cosines}")
    for row, row_alpha in enumerate(result.alphas):
        lines += ["", f"Flip rate {MALE_WORD} -> {FEMALE_WORD} at alpha = {row_alpha:g}:", *_table(result, row)]
        lines += [f"  {sentence}" for sentence in findings(result, row)]
    lines += ["", f"Example {args.prompt!r}, steered at layer {layer} (the difference of means' best), alpha = "
                  f"{alpha:g}:"]  # fmt: skip
    if examples:
        lines.append(_example_line("unsteered", examples[0].words_before, examples[0].top_before))
    for example in examples:
        name = SHORT[example.kind] + (f" (seed {args.seed})" if example.kind == RANDOM else "")
        lines.append(_example_line(name, example.words_after, example.top_after))
    lines += ["", f"Chart of the flip rates: {png}"]
    data = {"result": result, "example_layer": layer, "examples": examples, "png": png}
    return "\n".join(lines), data


__all__ = ["add_arguments", "findings", "run"]
