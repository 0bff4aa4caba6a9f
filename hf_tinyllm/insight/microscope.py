"""One optimizer step under a microscope: compute the loss, blame, update, on the learner's own model.

`optimizer_step_microscope` packs a batch of texts into one row (the texts one after the other, each with the
tokenizer's bos, as training packs documents) and takes ONE AdamW step on its next-token loss, on a deep copy of the
model (`gradients.adamw_step_on_copy`, eval mode so no dropout); the model itself is never changed. It reports:

* the next-token distributions before and after the step: each batch text's loss and the probability of each of its
  actual next tokens (each text alone, from its start), the same for a held-out text, and the held-out text's top-k
  next tokens at its last word;
* each stage's blame (`gradients.blame_from_gradients` on the batch) next to how far the step moved that stage;
* which rows of the embedding moved and how far (the L2 norm of each row's change), and the word map
  (`geometry.word_map`) before and after: both projected on the 2-D PCA basis of the embedding BEFORE the step.

A fresh AdamW's first step is sign-like: its bias-corrected moments are m = g and v = g^2, so each weight moves by
lr * g / (|g| + eps), about lr, whatever the size of its gradient. Every row with gradient moves by about
lr * sqrt(C) then; with a tied head that is every row. A run's momentum (its optimizer state) is not saved in the
model folder, so "the run's settings" are its hyperparameters on a fresh AdamW.
"""

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..model_card import SUMMARY_FILE
from .figures import pyplot, save_figure
from .geometry import WordMap, _place_labels, word_map, word_vector
from .gradients import (
    INPUT_STAGE,
    BlameResult,
    _next_token_gradients,
    _stages,
    adamw_step_on_copy,
    blame_from_gradients,
    rows_touched,
)
from .model_parts import InsightError, check_ids, encode_prompt, eval_mode, find_parts, token_text, word_token_ids

FRESH_BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults
FRESH_LEARNING_RATE = 1e-3
SIGN_LIKE_TOLERANCE = 0.1  # a changed weight "moved by lr" when |change| is within 10% of lr


@dataclass
class StepSettings:
    """The AdamW hyperparameters of the step, and where they come from."""

    source: str  # "run" (the folder's training_summary.json) or "fresh" (defaults and flags)
    learning_rate: float
    weight_decay: float
    betas: tuple[float, float] = FRESH_BETAS
    eps: float = 1e-8
    decay_matrices_only: bool = False  # weight decay on the blocks' 2-D matrices only, as training does
    max_grad_norm: float = 0.0  # clip the global gradient norm first; 0: no clipping
    note: str = ""


def step_settings(
    model_dir: str | Path | None,
    settings: str = "run",
    learning_rate: float | None = None,
    weight_decay: float | None = None,
) -> StepSettings:
    """AdamW settings for the step: `settings="run"` reads the hyperparameters of `model_dir`/training_summary.json
    (the peak learning rate, weight decay on 2-D matrices only, betas, eps, gradient clipping) and falls back to
    fresh ones without it; `"fresh"` is AdamW(lr 1e-3, betas (0.9, 0.999), weight decay 0 on every parameter).
    `learning_rate` and `weight_decay` override either."""
    if settings not in ("run", "fresh"):
        raise InsightError(f"settings={settings!r} is not one of 'run' and 'fresh'; pick one.")
    result = StepSettings("fresh", FRESH_LEARNING_RATE, 0.0, note="a fresh AdamW with torch's default betas")
    summary = Path(model_dir) / SUMMARY_FILE if model_dir is not None else None
    if settings == "run" and summary is not None and summary.is_file():
        hyper = json.loads(summary.read_text()).get("hyperparameters", {})
        from ..training.arguments import OptimArguments  # the run's defaults for what the summary leaves out

        defaults = OptimArguments()
        result = StepSettings(
            "run",
            float(hyper.get("learning_rate", defaults.learning_rate)),
            float(hyper.get("weight_decay", defaults.weight_decay)),
            (float(hyper.get("adam_beta1", defaults.adam_beta1)), float(hyper.get("adam_beta2", defaults.adam_beta2))),
            float(hyper.get("adam_epsilon", defaults.adam_epsilon)),
            decay_matrices_only=True,
            max_grad_norm=float(hyper.get("max_grad_norm", defaults.max_grad_norm)),
            note=f"the run's hyperparameters from {summary} (its peak learning rate), on a fresh AdamW",
        )
        if hyper.get("optimizer", "adamw") != "adamw":
            result.note += f"; the run trained with {hyper['optimizer']}, the step is AdamW on every parameter"
    elif settings == "run":
        result.note = f"no {SUMMARY_FILE} in {model_dir}, so " + result.note
    if learning_rate is not None:
        result.learning_rate = learning_rate
    if weight_decay is not None:
        result.weight_decay = weight_decay
    if not result.learning_rate > 0 or not result.weight_decay >= 0:
        raise InsightError(f"learning_rate {result.learning_rate:g} must be > 0 and weight_decay "
                           f"{result.weight_decay:g} >= 0; pass e.g. --learning_rate 1e-3 --weight_decay 0."
                           )  # fmt: skip
    return result


