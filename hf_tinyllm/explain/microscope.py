"""`tinyllm explain microscope MODEL`: one optimizer step under a microscope. Compute the loss of a batch, blame the
stages, update a COPY of the model with one AdamW step, and look at what changed: the next-token distributions on
the batch and on a held-out text, the embedding rows that moved (arrows on the word map), each stage's blame."""

import argparse
from pathlib import Path

from ..insight.gradients import plot_blame
from ..insight.microscope import (
    MicroscopeResult,
    TextStep,
    arrow_scale,
    optimizer_step_microscope,
    plot_rows_moved,
    plot_step_distributions,
    plot_word_arrows,
    step_settings,
)
from . import load_model_and_tokenizer
from .gradients import default_batch_texts
from .next import _percent

DEFAULT_HELDOUT = "the king worked in the fields kindly."  # not in the default batch; its last word is a 1-in-5 choice
NUM_ROWS_LISTED = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder (with its tokenizer) or Hub id, e.g. outputs/demo/model.")
    parser.add_argument("--text", action="append", metavar="TEXT",
                        help="A text of the batch (repeatable; packed into one row as training packs documents). "
                             "Default: four TinyWorld sentences.")  # fmt: skip
    parser.add_argument("--heldout", default=DEFAULT_HELDOUT, help="A text not in the batch, looked at before/after.")
    parser.add_argument("--settings", choices=("run", "fresh"), default="run",
                        help="run: the AdamW hyperparameters of the folder's training_summary.json (fresh ones "
                             "without it); fresh: AdamW(lr 1e-3, betas (0.9, 0.999), weight decay 0).")  # fmt: skip
    parser.add_argument("--learning_rate", type=float, default=None, help="Overrides the settings' learning rate.")
    parser.add_argument("--weight_decay", type=float, default=None, help="Overrides the settings' weight decay.")
    parser.add_argument("--top_k", type=int, default=5, help="How many top next tokens of the held-out text to show.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds torch's generator for the step.")


def _arrow(before: float, after: float, digits: int = 3) -> str:
    return f"{before:.{digits}f} -> {after:.{digits}f} ({after - before:+.{digits}f})"


def _settings_lines(result: MicroscopeResult) -> list[str]:
    s = result.settings
    decay = "on the blocks' 2-D matrices only (none on embeddings, norms)" if s.decay_matrices_only else \
        "on every parameter"  # fmt: skip
    clip = "no clipping"
    if s.max_grad_norm > 0:
        clip = (f"gradient norm clipped at {s.max_grad_norm:g} (this batch's: {result.gradient_norm:.3f}, "
                f"{'clipped' if result.clipped else 'not clipped'})")  # fmt: skip
    lines = [f"Optimizer ({s.source}: {s.note}):",
             f"  AdamW lr {s.learning_rate:g}, weight decay {s.weight_decay:g} {decay}, betas "
             f"({s.betas[0]:g}, {s.betas[1]:g}), eps {s.eps:g}, {clip}"]  # fmt: skip
    if result.momentum:
        lines.append("  The caller's AdamW carries momentum from earlier steps: the step is not sign-like.")
    else:
        state = "The run's optimizer state (its momentum) is not saved in the model folder, so this AdamW starts " \
            "fresh. " if s.source == "run" else ""  # fmt: skip
        lines.append(f"  {state}A fresh AdamW's first step is sign-like: m = g and v = g^2 after bias correction, so "
                     "each weight moves by lr * g / (|g| + eps), about lr, however large or small its gradient: "
                     f"{result.sign_like_fraction:.1%} of the changed weights moved by lr within 10%.")  # fmt: skip
        if s.source == "run":
            lines.append("  That is why training warms its learning rate up from 0: a first step at the peak lr "
                         "moves every weight by the full lr at once (see the probabilities jump below).")  # fmt: skip
    return lines


def _token_line(step: TextStep) -> str:
    pairs = [f"{token!r} {_percent(b)}->{_percent(a)}"
             for token, b, a in zip(step.tokens, step.probs_before, step.probs_after, strict=True)]  # fmt: skip
    return "    " + " | ".join(pairs)


