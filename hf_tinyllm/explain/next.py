"""`tinyllm explain next MODEL`: be the model. Its next-token distribution for a prompt, the same after the sampling
settings, where a guessed word ranks, and how surprised it is by each token of a text (a coloured strip PNG)."""

import argparse
from pathlib import Path

from ..insight.model_parts import InsightError
from ..insight.next_token import (
    TopTokens,
    greedy_continuation,
    next_token_distribution,
    plot_surprise,
    rank_guess,
    sampling_processors,
    text_surprise,
)
from ..insight.truth import TinyWorldTruth, compare_along, compare_next_word, world_of
from . import load_model_and_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder or Hub id, e.g. outputs/demo/model.")
    parser.add_argument("--prompt", default="two plus three equals", help="The text whose next token is predicted.")
    parser.add_argument("--k", type=int, default=10, help="How many top tokens to list.")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (> 0).")
    parser.add_argument("--top_k", type=int, default=None, help="Keep only the k most likely tokens when sampling.")
    parser.add_argument("--top_p", type=float, default=None, help="Keep the smallest set of tokens with mass top_p.")
    parser.add_argument("--guess", default=None, help="A word: where does it rank as the next word?")
    parser.add_argument(
        "--text",
        default=None,
        help="Text for the surprise strip (default: the prompt and the model's greedy continuation).",
    )


def _percent(p: float) -> str:
    """A probability as a percentage, small ones in scientific notation rather than 0.00%."""
    return f"{p:.2%}" if p >= 5e-5 or p == 0 else f"{p * 100:.1e}%"


def _table(top: TopTokens) -> list[str]:
    width = max([len(repr(t)) for t in top.tokens] + [5])
    lines = [f"  {'rank':>4}  {'token':<{width}}  {'prob':>8}"]
    lines += [
        f"  {rank:>4}  {token!r:<{width}}  {_percent(p):>8}"
        for rank, (token, p) in enumerate(zip(top.tokens, top.probabilities, strict=True), start=1)
    ]
    return lines


def _settings(temperature: float, top_k: int | None, top_p: float | None) -> str:
    return f"temperature {temperature:g}, top_k {top_k or 'off'}, top_p {'off' if top_p is None else f'{top_p:g}'}"


def run(args: argparse.Namespace) -> tuple[str, dict]:
    model, tokenizer = load_model_and_tokenizer(args.model)
    dist = next_token_distribution(model, tokenizer, args.prompt, args.k, args.temperature, args.top_k, args.top_p)
    guess = rank_guess(model, tokenizer, args.prompt, args.guess) if args.guess is not None else None
    text = args.text if args.text is not None else greedy_continuation(model, tokenizer, args.prompt)
    surprise = text_surprise(model, tokenizer, text)
    strip = plot_surprise(surprise, Path(args.output_dir) / "surprise.png")

    lines = [
        f"Prompt {args.prompt!r} = {len(dist.prompt_tokens)} tokens: {' | '.join(map(repr, dist.prompt_tokens))}",
        "",
        f"The model's next token: entropy {dist.model.entropy_bits:.2f} bits over {dist.vocab_size} tokens",
        *_table(dist.model),
        "",
        f"After sampling ({_settings(dist.temperature, dist.top_k, dist.top_p)}): {dist.sampling.nonzero} of "
        f"{dist.vocab_size} tokens keep non-zero probability, entropy {dist.sampling.entropy_bits:.2f} bits",
    ]
    generate_call = "model.generate(" + ", ".join(f"{k}={v}" for k, v in dist.generate_kwargs.items()) + ")"
    if sampling_processors(dist.temperature, dist.top_k, dist.top_p):
        lines += [*_table(dist.sampling), f"  = what {generate_call} samples from"]
    else:
        lines.append(
            f"  unchanged: {generate_call} samples from the model's distribution (generate's default top_k is 50)"
        )
    if guess is not None:
        several = ""
        if len(guess.tokens) > 1:
            several = f"; the whole word ({len(guess.tokens)} tokens) {_percent(guess.word_probability)}"
        lines += [
            "",
            f"Your guess {guess.word!r}: its first token {guess.tokens[0]!r} ranks {guess.rank} of {guess.vocab_size} "
            f"with {_percent(guess.probability)}{several}; the model's top token is {guess.top_token!r} "
            f"({guess.top_probability:.2%}).",
        ]
    width = max([len(repr(t)) for t in surprise.tokens] + [5])
    lines += [
        "",
        f"Surprise of {surprise.text!r} (after {surprise.context_token!r}): {surprise.total_bits:.2f} bits in all, "
        f"{surprise.mean_bits:.2f} bits per token",
        f"  {'token':<{width}}  {'bits':>6}",
        *[f"  {t!r:<{width}}  {b:>6.2f}" for t, b in zip(surprise.tokens, surprise.bits, strict=True)],
        "",
        f"Wrote {strip} (each token coloured by its surprise in bits).",
    ]
    truth_lines, truth = _truth(model, tokenizer, args)
    lines += truth_lines
    data = {"next_token": dist, "guess": guess, "surprise": surprise, "truth": truth, "files": [str(strip)]}
    return "\n".join(lines), data


def _truth(model, tokenizer, args: argparse.Namespace) -> tuple[list[str], dict | None]:
    """The generator's exact next word beside the model's, and word by word along the text, for TinyWorld text."""
    world, source = world_of(args.model if Path(args.model).is_dir() else None)
    truth = TinyWorldTruth(world)
    try:
        comparison = compare_next_word(model, tokenizer, args.prompt, truth)
    except InsightError as err:
        return ["", f"The truth beside the model: none here ({err})"], None
    exact = comparison.truth
    width = max([len(w) for w in exact.words[: args.k]] + [4])
    lines = ["", f"The truth beside the model ({source}): the next word after {args.prompt!r}",
             f"  {'word':<{width}}  {'true':>8}  {'model':>8}"]  # fmt: skip
    lines += [f"  {w:<{width}}  {_percent(p):>8}  {_percent(q):>8}"
              for w, p, q in list(zip(exact.words, exact.probabilities, comparison.model_probabilities,
                                      strict=True))[: args.k]]  # fmt: skip
    if len(exact.words) > args.k:
        lines.append(f"  ... {len(exact.words) - args.k} more words")
    lines.append(f"  true entropy {exact.entropy_bits:.3f} bits; KL(truth || model) = {comparison.gap_bits:.3f} bits: "
                 "what the model has left to learn here")  # fmt: skip
    data = {"source": source, "next_word": comparison}
    try:
        along = compare_along(model, tokenizer, args.text if args.text is not None else args.prompt, truth)
    except InsightError as err:
        lines.append(f"  (word by word: {err})")
        return lines, data
    data["along"] = along
    width = max([len(r.word) for r in along] + [4])
    lines += ["", "Word by word: the true conditional entropy (what no model avoids), the model's surprise, and "
              "the gap (KL, what is left to learn)",
              f"  {'word':<{width}}  {'entropy':>7}  {'model':>7}  {'gap':>7}"]  # fmt: skip
    lines += [f"  {r.word:<{width}}  {r.entropy_bits:>7.3f}  {r.model_surprise_bits:>7.3f}  {r.gap_bits:>7.3f}"
              for r in along]  # fmt: skip
    total = sum(r.gap_bits for r in along)
    lines.append(f"  in all: {sum(r.entropy_bits for r in along):.3f} bits of true entropy, the model's surprise "
                 f"{sum(r.model_surprise_bits for r in along):.3f} bits, gap {total:.3f} bits")  # fmt: skip
    return lines, data


__all__ = ["add_arguments", "run"]