@dataclass
class TextStep:
    """One text's next-token predictions before and after the step (the text alone, from its start)."""

    text: str
    tokens: list[str]  # the predicted tokens: every token of `document_ids(text)` after the first (eos included)
    probs_before: list[float]  # the probability of each actual next token
    probs_after: list[float]
    loss_before: float  # mean -ln p over the predicted tokens (nats)
    loss_after: float


@dataclass
class MicroscopeResult:
    """What one AdamW step on a copy changed (see `optimizer_step_microscope`); losses in nats per token."""

    batch_texts: list[str]
    batch: list[TextStep]  # each batch text alone
    heldout: TextStep
    num_tokens: int  # tokens of the packed row the step was taken on
    batch_loss_before: float  # the step's objective: the packed row's mean next-token loss (nats)
    batch_loss_after: float
    focus_context: str  # the held-out text up to its last word
    focus_token: str  # the held-out text's last word's (first) token, the actual next token there
    focus_id: int  # its id
    top_ids: list[int]  # the top-k next tokens there before, then after (and the actual one), without repeats
    top_tokens: list[str]  # their text
    top_before: list[float]  # their probabilities before the step
    top_after: list[float]  # and after
    blame: BlameResult  # the batch's stages' shares of the squared gradient norm
    update_norms: list[float]  # the L2 norm of each blame stage's change (the tied matrix's change in "head")
    gradient_norm: float  # the global gradient norm before clipping
    clipped: bool
    rows_moved: list[tuple[int, str, float]]  # (row id, token, L2 norm of the row's change), farthest first
    vocab_size: int
    embedding_width: int  # C
    distinct_tokens: int  # distinct ids in the packed row
    input_rows: list[int]  # rows with input-side gradient (the batch's ids that predict a next token)
    rows_with_gradient: int  # in total, the tied head's part included
    rows_changed: int  # = len(rows_moved)
    rows_sign_like: int  # rows that moved by lr * sqrt(C) within 10%
    sign_like_distance: float  # lr * sqrt(C): how far a row moves when each of its weights moves by lr
    sign_like_fraction: float  # fraction of the changed weights (all parameters) that moved by lr within 10%
    settings: StepSettings
    tied: bool
    momentum: bool  # the step's optimizer had state from earlier steps (a caller's AdamW)
    word_map: WordMap | None = None  # the map before the step; None when the tokenizer cannot spell its words
    map_after: list[tuple[float, float]] = field(default_factory=list)  # the words after, on the before map's basis
    word_shifts: list[float] = field(default_factory=list)  # each word vector's change (L2, all C dimensions)
    words_in_batch: list[bool] = field(default_factory=list)  # every token of the word is an input row
    map_plane_fraction: float = math.nan  # mean over the words of (arrow length on the map) / (word's shift)
    map_note: str = ""


def moved_rows(result: MicroscopeResult) -> set[int]:
    """The ids of the embedding rows the step changed."""
    return {row for row, _, _ in result.rows_moved}


