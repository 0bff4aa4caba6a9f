"""Steer with a direction, and let the answer be honest: add alpha times a direction to the residual stream and see
whether "he" turns into "she".

After "the king fed his dog." a TinyWorld model's next word is "he" (the next sentence's subject pronoun; the truth
is he 3/4, end of document 1/4, `TinyWorldTruth`). A forward hook adds `alpha * direction` to the residual stream at
layer L (at every position, or at the prompt's last token only), and the next word is read again:

* layer L counts the decoder layers already applied: L = 0 is the residual stream entering the first decoder layer
  (the token embeddings, plus learned positions for GPT-2-style models; a forward pre-hook on layer 0), and L = k for
  k = 1..N the stream leaving decoder layer k (a forward hook on `layers[k - 1]`; L = N is what the final norm and
  head read). The same numbering as the logit lens (`layers.residual_streams`).
* Directions: the EMBEDDING OFFSET that the geometry view draws, E(queen) - E(king) (`geometry.word_vector`); the
  MEAN OFFSET of the gender pairs E(female) - E(male) (`geometry.GENDER_PAIRS`); the DIFFERENCE OF MEANS of the
  residual stream at layer L, mean over female-subject prompts minus mean over male-subject prompts at the prompt's
  last position (activation addition: Turner et al. 2023, "Activation Addition: Steering Language Models Without
  Optimization"); and RANDOM Gaussian directions (one per seed).
* Scale: all directions at a layer have one norm, so they differ only in where they point, and random directions
  of that same norm are their baseline. After decoder layer k (L >= 1) it is the norm of the difference of means
  there: alpha = 1 is a push as large as the gap between the female and the male means. At L = 0 the stream is the
  embedding, and the norm is the embedding offset's own: alpha = 1 adds E(queen) - E(king) exactly. (The difference
  of means at L = 0 is zero for models without learned positions: the prompts' last token "." is the same token
  whatever the subject, and a token's embedding does not see its context.) The raw embedding offsets are far
  smaller than the residual stream after the first layer (the result lists the norms), so a raw alpha there would
  compare sizes, not directions. `steering(...)` itself adds whatever vector it is given.
* Positions: the direction is added at every position of the input (positions="all"), as activation addition does,
  or only at the prompt's last token (positions="last"), where the difference of means was measured.
* The measure is the FLIP RATE: among the held-out male-subject prompts the unsteered model continues with "he"
  rather than "she" (p(he) > p(she)), the share where "she" overtakes "he" after steering: p(she) > p(he), and p(she)
  has risen (a direction that only wipes out both pronouns flips nothing). A word's probability is the model's
  probability of the whole word (`truth.ModelWords`: its tokens in turn, then a word boundary).

Prompts are first sentences of TinyWorld royalty documents (its shared, royal and commoner templates with seeded
slot fillers) for a male noun, each paired with the same sentence for the paired female noun; they are split once,
by a seeded shuffle, into the prompts the difference of means is fitted on and the held-out prompts it is measured
on.
"""

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.tinyworld import (
    COMMONER_TEMPLATES,
    NOUN_PAIRS,
    PRONOUNS,
    ROYAL_NOUNS,
    ROYAL_TEMPLATES,
    SHARED_TEMPLATES,
    SLOTS,
    agreement,
    template_slots,
)
from .figures import pyplot, save_figure
from .geometry import GENDER_PAIRS, word_vector
from .layers import residual_streams
from .model_parts import InsightError, check_ids, encode_prompt, eval_mode, find_parts, token_text, word_token_ids
from .truth import ModelWords

EMBEDDING_OFFSET = "embedding offset"
MEAN_OFFSET = "mean offset"
DIFFERENCE_OF_MEANS = "difference of means"
RANDOM = "random"
DIRECTION_KINDS = (EMBEDDING_OFFSET, MEAN_OFFSET, DIFFERENCE_OF_MEANS, RANDOM)
MALE_WORD, FEMALE_WORD = PRONOUNS[0][0], PRONOUNS[1][0]  # "he", "she"
EMBEDDING_PAIR = NOUN_PAIRS[0]  # ("king", "queen"): the geometry view's arrow
DEFAULT_PROMPT = "the king fed his dog."
NUM_PROMPTS = 50  # male/female prompt pairs: half fit the difference of means, half are held out


