"""Evaluate a causal LM on documents: perplexity, bits per byte (and the gap to the TinyWorld entropy floor),
next-token accuracy, and exact match of greedy answers to held-out arithmetic problems, all through the project's
`evaluate` metric modules.

Each document is scored as `[bos] text [eos]`: every token after bos is predicted once, and the bytes it covers are
the text's UTF-8 bytes plus one for the end-of-text (the TinyWorld floor's convention). So the model's bits per
byte on a TinyWorld document is its code length for that document, directly comparable with the generator's own
`-log2 p(document)`: the difference is how far the model is from the true distribution.
"""

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data.loading import unix_newlines
from .metrics import load_metric
from .tokenization import check_token_ids


def _windows(ids: list[int], length: int) -> Iterator[list[int]]:
    """Windows of at most `length` tokens overlapping by one, so that each token after the first is predicted once."""
    start = 0
    while True:
        yield ids[start : start + length]
        if start + length >= len(ids):
            return
        start += length - 1


@torch.no_grad()
def score_documents(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Iterable[str],
    batch_size: int = 16,
) -> list[dict]:
    """Per document: `nll_sum` (nats), `num_tokens` (predicted), `num_correct` (argmax hits), `num_bytes`.
    Documents longer than the model's context are scored in windows that overlap by one token."""
    model.eval()
    device = next(model.parameters()).device
    context = model.config.max_position_embeddings
    texts = [unix_newlines(text) for text in texts]  # as training tokenised them
    encoded = tokenizer(texts, add_special_tokens=True)["input_ids"]
    check_token_ids(model, encoded)
    rows = []  # (document index, window ids)
    for doc, ids in enumerate(encoded):
        rows.extend((doc, window) for window in _windows([*ids, tokenizer.eos_token_id], context))
    scores = [dict(nll_sum=0.0, num_tokens=0, num_correct=0, num_bytes=len(t.encode("utf-8")) + 1) for t in texts]
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(ids) for _, ids in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for row, (_, ids) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            mask[row, : len(ids)] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        logits = model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()  # (B, T-1, V)
        labels = input_ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")  # (B, T-1)
        valid = labels != -100
        correct = (logits.argmax(-1) == labels) & valid
        for row, (doc, _) in enumerate(chunk):
            scores[doc]["nll_sum"] += nll[row].sum().item()
            scores[doc]["num_tokens"] += int(valid[row].sum())
            scores[doc]["num_correct"] += int(correct[row].sum())
    return scores


PACKED_PARTS = ("whole", "cut", "bos")


@torch.no_grad()
def packed_loss_breakdown(
    model: PreTrainedModel,
    blocks: Iterable[dict],
    bos_token_id: int,
    eos_token_id: int,
    batch_size: int = 16,
) -> dict:
    """Where the mean loss on packed blocks (the Trainer's `eval_loss`) comes from, to reconcile it with the
    document-level loss of `evaluate_model`. `blocks` carry `input_ids` and, when packed with document positions,
    `position_ids`. Every target (each block token after the first) falls in one part:

    - `whole`: in a document that starts (bos) and ends (eos) inside the block; with document positions it is scored
      exactly as the document alone, so this part's loss is `evaluate_model`'s loss on those documents;
    - `cut`: in a document split by a block boundary; the tokens after the cut lost the context before it;
    - `bos`: a bos after the previous document's eos; document-level scoring never predicts bos.

    Returns `loss` (the mean over all targets), per part `{part}/nll_sum`, `{part}/num_tokens`, `{part}/loss`, and
    `whole_documents`: the token ids (bos..eos) of the whole documents, in order.
    """
    model.eval()
    device = next(model.parameters()).device
    sums = {part: 0.0 for part in PACKED_PARTS}
    counts = {part: 0 for part in PACKED_PARTS}
    whole_documents = []
    rows = iter(blocks)
    while chunk := list(itertools.islice(rows, batch_size)):
        input_ids = torch.tensor([row["input_ids"] for row in chunk], device=device)
        kwargs = {"position_ids": torch.tensor([row["position_ids"] for row in chunk], device=device)}
        logits = model(input_ids=input_ids, **(kwargs if "position_ids" in chunk[0] else {})).logits[:, :-1].float()
        nll = F.cross_entropy(logits.transpose(1, 2), input_ids[:, 1:], reduction="none")  # (B, T-1)
        for ids, row_nll in zip(input_ids.tolist(), nll.tolist(), strict=True):
            starts = [i for i, token in enumerate(ids) if token == bos_token_id and i > 0]
            for begin, end in zip([0, *starts], [*starts, len(ids)], strict=True):  # segments [begin, end)
                whole = ids[begin] == bos_token_id and ids[end - 1] == eos_token_id
                part = "whole" if whole else "cut"
                targets = row_nll[max(begin, 1) - 1 : end - 1]  # targets ids[max(begin, 1):end]
                if begin > 0:  # the segment's own bos, predicted from the previous segment's last token
                    sums["bos"] += targets[0]
                    counts["bos"] += 1
                    targets = targets[1:]
                sums[part] += math.fsum(targets)
                counts[part] += len(targets)
                if whole:
                    whole_documents.append(ids[begin:end])
    total = sum(counts.values())
    if total == 0:
        raise ValueError("No packed blocks to score; pass at least one block of two or more tokens.")
    result = {"loss": math.fsum(sums.values()) / total, "whole_documents": whole_documents}
    for part in PACKED_PARTS:
        result[f"{part}/nll_sum"], result[f"{part}/num_tokens"] = sums[part], counts[part]
        result[f"{part}/loss"] = sums[part] / counts[part] if counts[part] else float("nan")
    return result