def pack_batch(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The texts as training packs documents: each `[bos] text [eos]` (`document_ids`), one after the other in one
    row (1, T), with position ids (1, T) restarting at every text, so attention stays inside each text. Bad texts
    are `InsightError`s."""
    if not texts:
        raise InsightError("The batch is empty; give at least one text, e.g. 'the king ate bread.'")
    documents = [document_ids(model, tokenizer, text, f"Batch text {n}") for n, text in enumerate(texts, start=1)]
    positions = [torch.arange(d.shape[1], device=d.device) for d in documents]
    return torch.cat(documents, dim=1), torch.cat(positions).unsqueeze(0)


def document_ids(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, name: str = "The text"
) -> torch.Tensor:
    """(1, T) ids of `text` as a training document, `[bos] tokens [eos]` (`data.packing.encode_documents`; no eos
    when the tokenizer has none), checked against the model; `name` says which text an error is about."""
    if not text or not text.strip():
        raise InsightError(f"{name} is empty; give a sentence, e.g. 'the queen fed her dog.'.")
    ids = encode_prompt(model, tokenizer, text)  # [bos] tokens, checked: context length, ids in the vocabulary
    if tokenizer.eos_token_id is not None:
        ids = torch.cat([ids, ids.new_tensor([[tokenizer.eos_token_id]])], dim=1)
        check_ids(model, ids)
    if ids.shape[1] < 2:
        raise InsightError(f"{name} {text!r} is {ids.shape[1]} token; it needs at least 2 (one to predict from, one "
                           "to predict): give a longer text.")  # fmt: skip
    return ids


def _log_probs(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """The log-softmax (T, V) of the next-token logits of one row `ids` (1, T), float64, eval mode."""
    with eval_mode(model), torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[0].double().log_softmax(-1)


def _text_step(before: PreTrainedModel, after: PreTrainedModel, tokenizer, text: str, ids: torch.Tensor) -> TextStep:
    targets = ids[0, 1:]
    actual = [_log_probs(m, ids)[:-1].gather(1, targets[:, None]).squeeze(1) for m in (before, after)]
    return TextStep(text, [token_text(tokenizer, t) for t in targets.tolist()], actual[0].exp().tolist(),
                    actual[1].exp().tolist(), float(-actual[0].mean()), float(-actual[1].mean()))  # fmt: skip


def _last_word(tokenizer, text: str, ids: torch.Tensor) -> int:
    """The index in `ids` (`document_ids(text)`) of the first token of the text's last word (the last run of letters
    or digits, found by the tokenizer's character offsets); the last token of the text without offsets or words."""
    words = list(re.finditer(r"\w+", text))
    last = ids.shape[1] - 1 - int(tokenizer.eos_token_id is not None)  # the text's last token
    if not words or not getattr(tokenizer, "is_fast", False):
        return max(1, last)
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    start = words[-1].start()
    return max(1, next((i for i, (a, b) in enumerate(offsets) if b > start and b > a and i >= 1), last))


def _top_tokens(before: torch.Tensor, after: torch.Tensor, actual: int, k: int) -> list[int]:
    order = [*before.topk(k).indices.tolist(), *after.topk(k).indices.tolist(), actual]
    return list(dict.fromkeys(order))


def _changes(model: PreTrainedModel, replica: PreTrainedModel) -> dict[int, torch.Tensor]:
    """Each parameter's change (replica - model), by the model's parameter id."""
    return {id(p): (q.detach().double() - p.detach().double())
            for p, q in zip(model.parameters(), replica.parameters(), strict=True)}  # fmt: skip


def _update_norms(model, parts, changes: dict[int, torch.Tensor]) -> list[float]:
    norms = []
    for name, params in _stages(model, parts):
        if name == INPUT_STAGE and not parts.tied:
            params = [*params, parts.embed_tokens.weight]
        norms.append(math.sqrt(sum(float(changes[id(p)].pow(2).sum()) for p in params)))
    return norms


def _sign_like_fraction(model, replica_optimizer, replica, changes: dict[int, torch.Tensor]) -> float:
    lr_of = {id(p): group["lr"] for group in replica_optimizer.param_groups for p in group["params"]}
    moved = close = 0
    for p, q in zip(model.parameters(), replica.parameters(), strict=True):
        change = changes[id(p)].abs()
        changed = change != 0
        lr = lr_of.get(id(q))
        if lr is None or not changed.any():
            continue
        moved += int(changed.sum())
        close += int(((change - lr).abs() <= SIGN_LIKE_TOLERANCE * lr).sum())
    return close / moved if moved else 0.0


def _projections(model, replica, tokenizer, groups, input_rows: set[int]):
    """The word map before the step, the words after on its basis, each word's shift and whether it is in the
    batch; (None, [], [], [], reason) when the tokenizer cannot spell the map's words."""
    try:
        before_map = word_map(model, tokenizer, groups)
    except InsightError as err:
        return None, [], [], [], f"no word map: {err}"
    before = torch.stack([word_vector(model, tokenizer, w) for w in before_map.words])  # (N, C)
    after = torch.stack([word_vector(replica, tokenizer, w) for w in before_map.words])
    mean = before.mean(0)
    _, _, vh = torch.linalg.svd(before - mean, full_matrices=False)
    basis = vh[:2].T  # (C, 2): word_map's PCA axes, up to sign
    coords = torch.tensor(before_map.coords, dtype=basis.dtype, device=basis.device)
    signs = torch.sign(((before - mean) @ basis * coords).sum(0))
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)  # the signs word_map chose
    xy = (after - mean) @ basis
    shifts = (after - before).norm(dim=1).tolist()
    in_batch = [all(t in input_rows for t in word_token_ids(tokenizer, w)) for w in before_map.words]
    return before_map, [tuple(p) for p in xy.tolist()], shifts, in_batch, ""