@dataclass
class SteeringPrompts:
    """(male, female) first sentences of royalty documents, the same template and fillers for both nouns."""

    fit: list[tuple[str, str]]  # fit the difference of means
    heldout: list[tuple[str, str]]  # measure the flip rate (their male sentences)


@dataclass
class SteeredPrompt:
    """One prompt's next token and next word before and after adding `alpha * direction` at `layer`."""

    prompt: str
    layer: int
    alpha: float
    kind: str  # a direction kind, or "given" for a caller's own vector
    positions: str  # "all" or "last"
    direction_norm: float  # the norm of the direction before alpha
    top_before: list[tuple[str, float]]  # the k most likely next tokens and their probabilities
    top_after: list[tuple[str, float]]
    words: list[str]  # [MALE_WORD, FEMALE_WORD] by default
    words_before: list[float]  # each word's probability (all its tokens, then a word boundary)
    words_after: list[float]


@dataclass
class SteeringResult:
    """Flip rates he -> she per direction kind, alpha and layer. Arrays indexed [alpha][layer] follow `alphas` and
    `layers`; every direction at a layer has the norm `norms[layer]`. NaN marks a cell without a direction (the
    difference of means where it is zero)."""

    layers: list[int]  # 0 = entering the first decoder layer, k = leaving decoder layer k
    alphas: list[float]
    kinds: list[str]  # DIRECTION_KINDS
    positions: str  # "all" or "last": where the direction was added
    flip_rates: dict[str, list[list[float]]]  # kind -> [alpha][layer]: flips / trials
    flips: dict[str, list[list[int]]]  # kind -> [alpha][layer]
    trials: dict[str, int]  # kind -> eligible held-out prompts (times num_random for random directions)
    p_she_change: dict[str, list[list[float]]]  # kind -> [alpha][layer]: mean p(she) after - before (eligible)
    p_he_change: dict[str, list[list[float]]]  # kind -> [alpha][layer]: mean p(he) after - before (eligible)
    p_he_before: float  # mean unsteered p(he) over the eligible held-out prompts
    p_she_before: float
    norms: list[float]  # per layer: every direction's norm there (layer 0: the embedding offset's, else the means')
    means_norms: list[float]  # per layer: the norm of the difference of means
    residual_norms: list[float]  # per layer: the mean norm of the residual stream at the fit prompts' last token
    raw_norms: dict[str, float]  # embedding offset, mean offset: their norms in the embedding's own scale
    cosines: dict[str, list[float]]  # embedding offset, mean offset: cosine to the difference of means per layer
    num_fit: int
    num_heldout: int
    num_eligible: int  # held-out male prompts whose unsteered p(he) > p(she)
    num_random: int
    seed: int
    embedding_pair: tuple[str, str]  # (male, female) of the embedding offset
    mean_offset_pairs: list[tuple[str, str]]  # the gender pairs averaged into the mean offset
    num_layers: int  # the model's decoder layers N (layers run 0..N)
    tied: bool  # whether the head shares the input embedding matrix
    prompts: SteeringPrompts = field(default_factory=lambda: SteeringPrompts([], []))

    def best_layer(self, kind: str = DIFFERENCE_OF_MEANS, alpha_index: int = 0) -> int:
        """The layer where `kind` flips most at alphas[alpha_index] (the first such layer; NaN cells skipped)."""
        rates = [-1.0 if math.isnan(rate) else rate for rate in self.flip_rates[kind][alpha_index]]
        return self.layers[max(range(len(rates)), key=rates.__getitem__)]


# -- prompts ---------------------------------------------------------------------------------------------------------


