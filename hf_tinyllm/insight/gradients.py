"""Where the gradient of one example goes, and which rows of the embedding one batch and one AdamW step touch.

* `gradient_blame`: each stage's share of the squared gradient norm of a text's next-token loss. With TIED embeddings
  one matrix is both the input lookup and the head; the two parts are separated exactly by running the forward on
  `inputs_embeds = embed(ids).detach().requires_grad_()`: the matrix's own gradient is then the head's part only, and
  the input part is `inputs_embeds`' gradient added back to the rows of the ids (`index_add`).
* `embedding_sparsity`: the input lookup sends gradient only to the rows of the ids in the batch, a tied head to every
  row (its softmax puts probability on every token); and one AdamW step (Loshchilov & Hutter 2019) can move more rows
  than have gradient, because momentum keeps moving rows seen in earlier batches and decoupled weight decay shrinks
  every row. The step is taken on a deep copy of the model, never on the model itself. `embedding_rows` gives the
  same rows as ids, and `adamw_step_on_copy` the copy after the step (`insight.microscope` looks at it closely).

Gradients are taken with `torch.autograd.grad`, which returns them instead of accumulating into `.grad`: the caller's
`.grad`, weights and train/eval mode are left exactly as they were.
"""

import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .figures import pyplot, save_figure
from .model_parts import DecoderParts, InsightError, check_ids, encode_prompt, eval_mode, find_parts

INPUT_STAGE = "embeddings (input)"
# Decoder-layer parameters (name relative to the layer) that belong to the MLP half; the rest (attention, the input
# norm) to the attention half. Llama/TinyLLM: mlp, post_attention_layernorm; GPT-2: mlp, ln_2.
_MLP_PREFIXES = ("mlp.", "post_attention_layernorm.", "ln_2.")


@dataclass
class BlameResult:
    stages: list[str]  # "embeddings (input)", "layer i attention", "layer i MLP", ..., "final norm", "head"
    norms: list[float]  # each stage's gradient norm (the square root of its squared norm)
    shares: list[float]  # each stage's share of the total squared gradient norm; they sum to 1
    loss: float  # the text's mean next-token cross-entropy (nats)
    tied: bool = False  # the head shares the input embedding matrix; its two parts are in separate stages
    num_tokens: int = 0


@dataclass
class SparsityResult:
    vocab_size: int
    distinct_tokens: int  # distinct ids in the batch
    rows_with_input_gradient: int  # rows of the input embedding with a non-zero gradient from the lookup
    rows_with_gradient: int  # rows with a non-zero gradient in total (the head's part included when tied)
    rows_changed_by_adamw: int  # rows whose values one AdamW step (on a copy) changed
    tied: bool
    note: str
    num_tokens: int = 0  # B * T


def _stages(model: PreTrainedModel, parts: DecoderParts) -> list[tuple[str, list[torch.nn.Parameter]]]:
    """Every parameter of the model in exactly one stage, in forward order; the input embedding matrix is left out
    (its input-side gradient is computed apart) unless it is the tied head."""
    stages: list[tuple[str, list[torch.nn.Parameter]]] = []
    for index, layer in enumerate(parts.layers):
        named = list(layer.named_parameters())
        stages.append((f"layer {index} attention", [p for n, p in named if not n.startswith(_MLP_PREFIXES)]))
        stages.append((f"layer {index} MLP", [p for n, p in named if n.startswith(_MLP_PREFIXES)]))
    stages.append(("final norm", list(parts.final_norm.parameters())))
    stages.append(("head", list(parts.lm_head.parameters())))
    seen = {id(p) for _, params in stages for p in params} | {id(parts.embed_tokens.weight)}
    # Anything else (learned position embeddings) feeds the residual stream next to the token embedding.
    others = [p for p in model.parameters() if id(p) not in seen]
    return [(INPUT_STAGE, others), *stages]