def run(args: argparse.Namespace) -> tuple[str, dict]:
    model, tokenizer = load_model_and_tokenizer(args.model)
    folder = args.model if Path(args.model).is_dir() else None
    settings = step_settings(folder, args.settings, args.learning_rate, args.weight_decay)
    texts = args.text or default_batch_texts()
    result = optimizer_step_microscope(model, tokenizer, texts, args.heldout, seed=args.seed, top_k=args.top_k,
                                       settings=settings)  # fmt: skip
    out = Path(args.output_dir)
    files = [plot_step_distributions(result, out / "step_distributions.png"),
             plot_blame(result.blame, out / "step_blame.png",
                        title=f"Blame: where the batch's gradient goes (loss {result.blame.loss:.2f})"),
             plot_rows_moved(result, out / "rows_moved.png")]  # fmt: skip
    if result.word_map is not None:
        files.append(plot_word_arrows(result, out / "word_map_arrows.png"))

    lines = [f"One optimizer step under a microscope: compute the loss -> blame -> update -> (repeat), on a COPY of "
             f"{args.model} (the model itself is untouched).", "", *_settings_lines(result), ""]  # fmt: skip
    lines += [f"1. Compute the loss. The batch: {len(texts)} texts packed into one row of {result.num_tokens} tokens "
              "(each [bos] text [eos], attention kept inside each text, as in training):",
              *(f"  | {text}" for text in texts),
              f"  batch loss (the step's objective)  {_arrow(result.batch_loss_before, result.batch_loss_after)} "
              "nats per token",
              "  each text alone, loss in nats per token before -> after:"]  # fmt: skip
    width = max(len(repr(s.text)) for s in [*result.batch, result.heldout]) + 11
    for step in result.batch:
        lines.append(f"  {step.text!r:<{width}} {_arrow(step.loss_before, step.loss_after)}")
    heldout = result.heldout
    lines.append(f"  {'held out: ' + repr(heldout.text):<{width}} {_arrow(heldout.loss_before, heldout.loss_after)}")
    lines += ["  the probability of each actual next token, before -> after:"]
    for step in [*result.batch, heldout]:
        lines += [f"  {step.text!r}", _token_line(step)]

    blame = result.blame
    top = max(range(len(blame.stages)), key=lambda i: blame.shares[i])
    tied = " (tied: the head's use of the embedding matrix is in 'head', and so is the matrix's update)" \
        if blame.tied else ""  # fmt: skip
    lines += ["", f"2. Blame: each stage's share of the squared gradient norm of the batch's loss{tied}, and how far "
              "the step moved the stage (L2 norm of its change):",
              f"  {'stage':<22} {'blame':>7}  {'grad norm':>9}  {'update norm':>11}"]  # fmt: skip
    lines += [f"  {stage:<22} {100 * share:6.2f}%  {norm:9.4f}  {update:11.4f}"
              for stage, share, norm, update in zip(blame.stages, blame.shares, blame.norms, result.update_norms,
                                                    strict=True)]  # fmt: skip
    lines.append(f"  Most blame: {blame.stages[top]} ({blame.shares[top]:.1%}). AdamW divides each gradient by its "
                 "own size, so a stage's update norm follows its number of weights (about lr * sqrt(n)), not its "
                 "blame.")  # fmt: skip

    inputs = set(result.input_rows)
    head = " and the tied head's softmax sends gradient to every row" if result.tied else ""
    lines += ["", f"3. Update: the embedding rows that moved ({result.vocab_size} rows of width "
              f"{result.embedding_width}):",
              f"  input rows of the batch (ids that predict a next token)  {len(inputs)}",
              f"  rows with gradient                                     {result.rows_with_gradient}",
              f"  rows changed by the step                               {result.rows_changed}",
              f"  The lookup sends gradient to the batch's input rows only{head}. A row whose every weight moved by "
              f"lr moves lr * sqrt(C) = {result.sign_like_distance:.4f}: {result.rows_sign_like} rows did (within "
              "10%); rows of tokens the model hardly ever expects have gradients near eps and move less.",
              "  farthest:  " + ", ".join(f"{t!r} {d:.4f}{'' if r in inputs else ' (head only)'}"
                                          for r, t, d in result.rows_moved[:NUM_ROWS_LISTED]),
              "  nearest:   " + ", ".join(f"{t!r} {d:.4f}{'' if r in inputs else ' (head only)'}"
                                          for r, t, d in result.rows_moved[-NUM_ROWS_LISTED:])]  # fmt: skip
    if result.word_map is not None:
        scale = arrow_scale(result)
        moved = sorted(zip(result.word_map.words, result.word_shifts, strict=True), key=lambda w: -w[1])
        lines += [f"  On the word map (PCA of the embedding before the step; arrows x{scale:g}): the words' vectors "
                  f"moved {min(result.word_shifts):.4f} to {max(result.word_shifts):.4f} (farthest: "
                  + ", ".join(f"{w} {d:.4f}" for w, d in moved[:3]) + f"); the map's plane shows "
                  f"{result.map_plane_fraction:.0%} of that movement on average."]  # fmt: skip
    else:
        lines.append(f"  ({result.map_note})")

    lines += ["", f"4. The held-out text's next token after {result.focus_context!r} (its last word, actual "
              f"{result.focus_token!r}), before -> after the step:",
              f"  {'token':<12} {'before':>8}  {'after':>8}"]  # fmt: skip
    focus = result.top_ids.index(result.focus_id)
    lines += [f"  {token!r:<12} {_percent(b):>8}  {_percent(a):>8}{'  <- actual' if i == focus else ''}"
              for i, (token, b, a) in enumerate(zip(result.top_tokens, result.top_before, result.top_after,
                                                    strict=True))]  # fmt: skip
    change = "fell" if result.heldout.loss_after < result.heldout.loss_before else "rose"
    lines += [f"  The batch's loss fell by {result.batch_loss_before - result.batch_loss_after:.3f} nats; the held-out "
              f"text's {change} by {abs(result.heldout.loss_after - result.heldout.loss_before):.3f}: one step "
              "learns the batch, and moves everything else that shares its weights.",
              "", "Wrote " + ", ".join(map(str, files))]  # fmt: skip
    data = {"microscope": result, "batch_texts": texts, "files": [str(f) for f in files]}
    return "\n".join(lines), data


__all__ = ["add_arguments", "run"]