def steering_prompts(num_prompts: int = NUM_PROMPTS, seed: int = 0) -> SteeringPrompts:
    """`num_prompts` distinct (male, female) first sentences of TinyWorld royalty documents, e.g. ("the king fed his
    dog.", "the queen fed her dog."): the noun pairs and their templates (shared, plus royal or commoner) in turn,
    slot fillers drawn with `seed`; shuffled with `seed` and split into halves (fit first, held out second)."""
    if num_prompts < 2:
        raise InsightError(f"num_prompts={num_prompts} leaves no held-out prompt; give at least 2 (default 50).")
    rng = random.Random(f"steering:{seed}")
    combos = [(pair, template) for pair in NOUN_PAIRS for template in
              SHARED_TEMPLATES + (ROYAL_TEMPLATES if pair[0] in ROYAL_NOUNS else COMMONER_TEMPLATES)]  # fmt: skip
    pairs: list[tuple[str, str]] = []
    for attempt in range(100 * num_prompts):
        if len(pairs) == num_prompts:
            break
        pair, template = combos[attempt % len(combos)]
        fills = {name: rng.choice(SLOTS[name]) for name in template_slots(template)}
        rendered = tuple(template.format(**agreement(noun, first=True), **fills) for noun in pair)
        if rendered not in pairs:
            pairs.append(rendered)
    if len(pairs) < num_prompts:
        raise InsightError(f"TinyWorld has fewer than {num_prompts} distinct royalty first sentences to try; give a "
                           "smaller num_prompts.")  # fmt: skip
    random.Random(f"steering-split:{seed}").shuffle(pairs)
    half = num_prompts // 2
    return SteeringPrompts(fit=pairs[:half], heldout=pairs[half:])


# -- directions ------------------------------------------------------------------------------------------------------


def check_layer(model: PreTrainedModel, layer: int) -> int:
    num_layers = len(find_parts(model).layers)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= num_layers:
        raise InsightError(f"Layer {layer} is out of range: this model has {num_layers} decoder layers, so give a "
                           f"layer from 0 (entering the first layer) to {num_layers} (after the last).")  # fmt: skip
    return layer


def embedding_offset(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pair: tuple[str, str] = EMBEDDING_PAIR
) -> torch.Tensor:
    """E(female) - E(male) of one (male, female) pair (default king, queen), float32 (C,), in the embedding's scale."""
    male, female = pair
    return (word_vector(model, tokenizer, female) - word_vector(model, tokenizer, male)).float()


def mean_gender_offset(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, pairs: list[tuple[str, str]] = GENDER_PAIRS
) -> tuple[torch.Tensor, list[tuple[str, str]]]:
    """The mean of E(female) - E(male) over the `pairs` the tokenizer can spell, and those pairs."""
    offsets, used = [], []
    for pair in pairs:
        try:
            offsets.append(embedding_offset(model, tokenizer, pair))
            used.append(pair)
        except InsightError:
            continue
    if not offsets:
        raise InsightError(f"None of the gender pairs {pairs} is in the tokenizer's vocabulary; give pairs of words "
                           "from the corpus.")  # fmt: skip
    return torch.stack(offsets).mean(0), used


