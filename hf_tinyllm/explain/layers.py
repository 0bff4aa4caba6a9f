"""`tinyllm explain layers MODEL`: the logit lens (what the model would predict if it stopped after each layer) and
the attention maps of every head, for one prompt."""

import argparse
from pathlib import Path

from ..insight.layers import attention_maps, logit_lens, plot_attention, plot_logit_lens
from ..insight.model_parts import InsightError
from . import load_model_and_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder or Hub id, e.g. outputs/demo/model.")
    parser.add_argument("--prompt", default="two plus three equals", help="The text to look inside.")
    parser.add_argument("--k", type=int, default=5, help="How many top tokens per layer to list.")
    parser.add_argument(
        "--position",
        type=int,
        default=-1,
        help="Which prompt position's per-layer predictions to print (0-based; negative counts "
        "from the end; default: the last).",
    )


def run(args: argparse.Namespace) -> tuple[str, dict]:
    if args.k < 1:
        raise InsightError(f"--k {args.k} must be >= 1 (how many top tokens per layer to list).")
    model, tokenizer = load_model_and_tokenizer(args.model)
    lens = logit_lens(model, tokenizer, args.prompt, k=args.k)
    n_tokens = len(lens.tokens)
    if not -n_tokens <= args.position < n_tokens:
        raise InsightError(
            f"--position {args.position} is outside the prompt's {n_tokens} tokens; "
            f"use 0..{n_tokens - 1} or -1 for the last."
        )
    position = args.position % n_tokens
    attention = attention_maps(model, tokenizer, args.prompt)
    output_dir = Path(args.output_dir)
    lens_png = plot_logit_lens(lens, output_dir / "logit_lens.png")
    attention_png = plot_attention(attention, output_dir / "attention.png")

    name_width = max(len(name) for name in lens.layer_names)
    cells = [
        [f"{t!r} {p:.1%}" for t, p in zip(tokens[position], probs[position], strict=True)]
        for tokens, probs in zip(lens.top_tokens, lens.top_probabilities, strict=True)
    ]
    cell_width = max(len(cell) for row in cells for cell in row)
    final = f"p({lens.final_token!r})"
    lines = [
        f"Prompt {args.prompt!r} = {n_tokens} tokens: {' | '.join(map(repr, lens.tokens))}",
        "",
        f"Logit lens after position {position} ({lens.tokens[position]!r}): each layer's residual stream decoded with "
        "the final norm and head",
        f"  {'':<{name_width}}  {'KL bits':>7}"
        + (f"  {final:>10}" if position == n_tokens - 1 else "")
        + f"  top {args.k} next tokens",
    ]
    for layer, name in enumerate(lens.layer_names):
        p_final = f"  {lens.final_token_probabilities[layer]:>10.2%}" if position == n_tokens - 1 else ""
        row = "  ".join(f"{cell:<{cell_width}}" for cell in cells[layer]).rstrip()
        lines.append(f"  {name:<{name_width}}  {lens.kl_bits[layer][position]:>7.2f}{p_final}  {row}")
    lines += ["", f"Where each head looks from position {position} ({attention.tokens[position]!r}): top key token"]
    for layer, heads in enumerate(attention.weights):
        looks = []
        for head, weights in enumerate(heads):
            row = weights[position]
            key = max(range(len(row)), key=row.__getitem__)
            looks.append(f"h{head + 1} {attention.tokens[key]!r} {row[key]:.0%}")
        lines.append(f"  layer {layer + 1:<{name_width - 6}}  " + ", ".join(looks))
    lines += [
        "",
        f"Wrote {lens_png} (layers x positions, top next token and its probability)",
        f"Wrote {attention_png} (layers x heads attention maps)",
    ]
    data = {
        "logit_lens": lens,
        "attention": attention,
        "position": position,
        "files": [str(lens_png), str(attention_png)],
    }
    return "\n".join(lines), data


__all__ = ["add_arguments", "run"]
