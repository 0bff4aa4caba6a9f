"""Be the model: the next-token distribution of a prompt (before and after the sampling settings), where a guessed
word ranks in it, and how surprised the model is by each token of a text.

The sampling transform is transformers' own (`TemperatureLogitsWarper`, `TopKLogitsWarper`, `TopPLogitsWarper`, in
the order `generate` applies them), so the transformed distribution is exactly what `generate(do_sample=True)` draws
from. Surprise is the token's information content, -log2 p, in bits (Shannon, 1948).
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from .figures import pyplot, save_figure
from .model_parts import InsightError, check_ids, encode_prompt, eval_mode, token_text, word_token_ids


@dataclass
class TopTokens:
    """The k most likely tokens of one distribution, its entropy and how many tokens it leaves possible."""

    token_ids: list[int]
    tokens: list[str]
    probabilities: list[float]
    entropy_bits: float  # of the whole distribution, not only the top k
    nonzero: int  # tokens with non-zero probability


@dataclass
class NextTokenResult:
    prompt: str
    prompt_tokens: list[str]
    vocab_size: int
    model: TopTokens  # softmax of the model's logits
    sampling: TopTokens  # after temperature, top-k and top-p
    temperature: float
    top_k: int | None
    top_p: float | None
    generate_kwargs: dict = field(default_factory=dict)  # the `generate` arguments that sample from `sampling`


@dataclass
class GuessResult:
    prompt: str
    word: str
    token_ids: list[int]  # the word's tokens (after a space)
    tokens: list[str]
    rank: int  # of the first token, 1 = the model's top choice
    probability: float  # of the first token
    word_probability: float  # of all its tokens in turn, by the chain rule
    vocab_size: int
    top_token_id: int
    top_token: str
    top_probability: float


@dataclass
class SurpriseResult:
    text: str
    context_token: str  # the first token (bos when the tokenizer adds one): it is given, not predicted
    token_ids: list[int]  # the predicted tokens, ids[1:]
    tokens: list[str]
    bits: list[float]  # -log2 p(token | the tokens before it)
    total_bits: float
    mean_bits: float


def _entropy_bits(probs: torch.Tensor) -> float:
    """H(p) = -sum p log2 p over (V,), with 0 log 0 = 0 (tokens removed by top-k/top-p)."""
    return max(0.0, float(-torch.special.xlogy(probs, probs).sum() / math.log(2)))


def _top_tokens(tokenizer: PreTrainedTokenizerBase, probs: torch.Tensor, k: int) -> TopTokens:
    """The k most likely of (V,) probabilities, leaving out tokens of probability zero."""
    nonzero = int((probs > 0).sum())
    values, ids = probs.topk(min(k, nonzero))
    ids_list = ids.tolist()
    return TopTokens(
        token_ids=ids_list,
        tokens=[token_text(tokenizer, i) for i in ids_list],
        probabilities=values.tolist(),
        entropy_bits=_entropy_bits(probs),
        nonzero=nonzero,
    )


def _last_logits(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """(V,) float32 logits after the last token of ids (1, T)."""
    with eval_mode(model), torch.no_grad():
        return model(input_ids=ids, use_cache=False).logits[0, -1].float()


def sampling_processors(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None):
    """transformers' warpers for these settings, in `generate`'s order (temperature, top-k, top-p); settings that
    change nothing (temperature 1, top_k None/0, top_p None/1) add no warper, as in `generate`."""
    if not temperature > 0:
        raise InsightError(f"temperature={temperature} must be > 0; greedy decoding is the top token (rank 1).")
    if top_k is not None and top_k < 0:
        raise InsightError(f"top_k={top_k} must be >= 1 (or 0/None for no top-k cut).")
    if top_p is not None and not 0 < top_p <= 1:
        raise InsightError(f"top_p={top_p} must be in (0, 1]; 1 keeps every token.")
    processors = LogitsProcessorList()
    if temperature != 1.0:
        processors.append(TemperatureLogitsWarper(temperature))
    if top_k:
        processors.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return processors


def next_token_distribution(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    k: int = 10,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> NextTokenResult:
    """The model's k most likely next tokens after `prompt` and the entropy of its (V,) distribution; the same after
    the sampling transform. `top_k=None` means no top-k cut; note that `generate(do_sample=True)` cuts to its
    generation config's top_k (50 by default) unless given `top_k=0`: `generate_kwargs` names the exact arguments."""
    if k < 1:
        raise InsightError(f"k={k} must be >= 1 (how many top tokens to list).")
    processors = sampling_processors(temperature, top_k, top_p)
    ids = encode_prompt(model, tokenizer, prompt)  # (1, T)
    logits = _last_logits(model, ids)  # (V,)
    warped = processors(ids, logits[None].clone())[0]  # (V,), -inf where a token is cut
    return NextTokenResult(
        prompt=prompt,
        prompt_tokens=[token_text(tokenizer, i) for i in ids[0].tolist()],
        vocab_size=logits.numel(),
        model=_top_tokens(tokenizer, logits.softmax(-1), k),
        sampling=_top_tokens(tokenizer, warped.softmax(-1), k),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        generate_kwargs=dict(do_sample=True, temperature=temperature, top_k=top_k or 0, top_p=top_p or 1.0),
    )