def last_position_states(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str]
) -> torch.Tensor:
    """(L + 1, N, C) float32: the residual stream at each prompt's last token, entering the first layer (row 0) and
    leaving each decoder layer; one forward pass, right-padded (a causal model's last real token never sees the
    padding)."""
    encoded = [encode_prompt(model, tokenizer, prompt)[0].tolist() for prompt in prompts]
    width = max(len(ids) for ids in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    batch = torch.tensor([ids + [pad] * (width - len(ids)) for ids in encoded])
    check_ids(model, batch)
    streams = residual_streams(model, batch.to(model.device))  # L + 1 tensors (N, T, C)
    last = torch.tensor([len(ids) - 1 for ids in encoded])
    return torch.stack([h[torch.arange(len(encoded)), last.to(h.device)].float().cpu() for h in streams])


def difference_of_means(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[tuple[str, str]]
) -> torch.Tensor:
    """(L + 1, C) float32: per layer, the mean residual stream at the last position of the female prompts minus
    that of the male prompts of `prompts` ((male, female) pairs)."""
    male = last_position_states(model, tokenizer, [m for m, _ in prompts])
    female = last_position_states(model, tokenizer, [f for _, f in prompts])
    return female.mean(1) - male.mean(1)


def random_direction(size: int, seed: int) -> torch.Tensor:
    """A unit Gaussian direction (C,) float32 drawn with `seed`."""
    vector = torch.randn(size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (vector / vector.norm()).float()


def _scaled(direction: torch.Tensor, norm: float) -> torch.Tensor:
    length = float(direction.norm())
    return direction * (norm / length) if length > 0 else direction


def _means_vanish(means: torch.Tensor, states: torch.Tensor) -> bool:
    """Whether a layer's difference of means (C,) is zero next to its residual stream (N, C) (float rounding)."""
    return float(means.norm()) <= 1e-6 * float(states.norm(dim=-1).mean())


def steering_direction(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    kind: str,
    layer: int,
    seed: int = 0,
    prompts: SteeringPrompts | None = None,
) -> torch.Tensor:
    """The direction of `kind` (DIRECTION_KINDS) for `layer`, at the layer's norm (see the module docstring; the
    difference of means fitted on `prompts.fit`, default `steering_prompts()`); a random direction drawn with `seed`.
    A difference of means that is zero there is an `InsightError`."""
    if kind not in DIRECTION_KINDS:
        raise InsightError(f"Unknown direction kind {kind!r}; give one of {', '.join(DIRECTION_KINDS)}.")
    check_layer(model, layer)
    prompts = prompts if prompts is not None else steering_prompts()
    embedding = embedding_offset(model, tokenizer)
    male = last_position_states(model, tokenizer, [m for m, _ in prompts.fit])[layer]
    female = last_position_states(model, tokenizer, [f for _, f in prompts.fit])[layer]
    means = female.mean(0) - male.mean(0)
    norm = float(embedding.norm()) if layer == 0 else float(means.norm())
    if kind == DIFFERENCE_OF_MEANS:
        if _means_vanish(means, torch.cat([male, female])):
            raise InsightError(f"The difference of means is zero at layer {layer} (the prompts' last token does not "
                               "see the subject there); give a layer of 1 or more.")  # fmt: skip
        return _scaled(means, norm)
    if kind == EMBEDDING_OFFSET:
        return _scaled(embedding, norm)
    if kind == MEAN_OFFSET:
        return _scaled(mean_gender_offset(model, tokenizer)[0], norm)
    return random_direction(means.numel(), seed) * norm


# -- the hook --------------------------------------------------------------------------------------------------------


@contextmanager
def steering(
    model: PreTrainedModel, direction: torch.Tensor, layer: int, alpha: float = 1.0, position: int | None = None
) -> Iterator[None]:
    """Within the block, every forward pass of `model` adds `alpha * direction` ((C,)) to the residual stream at
    `layer` (numbering: see the module docstring), at every position, or only at index `position` of every row.
    The hook is removed on leaving, even on an error. A decoder layer that returns a tuple gets its first element
    steered."""
    parts = find_parts(model)
    check_layer(model, layer)
    width = parts.embed_tokens.weight.shape[1]
    if direction.shape != (width,):
        raise InsightError(f"The direction has shape {tuple(direction.shape)}, but the residual stream has width "
                           f"{width}; give a vector of {width} numbers.")  # fmt: skip
    weight = parts.embed_tokens.weight
    vector = (float(alpha) * direction.detach().double()).to(device=weight.device, dtype=weight.dtype)

    def steer(hidden: torch.Tensor) -> torch.Tensor:
        if position is None:
            return hidden + vector.to(hidden.dtype)
        hidden = hidden.clone()
        hidden[:, position] += vector.to(hidden.dtype)
        return hidden

    if layer == 0:

        def before_first(module, args, kwargs):
            if args:
                return (steer(args[0]), *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": steer(kwargs["hidden_states"])}

        handle = parts.layers[0].register_forward_pre_hook(before_first, with_kwargs=True)
    else:

        def after(module, args, output):
            return (steer(output[0]), *output[1:]) if isinstance(output, tuple) else steer(output)

        handle = parts.layers[layer - 1].register_forward_hook(after)
    try:
        yield
    finally:
        handle.remove()


# -- measuring -------------------------------------------------------------------------------------------------------

POSITIONS = ("all", "last")


def _check_words(tokenizer: PreTrainedTokenizerBase, words: list[str]) -> None:
    for word in words:
        word_token_ids(tokenizer, word)  # an InsightError names a word the tokenizer cannot spell


def _check_positions(positions: str) -> None:
    if positions not in POSITIONS:
        raise InsightError(f"positions={positions!r} is not one of {POSITIONS}; give 'all' (every position) or "
                           "'last' (the prompt's last token).")  # fmt: skip


def word_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    words: tuple[str, ...] = (MALE_WORD, FEMALE_WORD),
    scorer: ModelWords | None = None,
) -> torch.Tensor:
    """(N, W) float64: the model's probability of each of `words` as the next word after each prompt (`ModelWords`:
    the word's tokens in turn, then a word boundary; pass `scorer` to reuse one)."""
    _check_words(tokenizer, list(words))
    scorer = scorer if scorer is not None else ModelWords(model, tokenizer)
    scores = scorer.probabilities_after([(prompt.strip(), list(words)) for prompt in prompts])
    return torch.tensor([[score[word] for word in words] for score in scores], dtype=torch.float64)


def steered_word_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    direction: torch.Tensor,
    layer: int,
    alpha: float,
    positions: str = "all",
    words: tuple[str, ...] = (MALE_WORD, FEMALE_WORD),
) -> torch.Tensor:
    """`word_probabilities` with `alpha * direction` added at `layer`, at every position ("all") or at each prompt's
    last token ("last", one prompt per forward pass)."""
    _check_positions(positions)
    if positions == "all":
        with steering(model, direction, layer, alpha):
            return word_probabilities(model, tokenizer, prompts, words)
    rows, scorer = [], ModelWords(model, tokenizer)
    for prompt in prompts:
        last = encode_prompt(model, tokenizer, prompt).shape[1] - 1
        with steering(model, direction, layer, alpha, position=last):
            rows.append(word_probabilities(model, tokenizer, [prompt], words, scorer))
    return torch.cat(rows)


def _top(tokenizer, probabilities: torch.Tensor, k: int) -> list[tuple[str, float]]:
    values, ids = probabilities.topk(min(k, probabilities.numel()))
    return [(token_text(tokenizer, i), float(p)) for i, p in zip(ids.tolist(), values.tolist(), strict=True)]


def steer_prompt(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    direction: torch.Tensor | str,
    layer: int,
    alpha: float = 1.0,
    k: int = 5,
    words: tuple[str, ...] = (MALE_WORD, FEMALE_WORD),
    positions: str = "all",
    seed: int = 0,
    prompts: SteeringPrompts | None = None,
) -> SteeredPrompt:
    """The top `k` next tokens and the probabilities of `words` after `prompt`, before and after adding
    `alpha * direction` at `layer` (at every position, or at the prompt's last token with positions="last").
    `direction` is a (C,) vector, used as given, or a kind of DIRECTION_KINDS, built by `steering_direction` (at
    the layer's norm; a random one with `seed`; the difference of means fitted on `prompts.fit`)."""
    ids = encode_prompt(model, tokenizer, prompt)
    check_layer(model, layer)
    _check_positions(positions)
    if k < 1:
        raise InsightError(f"k={k} must be at least 1 (how many top tokens to list).")
    kind = direction if isinstance(direction, str) else "given"
    if isinstance(direction, str):
        direction = steering_direction(model, tokenizer, direction, layer, seed=seed, prompts=prompts)

    def next_token() -> torch.Tensor:
        with eval_mode(model), torch.no_grad():
            return model(input_ids=ids, use_cache=False).logits[0, -1].float().softmax(-1).cpu()

    before, words_before = next_token(), word_probabilities(model, tokenizer, [prompt], words)[0]
    with steering(model, direction, layer, alpha, position=None if positions == "all" else ids.shape[1] - 1):
        after = next_token()
    words_after = steered_word_probabilities(model, tokenizer, [prompt], direction, layer, alpha, positions, words)[0]
    return SteeredPrompt(prompt, layer, float(alpha), kind, positions, float(direction.norm()),
                         _top(tokenizer, before, k), _top(tokenizer, after, k), list(words), words_before.tolist(),
                         words_after.tolist())  # fmt: skip


def steering_report(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    layers: list[int] | None = None,
    alphas: list[float] = (1.0,),
    num_random: int = 5,
    seed: int = 0,
    num_prompts: int = NUM_PROMPTS,
    positions: str = "all",
) -> SteeringResult:
    """Flip rates he -> she of every direction kind at every layer (default 0..N) and alpha, on the held-out
    male-subject prompts of `steering_prompts(num_prompts, seed)` that the unsteered model continues with "he";
    `num_random` random directions per layer (seeds seed..seed + num_random - 1), all at the layer's norm."""
    num_layers = len(find_parts(model).layers)
    layers = list(range(num_layers + 1)) if layers is None else [check_layer(model, layer) for layer in layers]
    alphas = [float(alpha) for alpha in alphas]
    if not layers or not alphas or not all(math.isfinite(alpha) for alpha in alphas):
        raise InsightError(f"Give at least one layer and finite alphas (got layers {layers}, alphas {alphas}).")
    if num_random < 1:
        raise InsightError(f"num_random={num_random} must be at least 1: the random directions are the baseline.")
    _check_positions(positions)
    _check_words(tokenizer, [MALE_WORD, FEMALE_WORD])
    prompts = steering_prompts(num_prompts, seed)
    male = last_position_states(model, tokenizer, [m for m, _ in prompts.fit])  # (L + 1, F, C)
    female = last_position_states(model, tokenizer, [f for _, f in prompts.fit])
    means, states = female.mean(1) - male.mean(1), torch.cat([male, female], dim=1)  # (L + 1, C), (L + 1, 2F, C)
    embedding, (mean_offset, used) = embedding_offset(model, tokenizer), mean_gender_offset(model, tokenizer)

    heldout = [m for m, _ in prompts.heldout]
    before = word_probabilities(model, tokenizer, heldout)  # (N, 2): p(he), p(she)
    eligible = [i for i in range(len(heldout)) if before[i, 0] > before[i, 1]]
    if not eligible:
        raise InsightError("The model never prefers 'he' to 'she' after the held-out male-subject prompts, so there "
                           "is nothing to flip; train it longer on TinyWorld (make demo).")  # fmt: skip
    eligible_prompts, before = [heldout[i] for i in eligible], before[eligible]

    def measure(direction: torch.Tensor, layer: int, alpha: float) -> tuple[int, float, float]:
        after = steered_word_probabilities(model, tokenizer, eligible_prompts, direction, layer, alpha, positions)
        flipped = (after[:, 1] > after[:, 0]) & (after[:, 1] > before[:, 1])
        return int(flipped.sum()), float((after[:, 1] - before[:, 1]).sum()), float((after[:, 0] - before[:, 0]).sum())

    kinds = list(DIRECTION_KINDS)
    trials = {kind: len(eligible) * (num_random if kind == RANDOM else 1) for kind in kinds}
    flips = {kind: [[0] * len(layers) for _ in alphas] for kind in kinds}
    rates, she, he = ({kind: [[math.nan] * len(layers) for _ in alphas] for kind in kinds} for _ in range(3))
    norms = [float(embedding.norm()) if layer == 0 else float(means[layer].norm()) for layer in layers]
    for column, (layer, norm) in enumerate(zip(layers, norms, strict=True)):
        vanish = _means_vanish(means[layer], states[layer])
        directions = {EMBEDDING_OFFSET: [_scaled(embedding, norm)], MEAN_OFFSET: [_scaled(mean_offset, norm)],
                      DIFFERENCE_OF_MEANS: [] if vanish else [_scaled(means[layer], norm)],
                      RANDOM: [random_direction(means.shape[1], seed + i) * norm
                               for i in range(num_random)]}  # fmt: skip
        for row, alpha in enumerate(alphas):
            for kind in kinds:
                if not directions[kind]:
                    continue  # no direction: the cell stays NaN
                totals = [measure(direction, layer, alpha) for direction in directions[kind]]
                flips[kind][row][column] = sum(t[0] for t in totals)
                rates[kind][row][column] = flips[kind][row][column] / trials[kind]
                she[kind][row][column] = sum(t[1] for t in totals) / trials[kind]
                he[kind][row][column] = sum(t[2] for t in totals) / trials[kind]

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))

    return SteeringResult(
        layers=layers, alphas=alphas, kinds=kinds, positions=positions, flip_rates=rates, flips=flips, trials=trials,
        p_she_change=she, p_he_change=he,
        p_he_before=float(before[:, 0].mean()), p_she_before=float(before[:, 1].mean()),
        norms=norms, means_norms=[float(means[layer].norm()) for layer in layers],
        residual_norms=[float(states[layer].norm(dim=-1).mean()) for layer in layers],
        raw_norms={EMBEDDING_OFFSET: float(embedding.norm()), MEAN_OFFSET: float(mean_offset.norm())},
        cosines={EMBEDDING_OFFSET: [cosine(embedding, means[layer]) for layer in layers],
                 MEAN_OFFSET: [cosine(mean_offset, means[layer]) for layer in layers]},
        num_fit=len(prompts.fit), num_heldout=len(heldout), num_eligible=len(eligible), num_random=num_random,
        seed=seed, embedding_pair=EMBEDDING_PAIR, mean_offset_pairs=used, num_layers=num_layers,
        tied=find_parts(model).tied, prompts=prompts,
    )  # fmt: skip