def _next_token_gradients(
    model: PreTrainedModel, parts: DecoderParts, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None
) -> tuple[float, dict[int, torch.Tensor], torch.Tensor]:
    """The next-token loss of `input_ids` (B, T), the gradient of every trainable parameter (by id; the tied head's
    part only for a tied embedding) and the input-side gradient of the embedding matrix (V, C). `position_ids`
    (B, T) restarting at each packed document keep the documents apart, as in training."""
    weight = parts.embed_tokens.weight
    params = [p for p in model.parameters() if p.requires_grad]
    with eval_mode(model), torch.enable_grad():
        inputs_embeds = parts.embed_tokens(input_ids).detach().requires_grad_(weight.requires_grad)  # (B, T, C)
        targets = params + ([inputs_embeds] if weight.requires_grad else [])
        if not targets:
            raise InsightError("No parameter of the model requires a gradient; unfreeze a stage to see gradients.")
        loss = model(inputs_embeds=inputs_embeds, labels=input_ids, position_ids=position_ids, use_cache=False).loss
        grads = torch.autograd.grad(loss, targets, allow_unused=True)
    input_grad = torch.zeros_like(weight, dtype=torch.float32)
    if weight.requires_grad and grads[-1] is not None:
        input_grad.index_add_(0, input_ids.reshape(-1), grads[-1].reshape(-1, weight.shape[1]).float())
    by_id = {id(p): g for p, g in zip(params, grads[: len(params)], strict=True) if g is not None}
    return float(loss.detach()), by_id, input_grad