def _template_optimizer(model: PreTrainedModel, settings: StepSettings) -> torch.optim.AdamW:
    """A fresh AdamW over the model's parameters with `settings` (never stepped: `adamw_step_on_copy` moves its
    hyperparameters onto the copy)."""
    if settings.decay_matrices_only:
        from ..training.optim import parameter_groups

        split = parameter_groups(model)
        groups = [{"params": split["matrices"], "weight_decay": settings.weight_decay},
                  {"params": split["others"], "weight_decay": 0.0}]  # fmt: skip
        groups = [g for g in groups if g["params"]]
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": settings.weight_decay}]
    if not any(g["params"] for g in groups):
        raise InsightError("No parameter of the model requires a gradient; unfreeze a stage to take a step.")
    return torch.optim.AdamW(groups, lr=settings.learning_rate, betas=settings.betas, eps=settings.eps)


def optimizer_step_microscope(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch_texts: list[str],
    heldout_text: str,
    learning_rate: float = FRESH_LEARNING_RATE,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = FRESH_BETAS,
    optimizer: torch.optim.Optimizer | None = None,
    seed: int = 0,
    top_k: int = 5,
    settings: StepSettings | None = None,
    groups: dict[str, list[str]] | None = None,
) -> MicroscopeResult:
    """One AdamW step on a copy of `model` on the next-token loss of `batch_texts` packed into one row, and what it
    changed (see the module docstring). The step's AdamW is `settings` (`step_settings`) when given, else a fresh
    AdamW(`learning_rate`, `betas`, `weight_decay` on every parameter), or the caller's torch AdamW `optimizer` (its
    hyperparameters and state, copied). `groups`: the word map's word sets (default: `geometry.word_map`'s).
    `seed` seeds torch's generator for the step (the caller's generator state is restored). `model`, its `.grad`
    and its train/eval mode are left as found."""
    if settings is None:
        settings = StepSettings("fresh", learning_rate, weight_decay, tuple(betas))
    if top_k < 1:
        raise InsightError(f"top_k={top_k} must be at least 1.")
    parts = find_parts(model)
    ids, positions = pack_batch(model, tokenizer, batch_texts)
    heldout_ids = document_ids(model, tokenizer, heldout_text, "The held-out text")
    text_ids = [document_ids(model, tokenizer, text, f"Batch text {n}") for n, text in enumerate(batch_texts, 1)]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        loss_before, grads, input_grad = _next_token_gradients(model, parts, ids, positions)
        step_optimizer = optimizer if optimizer is not None else _template_optimizer(model, settings)
        replica, replica_optimizer, gradient_norm = adamw_step_on_copy(
            model, ids, step_optimizer, settings.learning_rate, settings.weight_decay, settings.max_grad_norm, positions
        )
    rows = rows_touched(parts, ids, grads, input_grad, replica, replica_optimizer, optimizer)
    blame = blame_from_gradients(model, parts, loss_before, grads, input_grad, ids.numel())
    changes = _changes(model, replica)
    with torch.no_grad():
        loss_after = float(replica(input_ids=ids, labels=ids, position_ids=positions, use_cache=False).loss)

    heldout = _text_step(model, replica, tokenizer, heldout_text, heldout_ids)
    focus = _last_word(tokenizer, heldout_text, heldout_ids)
    before_p, after_p = (_log_probs(m, heldout_ids)[focus - 1].exp() for m in (model, replica))
    top = _top_tokens(before_p, after_p, int(heldout_ids[0, focus]), min(top_k, before_p.numel()))
    context = tokenizer.decode(heldout_ids[0, :focus].tolist(), skip_special_tokens=True)

    weight = parts.embed_tokens.weight
    row_change = changes[id(weight)].norm(dim=1)  # (V,)
    texts = tokenizer.batch_decode([[i] for i in range(weight.shape[0])])
    rows_moved = [(row, texts[row], float(row_change[row])) for row in rows.changed]
    rows_moved.sort(key=lambda r: (-r[2], r[0]))
    word_map_before, map_after, shifts, in_batch, map_note = _projections(model, replica, tokenizer, groups,
                                                                          set(rows.input_gradient))  # fmt: skip
    settings_used = settings
    if optimizer is not None:
        group = replica_optimizer.param_groups[0]
        settings_used = StepSettings("optimizer", group["lr"], group["weight_decay"], tuple(group["betas"]),
                                     group["eps"], note="the caller's AdamW, its state (momentum) included"
                                     )  # fmt: skip
    lr_of_embedding = next(g["lr"] for g in replica_optimizer.param_groups
                           if any(p is find_parts(replica).embed_tokens.weight for p in g["params"]))  # fmt: skip
    sign_like = lr_of_embedding * math.sqrt(weight.shape[1])
    plane = [math.dist(a, b) / shift for a, b, shift in zip(word_map_before.coords, map_after, shifts, strict=True)
             if shift > 0] if word_map_before is not None else []  # fmt: skip
    return MicroscopeResult(
        batch_texts=list(batch_texts),
        batch=[_text_step(model, replica, tokenizer, t, i) for t, i in zip(batch_texts, text_ids, strict=True)],
        heldout=heldout,
        num_tokens=ids.numel(),
        batch_loss_before=loss_before,
        batch_loss_after=loss_after,
        focus_context=context,
        focus_token=token_text(tokenizer, int(heldout_ids[0, focus])),
        focus_id=int(heldout_ids[0, focus]),
        top_ids=top,
        top_tokens=[token_text(tokenizer, t) for t in top],
        top_before=[float(before_p[t]) for t in top],
        top_after=[float(after_p[t]) for t in top],
        blame=blame,
        update_norms=_update_norms(model, parts, changes),
        gradient_norm=gradient_norm,
        clipped=settings_used.max_grad_norm > 0 and gradient_norm > settings_used.max_grad_norm,
        rows_moved=rows_moved,
        vocab_size=rows.vocab_size,
        embedding_width=weight.shape[1],
        distinct_tokens=rows.distinct_tokens,
        input_rows=rows.input_gradient,
        rows_with_gradient=len(rows.gradient),
        rows_changed=len(rows.changed),
        rows_sign_like=sum(abs(d - sign_like) <= SIGN_LIKE_TOLERANCE * sign_like for _, _, d in rows_moved),
        sign_like_distance=sign_like,
        sign_like_fraction=_sign_like_fraction(model, replica_optimizer, replica, changes),
        settings=settings_used,
        tied=parts.tied,
        momentum=rows.momentum,
        word_map=word_map_before,
        map_after=map_after,
        word_shifts=shifts,
        words_in_batch=in_batch,
        map_plane_fraction=sum(plane) / len(plane) if plane else math.nan,
        map_note=map_note,
    )