# -- pictures --------------------------------------------------------------------------------------------------------

KIND_COLORS = {EMBEDDING_OFFSET: "tab:orange", MEAN_OFFSET: "tab:purple", DIFFERENCE_OF_MEANS: "tab:blue",
               RANDOM: "tab:grey"}  # fmt: skip


def kind_label(result: SteeringResult, kind: str) -> str:
    male, female = result.embedding_pair
    return {EMBEDDING_OFFSET: f"embedding offset E({female}) - E({male})",
            MEAN_OFFSET: f"mean offset of {len(result.mean_offset_pairs)} gender pairs",
            DIFFERENCE_OF_MEANS: "difference of means (activation addition)",
            RANDOM: f"random ({result.num_random} seeds)"}[kind]  # fmt: skip


def plot_flip_rates(result: SteeringResult, path: str | Path) -> Path:
    """Grouped bars: the flip rate he -> she per layer for each direction kind, one panel per alpha (stacked); a
    missing direction (the difference of means where it is zero) is marked "n/a"."""
    plt = pyplot()
    num_alphas, num_kinds = len(result.alphas), len(result.kinds)
    width = max(6.5, 0.45 * len(result.layers) * num_kinds + 2.5)
    fig, axes = plt.subplots(num_alphas, 1, figsize=(width, 1.6 + 3.0 * num_alphas), dpi=100, squeeze=False,
                             sharex=True)  # fmt: skip
    bar = 0.8 / num_kinds
    for row, (ax, alpha) in enumerate(zip(axes[:, 0], result.alphas, strict=True)):
        for i, kind in enumerate(result.kinds):
            xs = [column + (i - (num_kinds - 1) / 2) * bar for column in range(len(result.layers))]
            rates = [100 * rate for rate in result.flip_rates[kind][row]]
            heights = [0.0 if math.isnan(rate) else rate for rate in rates]
            bars = ax.bar(xs, heights, bar * 0.95, color=KIND_COLORS[kind], label=kind_label(result, kind))
            labels = ["n/a" if math.isnan(rate) else f"{rate:.0f}" for rate in rates]
            ax.bar_label(bars, labels=labels, fontsize=7, padding=1, color=KIND_COLORS[kind])
        ax.set_ylim(0, 115)
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel("flip rate he \u2192 she (%)", fontsize=9)
        ax.set_title(f"\u03b1 = {alpha:g}: {result.num_eligible} held-out prompts (random: {result.num_random} "
                     f"\u00d7 {result.num_eligible})", fontsize=9)  # fmt: skip
        ax.grid(axis="y", alpha=0.25)
    bottom = axes[-1, 0]
    bottom.set_xticks(range(len(result.layers)))
    bottom.set_xticklabels(["0\n(embedding)" if layer == 0 else str(layer) for layer in result.layers])
    bottom.set_xlabel("layer L: steered after L decoder layers")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    where = "every position" if result.positions == "all" else "the prompt's last token"
    fig.suptitle(f"Adding \u03b1 \u00d7 a direction to the residual stream at {where}: does the next word turn from "
                 "he to she?\nAll directions at a layer have one norm: layer 0 the embedding offset's, later "
                 "layers the difference of means'", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.7 / fig.get_figheight(), 1, 1))
    return save_figure(fig, path, tight=False)


__all__ = [
    "DEFAULT_PROMPT",
    "DIFFERENCE_OF_MEANS",
    "DIRECTION_KINDS",
    "EMBEDDING_OFFSET",
    "FEMALE_WORD",
    "MALE_WORD",
    "MEAN_OFFSET",
    "POSITIONS",
    "RANDOM",
    "SteeredPrompt",
    "SteeringPrompts",
    "SteeringResult",
    "check_layer",
    "difference_of_means",
    "embedding_offset",
    "kind_label",
    "last_position_states",
    "mean_gender_offset",
    "plot_flip_rates",
    "random_direction",
    "steer_prompt",
    "steered_word_probabilities",
    "steering",
    "steering_direction",
    "steering_prompts",
    "steering_report",
    "word_probabilities",
]