def _check_batch(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    if input_ids.dim() != 2 or input_ids.shape[1] < 2:
        raise InsightError(f"input_ids must be a (B, T) batch with T >= 2 (a next token to predict), got shape "
                           f"{tuple(input_ids.shape)}; give longer texts.")  # fmt: skip
    check_ids(model, input_ids)
    return input_ids.to(model.device)


def _squared_norm(tensor: torch.Tensor) -> float:
    return float(tensor.double().pow(2).sum())


def gradient_blame(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> BlameResult:
    """Each stage's share of the squared gradient norm of `text`'s next-token loss (one example, eval mode).

    Stages: the input embedding (the lookup's gradient, plus learned position embeddings if any), each layer's
    attention (with its input norm) and MLP (with its post-attention norm), the final norm and the head (for a tied
    embedding, the matrix's gradient through the head alone). A frozen stage gets 0."""
    parts = find_parts(model)
    ids = _check_batch(model, encode_prompt(model, tokenizer, text))
    loss, grads, input_grad = _next_token_gradients(model, parts, ids)
    return blame_from_gradients(model, parts, loss, grads, input_grad, ids.shape[1])


def blame_from_gradients(
    model: PreTrainedModel,
    parts: DecoderParts,
    loss: float,
    grads: dict[int, torch.Tensor],
    input_grad: torch.Tensor,
    num_tokens: int,
) -> BlameResult:
    """The stages' shares of the squared gradient norm, from `_next_token_gradients`' loss, gradients (by parameter
    id) and input-side gradient of the embedding; `num_tokens` is recorded as is (T of one text, B * T of a batch)."""
    names, squares = [], []
    for name, params in _stages(model, parts):
        square = sum(_squared_norm(grads[id(p)]) for p in params if id(p) in grads)
        if name == INPUT_STAGE:
            square += _squared_norm(input_grad)
        names.append(name)
        squares.append(square)
    total = sum(squares)
    shares = [s / total if total > 0 else 0.0 for s in squares]
    return BlameResult(names, [math.sqrt(s) for s in squares], shares, loss, parts.tied, num_tokens)


def _optimizer_on_copy(
    model: PreTrainedModel, replica: PreTrainedModel, optimizer, learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """A fresh AdamW over `replica`, or one with the caller's AdamW's hyperparameters and state (momentum, step
    counts) moved onto `replica`'s parameters (matched by position in `model.parameters()`)."""
    replica_params = list(replica.parameters())
    if optimizer is None:
        trainable = [p for p in replica_params if p.requires_grad]
        return torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=weight_decay)
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    if not isinstance(inner, torch.optim.AdamW):
        raise InsightError(f"optimizer must be a torch.optim.AdamW, got {type(inner).__name__}; pass None for a "
                           "fresh AdamW.")  # fmt: skip
    position = {id(p): i for i, p in enumerate(model.parameters())}
    groups = []
    for group in inner.param_groups:
        if any(id(p) not in position for p in group["params"]):
            raise InsightError("The optimizer holds parameters that are not the model's; pass the optimizer that "
                               "trains this model.")  # fmt: skip
        hyper = {key: value for key, value in group.items() if key != "params"}
        groups.append({**hyper, "params": [replica_params[position[id(p)]] for p in group["params"]]})
    replica_optimizer = torch.optim.AdamW(groups)
    # load_state_dict keeps the same tensors when device and dtype match: copy them, or the step would move the
    # caller's momentum and step counts.
    replica_optimizer.load_state_dict(copy.deepcopy(inner.state_dict()))
    return replica_optimizer


def _sparsity_note(result: SparsityResult, momentum: bool, decay: bool) -> str:
    note = (f"The batch holds {result.distinct_tokens} distinct tokens of {result.vocab_size}, and the input lookup "
            f"sends gradient to their rows only: {result.rows_with_input_gradient}")  # fmt: skip
    if result.rows_with_input_gradient < result.distinct_tokens:
        note += " (a token seen only in a row's last position predicts nothing, so its row gets none)"
    note += "; "
    if result.tied:
        note += (f"the head shares the matrix and its softmax reaches every token, so {result.rows_with_gradient} "
                 "rows get gradient. ")  # fmt: skip
    else:
        note += "the head has its own matrix, so no other row of the input embedding gets gradient. "
    note += f"One AdamW step changed {result.rows_changed_by_adamw} rows"
    reasons = [reason for reason, present in (("momentum from earlier batches keeps moving rows seen before", momentum),
               ("decoupled weight decay shrinks every row", decay)) if present]  # fmt: skip
    if reasons:
        return note + ": " + " and ".join(reasons) + ", with or without gradient in this batch."
    return note + ": without momentum or weight decay, AdamW moves exactly the rows that have gradient."


def adamw_step_on_copy(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    max_grad_norm: float = 0.0,
    position_ids: torch.Tensor | None = None,
) -> tuple[PreTrainedModel, torch.optim.Optimizer, float]:
    """A deep copy of `model` after one AdamW step on the next-token loss of `input_ids` (B, T), in eval mode (no
    dropout), the copy's optimizer and the gradient norm before clipping. The optimizer is a fresh
    AdamW(`learning_rate`, `weight_decay`) when `optimizer` is None, else the caller's torch AdamW's hyperparameters
    and state, copied; `max_grad_norm` > 0 clips the global gradient norm first, as training does; `position_ids`
    (B, T) restarting at each packed document keep the documents apart. `model`, its `.grad` and the caller's
    optimizer are left as found."""
    ids = _check_batch(model, input_ids)
    replica = copy.deepcopy(model)
    replica_optimizer = _optimizer_on_copy(model, replica, optimizer, learning_rate, weight_decay)
    replica.zero_grad(set_to_none=True)
    replica.eval()
    replica(input_ids=ids, labels=ids, position_ids=position_ids, use_cache=False).loss.backward()
    trainable = [p for p in replica.parameters() if p.grad is not None]
    norm = float(torch.nn.utils.get_total_norm([p.grad for p in trainable])) if trainable else 0.0
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm)
    replica_optimizer.step()
    replica.zero_grad(set_to_none=True)
    return replica, replica_optimizer, norm


@dataclass
class EmbeddingRows:
    """The rows (ids, ascending) of the input embedding that one batch's next-token loss and one AdamW step touch."""

    input_gradient: list[int]  # rows with a non-zero gradient from the input lookup
    gradient: list[int]  # rows with a non-zero gradient in total (the tied head's part included)
    changed: list[int]  # rows whose values one AdamW step (on a copy) changed
    distinct_tokens: int  # distinct ids in the batch
    vocab_size: int
    tied: bool
    momentum: bool  # the step's optimizer had momentum from earlier steps (the caller's AdamW)
    decay: bool  # the embedding matrix's parameter group has weight decay
    num_tokens: int  # B * T


def _rows(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


def rows_touched(
    parts: DecoderParts,
    ids: torch.Tensor,
    grads: dict[int, torch.Tensor],
    input_grad: torch.Tensor,
    replica: PreTrainedModel,
    replica_optimizer: torch.optim.Optimizer,
    optimizer: torch.optim.Optimizer | None,
) -> EmbeddingRows:
    """`EmbeddingRows` from `_next_token_gradients`' gradients of `ids` and a copy after `adamw_step_on_copy`
    (`optimizer`: the caller's, or None for a fresh one)."""
    weight = parts.embed_tokens.weight
    total_grad = input_grad + grads[id(weight)].float() if parts.tied and id(weight) in grads else input_grad
    replica_weight = find_parts(replica).embed_tokens.weight
    state = replica_optimizer.state.get(replica_weight, {})
    group = next((g for g in replica_optimizer.param_groups if any(p is replica_weight for p in g["params"])), {})
    return EmbeddingRows(
        input_gradient=_rows((input_grad != 0).any(dim=1)),
        gradient=_rows((total_grad != 0).any(dim=1)),
        changed=_rows((replica_weight.detach() != weight.detach()).any(dim=1)),
        distinct_tokens=int(ids.unique().numel()),
        vocab_size=weight.shape[0],
        tied=parts.tied,
        momentum=optimizer is not None and bool(state) and float(state.get("step", 1)) > 1,
        decay=float(group.get("weight_decay", 0.0)) > 0,
        num_tokens=ids.numel(),
    )


def embedding_rows(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    position_ids: torch.Tensor | None = None,
) -> EmbeddingRows:
    """Which rows of the input embedding (V, C) one batch `input_ids` (B, T) touches under its next-token loss, as
    row ids: rows with gradient from the lookup and in total, and rows one AdamW step on a copy changes (see
    `embedding_sparsity`, which counts them). `position_ids`: as in `adamw_step_on_copy`."""
    parts = find_parts(model)
    ids = _check_batch(model, input_ids)
    _, grads, input_grad = _next_token_gradients(model, parts, ids, position_ids)
    replica, replica_optimizer, _ = adamw_step_on_copy(model, ids, optimizer, learning_rate, weight_decay,
                                                       position_ids=position_ids)  # fmt: skip
    return rows_touched(parts, ids, grads, input_grad, replica, replica_optimizer, optimizer)


def embedding_sparsity(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    optimizer: torch.optim.Optimizer | None = None,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
) -> SparsityResult:
    """Which rows of the input embedding (V, C) one batch `input_ids` (B, T) touches under its next-token loss:
    rows with gradient from the lookup and in total, and rows one AdamW step changes. The step runs on a deep copy
    (eval mode, so no dropout): a fresh AdamW(`learning_rate`, `weight_decay`) when `optimizer` is None, else the
    caller's torch AdamW's hyperparameters and state (momentum), which move rows that are not in the batch."""
    rows = embedding_rows(model, input_ids, optimizer, learning_rate, weight_decay)
    result = SparsityResult(
        vocab_size=rows.vocab_size,
        distinct_tokens=rows.distinct_tokens,
        rows_with_input_gradient=len(rows.input_gradient),
        rows_with_gradient=len(rows.gradient),
        rows_changed_by_adamw=len(rows.changed),
        tied=rows.tied,
        note="",
        num_tokens=rows.num_tokens,
    )
    result.note = _sparsity_note(result, rows.momentum, rows.decay)
    return result


def plot_blame(result: BlameResult, path: str | Path, title: str | None = None) -> Path:
    """A horizontal bar chart of each stage's share of the squared gradient norm, in forward order top to bottom
    (`title`: instead of the one-example title)."""
    plt = pyplot()

    colors = ["tab:purple" if s == INPUT_STAGE else "tab:blue" if "attention" in s else "tab:orange" if "MLP" in s
              else "tab:grey" for s in result.stages]  # fmt: skip
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * len(result.stages)), dpi=100)
    positions = range(len(result.stages))
    ax.barh(positions, [100 * s for s in result.shares], color=colors)
    ax.set_yticks(list(positions), result.stages, fontsize=9)
    ax.invert_yaxis()
    top = max(100 * s for s in result.shares) if result.shares else 0.0
    for y, share in zip(positions, result.shares, strict=True):
        ax.text(100 * share + top * 0.01, y, f"{100 * share:.1f}%", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15 or 1.0)
    ax.set_xlabel("share of the squared gradient norm (%)")
    tied = ", tied head" if result.tied else ""
    ax.set_title(title or f"Where the gradient of one example goes (loss {result.loss:.2f}{tied})", fontsize=10)
    ax.grid(axis="x", alpha=0.2)
    return save_figure(fig, path)


__all__ = [
    "BlameResult",
    "EmbeddingRows",
    "SparsityResult",
    "adamw_step_on_copy",
    "blame_from_gradients",
    "embedding_rows",
    "embedding_sparsity",
    "gradient_blame",
    "plot_blame",
    "rows_touched",
]