def arrow_scale(result: MicroscopeResult) -> float:
    """The factor the word map's arrows are drawn at: 1 when the longest arrow is at least 8% of the map's extent,
    else the largest of 1, 2, 5 x 10^k that keeps the longest arrow at most 15% of it."""
    if result.word_map is None or not result.map_after:
        return 1.0
    before = torch.tensor(result.word_map.coords)
    after = torch.tensor(result.map_after)
    longest = float((after - before).norm(dim=1).max())
    extent = float((before.max(0).values - before.min(0).values).max())
    if longest == 0 or longest >= 0.08 * extent:
        return 1.0
    target = 0.15 * extent / longest
    power = 10 ** math.floor(math.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target)


def plot_word_arrows(result: MicroscopeResult, path: str | Path) -> Path:
    """The word map before the step (PCA of the embedding before), with an arrow per word to where the step moved it
    (projected on the same basis, scaled by `arrow_scale`); words of the batch in black, the others in grey."""
    if result.word_map is None:
        raise InsightError(f"Nothing to draw: {result.map_note}")
    plt = pyplot()

    words = result.word_map
    scale = arrow_scale(result)
    names = list(dict.fromkeys(words.groups))
    palette = plt.get_cmap("tab10")
    color_of = {group: palette(i % 10) for i, group in enumerate(names)}
    fig, ax = plt.subplots(figsize=(8, 6.5), dpi=100)
    for group in names:
        points = [xy for xy, g in zip(words.coords, words.groups, strict=True) if g == group]
        ax.scatter(*zip(*points, strict=True), s=20, color=color_of[group], label=group, zorder=3)
    tips = []
    for (x0, y0), (x1, y1), in_batch in zip(words.coords, result.map_after, result.words_in_batch, strict=True):
        tip = (x0 + scale * (x1 - x0), y0 + scale * (y1 - y0))
        tips.append(tip)
        ax.annotate("", xy=tip, xytext=(x0, y0), zorder=4,
                    arrowprops=dict(arrowstyle="-|>", color="black" if in_batch else "dimgrey", lw=1.6 if in_batch
                                    else 0.9, alpha=0.9 if in_batch else 0.6, shrinkA=0, shrinkB=0,
                                    mutation_scale=9))  # fmt: skip
    xs = [x for x, _ in words.coords] + [x for x, _ in tips]
    ys = [y for _, y in words.coords] + [y for _, y in tips]
    pad_x, pad_y = 0.12 * (max(xs) - min(xs) or 1.0), 0.08 * (max(ys) - min(ys) or 1.0)
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    variance = [f"{100 * v:.0f}%" if math.isfinite(v) else "?" for v in words.explained_variance]
    ax.set_xlabel(f"PC 1 of the embedding before the step ({variance[0]} of variance)")
    ax.set_ylabel(f"PC 2 ({variance[1]} of variance)")
    scaled = f"arrows x{scale:g}" if scale != 1 else "arrows at true length"
    ax.set_title(f"One AdamW step (lr {result.settings.learning_rate:g}) on the word map: before -> after, {scaled}\n"
                 "black: words of the batch (input gradient + head), grey: the head's gradient only",
                 fontsize=10)  # fmt: skip
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    labels = [w + ("*" if n > 1 else "") for w, n in zip(words.words, words.num_tokens or [1] * len(words.words),
                                                          strict=True)]  # fmt: skip
    if any(label.endswith("*") for label in labels):
        fig.text(0.01, 0.01, "* several tokens: the mean of their embeddings", fontsize=7, color="dimgrey")
    # Points along each arrow with empty labels go first: the words' labels then avoid the arrows as they avoid dots.
    along = [(x0 + f * (x1 - x0), y0 + f * (y1 - y0)) for (x0, y0), (x1, y1) in zip(words.coords, tips, strict=True)
             for f in (0.25, 0.5, 0.75, 1.0)]  # fmt: skip
    _place_labels(ax, along + list(words.coords), [""] * len(along) + labels,
                  ["none"] * len(along) + [color_of[g] for g in words.groups])  # fmt: skip
    return save_figure(fig, path, tight=False)  # laid out before the labels were placed


