"""`tinyllm explain gradients MODEL`: each stage's share of one example's gradient, and which rows of the input
embedding a batch's gradient and one AdamW step touch."""

import argparse
from pathlib import Path

import torch

from ..data.tinyworld import TinyWorld, TinyWorldConfig
from ..insight.gradients import embedding_sparsity, gradient_blame, plot_blame
from ..insight.model_parts import encode_prompt
from . import load_model_and_tokenizer

NUM_DEFAULT_TEXTS = 4  # first sentences of the first TinyWorld training documents (one per family)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder (with its tokenizer) or Hub id.")
    parser.add_argument("--text", default="two plus three equals five.", help="The example whose gradient is split.")
    parser.add_argument("--batch_text", action="append", metavar="TEXT",
                        help="A text of the batch for the embedding rows (repeatable; the texts are packed into "
                             "one row). Default: four TinyWorld sentences.")  # fmt: skip
    parser.add_argument("--learning_rate", type=float, default=1e-3, help="The fresh AdamW's learning rate.")
    parser.add_argument("--weight_decay", type=float, default=0.0, help="The fresh AdamW's weight decay.")


def default_batch_texts() -> list[str]:
    documents = TinyWorld(TinyWorldConfig(num_train_documents=NUM_DEFAULT_TEXTS)).documents("train")
    return [document.text.split(". ")[0].rstrip(".") + "." for document in documents]


def run(args: argparse.Namespace) -> tuple[str, dict]:
    model, tokenizer = load_model_and_tokenizer(args.model)
    blame = gradient_blame(model, tokenizer, args.text)
    png = plot_blame(blame, Path(args.output_dir) / "gradient_blame.png")
    texts = args.batch_text or default_batch_texts()
    ids = torch.cat([encode_prompt(model, tokenizer, text)[0] for text in texts]).unsqueeze(0)  # (1, T) packed
    sparsity = embedding_sparsity(model, ids, learning_rate=args.learning_rate, weight_decay=args.weight_decay)

    tied = " (tied: the head's use of the embedding matrix is in 'head')" if blame.tied else ""
    lines = [f"Gradient of the next-token loss of {args.text!r} ({blame.num_tokens} tokens, loss {blame.loss:.3f}):",
             f"each stage's share of the squared gradient norm{tied}"]  # fmt: skip
    lines += [f"  {stage:<22} {100 * share:6.2f}%   norm {norm:.4f}"
              for stage, norm, share in zip(blame.stages, blame.norms, blame.shares, strict=True)]  # fmt: skip
    lines += [
        f"  chart: {png}",
        "",
        f"Embedding rows touched by a batch of {len(texts)} texts packed into one row of {sparsity.num_tokens} tokens:",
        *(f"  | {text}" for text in texts),
        f"  vocabulary rows                 {sparsity.vocab_size}",
        f"  distinct tokens in the batch    {sparsity.distinct_tokens}",
        f"  rows with input-side gradient   {sparsity.rows_with_input_gradient}",
        f"  rows with gradient (all)        {sparsity.rows_with_gradient}",
        f"  rows changed by one AdamW step  {sparsity.rows_changed_by_adamw}  (lr {args.learning_rate:g}, "
        f"weight decay {args.weight_decay:g}, on a copy)",
        f"  {sparsity.note}",
    ]
    data = {"blame": blame, "sparsity": sparsity, "batch_texts": texts, "png": png}
    return "\n".join(lines), data


__all__ = ["add_arguments", "default_batch_texts", "run"]