def rank_guess(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, word: str) -> GuessResult:
    """Where `word` (its first token, after a space) ranks among the model's next tokens after `prompt`, and the
    probability of the whole word: p(t1 | prompt) * p(t2 | prompt, t1) * ... from one forward pass over
    prompt + word. Trailing spaces of the prompt are dropped, since the word brings its own."""
    word_ids = word_token_ids(tokenizer, word)
    prompt_ids = encode_prompt(model, tokenizer, prompt.rstrip())  # (1, T)
    word_tensor = torch.tensor([word_ids], device=prompt_ids.device)
    check_ids(model, word_tensor)
    ids = torch.cat([prompt_ids, word_tensor], dim=1)  # (1, T + W)
    with eval_mode(model), torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0].float()  # (T + W, V)
    start = prompt_ids.shape[1] - 1
    log_probs = logits[start : start + len(word_ids)].log_softmax(-1)  # (W, V): predicts each word token in turn
    first = log_probs[0].exp()  # (V,)
    word_log_prob = log_probs.gather(-1, word_tensor[0, :, None]).sum()
    top_id = int(first.argmax())
    return GuessResult(
        prompt=prompt,
        word=word.strip(),
        token_ids=word_ids,
        tokens=[token_text(tokenizer, i) for i in word_ids],
        rank=int((first > first[word_ids[0]]).sum()) + 1,
        probability=float(first[word_ids[0]]),
        word_probability=float(word_log_prob.exp()),
        vocab_size=first.numel(),
        top_token_id=top_id,
        top_token=token_text(tokenizer, top_id),
        top_probability=float(first[top_id]),
    )


def text_surprise(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str) -> SurpriseResult:
    """Per token of `text` after the first (bos when the tokenizer adds one), -log2 p(token | tokens before it);
    the total is -log2 of the probability the model gives the whole text after its first token."""
    ids = encode_prompt(model, tokenizer, text)  # (1, T)
    if ids.shape[1] < 2:
        raise InsightError(f"{text!r} is a single token with nothing before it to predict it; give a longer text.")
    with eval_mode(model), torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()  # (T - 1, V)
    targets = ids[0, 1:]  # (T - 1,)
    bits = -logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0] / math.log(2)
    target_list = targets.tolist()
    return SurpriseResult(
        text=text,
        context_token=token_text(tokenizer, int(ids[0, 0])),
        token_ids=target_list,
        tokens=[token_text(tokenizer, i) for i in target_list],
        bits=bits.tolist(),
        total_bits=float(bits.sum()),
        mean_bits=float(bits.mean()),
    )


def greedy_continuation(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, max_new_tokens: int = 16
) -> str:
    """`prompt` followed by the model's greedy continuation, without special tokens (stops at eos)."""
    ids = encode_prompt(model, tokenizer, prompt)
    with eval_mode(model), torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0], skip_special_tokens=True)


# Layout of the surprise strip, in character cells of the monospace font.
_STRIP_WIDTH_CHARS = 64
_CHAR_WIDTH_INCHES = 0.115
_LINE_HEIGHT_INCHES = 0.42


def _strip_layout(tokens: list[str]) -> list[tuple[int, float, float, str]]:
    """(line, x, width, label) per token: a gap before tokens that start a word (leading space), none inside a word."""
    boxes, line, x = [], 0, 0.0
    for token in tokens:
        label = token.strip().replace("\n", "\\n") or repr(token)[1:-1] or "∅"
        gap = 0.6 if token[:1].isspace() and x > 0 else 0.1 if x > 0 else 0.0
        width = len(label) + 0.6
        if x + gap + width > _STRIP_WIDTH_CHARS and x > 0:
            line, x, gap = line + 1, 0.0, 0.0
        boxes.append((line, x + gap, width, label))
        x += gap + width
    return boxes


def plot_surprise(result: SurpriseResult, path: str | Path) -> Path:
    """The text as a strip of tokens (left to right, wrapping), each on a background coloured by its surprise."""
    plt = pyplot()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    boxes = _strip_layout(result.tokens)
    lines = boxes[-1][0] + 1 if boxes else 1
    norm = Normalize(vmin=0.0, vmax=max(max(result.bits, default=1.0), 1.0))
    cmap = plt.get_cmap("YlOrRd")
    width_in = _STRIP_WIDTH_CHARS * _CHAR_WIDTH_INCHES + 1.6
    fig, ax = plt.subplots(figsize=(width_in, lines * _LINE_HEIGHT_INCHES + 1.1), dpi=100)
    for (line, x, width, label), bits in zip(boxes, result.bits, strict=True):
        ax.add_patch(Rectangle((x, line + 0.08), width, 0.84, facecolor=cmap(norm(bits)), edgecolor="0.6", lw=0.5))
        colour = "white" if norm(bits) > 0.7 else "black"
        ax.text(
            x + width / 2, line + 0.5, label, ha="center", va="center", family="monospace", fontsize=10, color=colour
        )
    ax.set_xlim(-0.2, _STRIP_WIDTH_CHARS + 0.2)
    ax.set_ylim(lines, 0)
    ax.axis("off")
    ax.set_title(
        f"Surprise per token: {result.total_bits:.1f} bits in all, {result.mean_bits:.2f} bits/token", fontsize=10
    )
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.03, pad=0.01)
    bar.set_label("bits (-log2 p)", fontsize=9)
    return save_figure(fig, path)


__all__ = [
    "GuessResult",
    "NextTokenResult",
    "SurpriseResult",
    "TopTokens",
    "greedy_continuation",
    "next_token_distribution",
    "plot_surprise",
    "rank_guess",
    "sampling_processors",
    "text_surprise",
]