def _short(text: str, width: int = 34) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def plot_step_distributions(result: MicroscopeResult, path: str | Path) -> Path:
    """Left: each text's next-token loss before and after the step (the batch texts, then the held-out one). Right:
    the held-out text's top next tokens at its last word, before and after."""
    plt = pyplot()

    rows = max(len(result.batch) + 1, len(result.top_tokens))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 1.6 + 0.45 * rows), dpi=100)
    steps = [*result.batch, result.heldout]
    labels = [_short(s.text, 42) for s in result.batch] + [f"held out: {_short(result.heldout.text, 32)}"]
    positions = torch.arange(len(steps)).tolist()
    left.barh([p - 0.2 for p in positions], [s.loss_before for s in steps], height=0.38, color="silver")
    left.barh([p + 0.2 for p in positions], [s.loss_after for s in steps], height=0.38, color="tab:blue")
    top = max(max(s.loss_before, s.loss_after) for s in steps)
    for p, s in zip(positions, steps, strict=True):
        left.text(max(s.loss_before, s.loss_after) + 0.01 * top, p, f"{s.loss_before:.3f} -> {s.loss_after:.3f}",
                  va="center", fontsize=8)  # fmt: skip
    left.set_yticks(positions, labels, fontsize=8)
    left.invert_yaxis()
    left.set_xlim(0, top * 1.45 or 1.0)
    left.set_xlabel("next-token loss (nats per token)")
    left.set_title("Loss of each text alone (nats per token)\ngrey: before the step, blue: after", fontsize=10)
    left.grid(axis="x", alpha=0.2)

    tokens = range(len(result.top_tokens))
    right.barh([t - 0.2 for t in tokens], [100 * p for p in result.top_before], height=0.38, color="silver")
    right.barh([t + 0.2 for t in tokens], [100 * p for p in result.top_after], height=0.38, color="tab:orange")
    peak = 100 * max(result.top_before + result.top_after)
    for t, (b, a) in enumerate(zip(result.top_before, result.top_after, strict=True)):
        right.text(100 * max(a, b) + 0.01 * peak, t, f"{100 * b:.1f}% -> {100 * a:.1f}%", va="center", fontsize=8)
    names = [repr(tok) + (" (actual)" if token_id == result.focus_id else "")
             for tok, token_id in zip(result.top_tokens, result.top_ids, strict=True)]  # fmt: skip
    right.set_yticks(list(tokens), names, fontsize=8)
    right.invert_yaxis()
    right.set_xlim(0, peak * 1.45 or 1.0)
    right.set_xlabel("probability (%)")
    right.set_title(f"Held out: the next token after {_short(result.focus_context, 40)!r}\ngrey: before the step, "
                    "orange: after", fontsize=10)  # fmt: skip
    right.grid(axis="x", alpha=0.2)
    return save_figure(fig, path)