@torch.no_grad()
def greedy_continuations(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[list[int]],
    max_new_tokens: int = 8,
    batch_size: int = 32,
) -> list[str]:
    """The greedy continuation of each tokenised prompt (left-padded batches), decoded without special tokens."""
    check_token_ids(model, prompt_ids)
    device = next(model.parameters()).device
    continuations = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = tokenizer.pad(
            {"input_ids": list(prompt_ids[start : start + batch_size])}, padding_side="left", return_tensors="pt"
        ).to(device)
        out = model.generate(
            **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
        continuations += tokenizer.batch_decode(
            out[:, batch["input_ids"].shape[1] :].tolist(), skip_special_tokens=True
        )
    return continuations


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    batch_size: int = 32,
    stop: str = ".",
) -> list[str]:
    """Greedy continuations of `prompts` (left-padded batches), cut at the first `stop` string."""
    ids = tokenizer(list(prompts))["input_ids"]
    texts = greedy_continuations(model, tokenizer, ids, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [text.split(stop)[0].strip() for text in texts]


def arithmetic_exact_match(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: Iterable[dict], batch_size: int = 32
) -> dict:
    """Exact match of greedy answers on problems with `prompt` ("three plus four equals") and `answer` ("seven")."""
    problems = list(problems)
    prompts = [p["prompt"] for p in problems]
    references = [p["answer"] for p in problems]
    predictions = generate_answers(model, tokenizer, prompts, batch_size=batch_size)
    result = load_metric("exact_match").compute(predictions=predictions, references=references)
    result["examples"] = [
        {"prompt": p, "answer": r, "generated": g}
        for p, r, g in zip(prompts[:5], references[:5], predictions[:5], strict=True)
    ]
    return result


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dataset: Iterable[dict],
    text_column: str = "text",
    heldout_arithmetic: Iterable[dict] | None = None,
    floor_bits_per_byte: float | None = None,
    batch_size: int = 16,
    max_documents: int | None = None,
) -> dict:
    """Language-modelling metrics of `model` on the documents of `dataset` (a `datasets.Dataset` or dicts).

    Returns `loss`, `perplexity`, `bits_per_byte`, `next_token_accuracy`, token and byte counts, and:
    - when the documents carry TinyWorld's exact `nll_bits`: `source_bits_per_byte` (the true distribution's code
      length on these very documents: the floor to compare with), `gap_bits_per_byte` = model - source and
      `gap_to_source` (relative), >= 0 up to sampling noise;
    - `floor_bits_per_byte` and `gap_to_floor` (relative) when the corpus floor is given: the true distribution's
      expected code length over all of the corpus, which a finite sample of documents may sit either side of;
    - `arithmetic_exact_match` (+ examples) when held-out problems are given.
    """
    rows = list(itertools.islice(dataset, max_documents))
    if not rows:
        raise ValueError("The evaluation dataset is empty; pass at least one document.")
    if text_column not in rows[0]:
        raise ValueError(f"The evaluation documents have no {text_column!r} field (fields: {sorted(rows[0])}).")
    scores = score_documents(model, tokenizer, [r[text_column] for r in rows], batch_size=batch_size)
    nll = [s["nll_sum"] for s in scores]
    tokens = [s["num_tokens"] for s in scores]
    num_bytes = [s["num_bytes"] for s in scores]
    perplexity = load_metric("perplexity").compute(nll_sum=nll, num_tokens=tokens)
    result = {
        "loss": perplexity["loss"],
        "perplexity": perplexity["perplexity"],
        "bits_per_byte": load_metric("bits_per_byte").compute(nll_sum=nll, num_bytes=num_bytes)["bits_per_byte"],
        "next_token_accuracy": load_metric("next_token_accuracy").compute(
            num_correct=[s["num_correct"] for s in scores], num_tokens=tokens
        )["accuracy"],
        "num_documents": len(rows),
        "num_tokens": sum(tokens),
        "num_bytes": sum(num_bytes),
    }
    if "nll_bits" in rows[0]:
        result["source_bits_per_byte"] = math.fsum(r["nll_bits"] for r in rows) / sum(num_bytes)
        result["gap_bits_per_byte"] = result["bits_per_byte"] - result["source_bits_per_byte"]
        result["gap_to_source"] = result["bits_per_byte"] / result["source_bits_per_byte"] - 1
    if floor_bits_per_byte is not None:
        result["floor_bits_per_byte"] = floor_bits_per_byte
        result["gap_to_floor"] = result["bits_per_byte"] / floor_bits_per_byte - 1
    if heldout_arithmetic is not None:
        exact = arithmetic_exact_match(model, tokenizer, heldout_arithmetic, batch_size=2 * batch_size)
        result["arithmetic_exact_match"] = exact["exact_match"]
        result["arithmetic_examples"] = exact["examples"]
    return result


__all__ = [
    "arithmetic_exact_match",
    "evaluate_model",
    "generate_answers",
    "greedy_continuations",
    "packed_loss_breakdown",
    "score_documents",
]