def plot_rows_moved(result: MicroscopeResult, path: str | Path) -> Path:
    """How far each embedding row moved, rows sorted by distance: the batch's input rows in orange, the rest grey,
    and lr * sqrt(C), the distance of a sign-like step, as a dashed line."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    inputs = set(result.input_rows)
    fig, ax = plt.subplots(figsize=(8, 3.8), dpi=100)
    distances = [d for _, _, d in result.rows_moved]
    colors = ["tab:orange" if row in inputs else "grey" for row, _, _ in result.rows_moved]
    ax.bar(range(len(distances)), distances, width=1.0, color=colors)
    ax.axhline(result.sign_like_distance, color="black", ls="--", lw=1)
    moved_inputs = sum(row in inputs for row, _, _ in result.rows_moved)
    handles = [Line2D([], [], color="black", ls="--", lw=1,
                      label=f"lr * sqrt(C) = {result.sign_like_distance:.4f}: every weight of the row moved by lr"),
               Patch(color="tab:orange", label=f"input rows of the batch ({moved_inputs})"),
               Patch(color="grey", label=f"other rows ({len(distances) - moved_inputs}): "
                     f"{'the tied head' if result.tied else 'weight decay or momentum'} moved them")]  # fmt: skip
    ax.legend(handles=handles, fontsize=8, loc="upper right", framealpha=0.9)
    ax.set_xlim(-0.5, max(len(distances), 1) - 0.5)
    ax.set_ylim(0, max([*distances, result.sign_like_distance]) * 1.45)
    ax.set_xlabel(f"embedding rows that moved ({result.rows_changed} of {result.vocab_size}), farthest first")
    ax.set_ylabel("L2 norm of the row's change")
    ax.set_title("How far one step moved each row of the embedding (rows with a gradient near eps move less)",
                 fontsize=10)  # fmt: skip
    ax.grid(axis="y", alpha=0.2)
    return save_figure(fig, path)


__all__ = [
    "MicroscopeResult",
    "StepSettings",
    "TextStep",
    "arrow_scale",
    "document_ids",
    "moved_rows",
    "optimizer_step_microscope",
    "pack_batch",
    "plot_rows_moved",
    "plot_step_distributions",
    "plot_word_arrows",
    "step_settings",
]
