"""Context moves the vector: the hidden state of the SAME word in two kinds of context, layer by layer.

A word's input embedding is one row of the embedding matrix, the same in every sentence; the layers above mix in
the words before it, so its hidden state (the residual stream at its position) can depend on the context. The
essays' example is "bank" by a river and at a lender; TinyWorld has no such word, so the built-in studies use what
it has, with texts built from the generator's own templates and word lists:

- "pronoun": "he" in royal stories (the king or the prince, ROYAL_TEMPLATES) against commoner stories (the man, the
  boy, the father or the husband, COMMONER_TEMPLATES): "the king ruled the kingdom wisely. he ..." against "the man
  worked in the fields kindly. he ...". The pronoun is the same token; its referent (and the story) differs.
- "number": "six" as the second operand ("two plus six equals eight.", "nine minus six equals three.") against "six"
  as the answer ("two plus four equals six."), in sums, differences and products the training distribution has.

Which vector
------------
The residual stream `residual_streams` captures: layer 0 is what enters the first decoder layer (the token
embedding; for GPT-2-style models plus a learned position embedding), layer l what leaves decoder layer l. A word
of several tokens is read at its LAST token (the first place where the whole word has been seen). With RoPE
(TinyLLM, Llama) positions act inside attention only, so at layer 0 every occurrence is exactly the word's
embedding row: nothing can separate the contexts there, a built-in sanity check (`identical_at_embeddings`).

Scores, per layer
-----------------
- `accuracy` (the headline): held-out nearest-centroid accuracy, leave one pair out. Hide one occurrence of each
  context, average the remaining occurrences of each context, and guess for each hidden occurrence the context whose
  average (centroid) is nearer in Euclidean distance; repeat for every such pair and average (an exact tie counts
  half). 1.0 means every occurrence is told apart; 0.5 is chance, exactly in expectation when the contexts do not
  matter (nothing tells the hidden pair's order apart; leaving ONE occurrence out would pull its own centroid away
  from it and score a few points below 0.5). Identical vectors score exactly 0.5.
- `chance_accuracy`: what chance reaches. The context labels are shuffled (`num_shuffles` seeded permutations, the
  counts kept) and the accuracy recomputed; this is the 95th percentile. An accuracy above it is evidence (one-sided,
  5%) that the layer separates the contexts. It depends on how many texts there are and how they cluster (by noun,
  by the words just before): 0.62 to 0.65 for 20 to 24 texts per context on the demo model, 0.8 or more for four.
- `cosine_distance`: 1 - cos(mean of context A, mean of context B), how far apart the two average directions are.
- `separation_ratio`: |mean A - mean B| / the within-context spread (the root mean square distance of an occurrence
  to its own context's mean, pooled over both): 0 when the means coincide, larger as the contexts pull apart for how
  much the texts of one context vary. The spread counts every direction, so clouds can be told apart below 1.

`points` are a 2-D PCA of the N hidden states of each layer on its own (the SVD of the centred vectors; each axis's
sign fixed so that its largest coordinate is positive); `plot_context_separation` draws one panel per layer.
"""

import math
import random
import re
from dataclasses import dataclass
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
    TinyWorld,
    agreement,
    number_to_words,
    template_slots,
)
from .figures import pyplot, save_figure
from .layers import residual_streams
from .model_parts import InsightError, encode_prompt, token_text, word_token_ids

DEFAULT_SHUFFLES = 200  # label shuffles behind chance_accuracy
DEFAULT_PER_CONTEXT = 24  # occurrences per context in a built-in study (fewer when the generator has fewer)
NUMBER_WORD = 6  # the number study's word, "six": 20 answer sentences in TinyWorld's default distribution
STUDY_NAMES = ("pronoun", "number")


@dataclass
class ContextStudy:
    name: str
    word: str
    description: str
    contexts: dict[str, list[tuple[str, int]]]  # two context names -> (text, character offset of the word in it)


@dataclass
class ContextResult:
    study: str
    description: str
    word: str
    word_tokens: list[str]  # the tokens of " word"; the hidden state is read at the last one
    context_names: list[str]  # (2,)
    texts: list[str]  # (N,) every occurrence's text, the occurrence marked as [word]; context A's first
    labels: list[int]  # (N,) the index in context_names of each text's context
    positions: list[int]  # (N,) the token position of the word's last token in each text (bos included)
    layer_names: list[str]  # (L + 1,) "embeddings", "layer 1", ..., "layer L"
    accuracy: list[float]  # (L + 1,) held-out (leave-one-pair-out) nearest-centroid accuracy: 0.5 = chance
    cosine_distance: list[float]  # (L + 1,) 1 - cos(mean of context A, mean of context B)
    separation_ratio: list[float]  # (L + 1,) |mean A - mean B| / pooled within-context RMS spread
    points: list[list[list[float]]]  # (L + 1, N, 2) 2-D PCA of each layer's N hidden states
    explained_variance: list[list[float]]  # (L + 1, 2) share of each layer's variance on its two PCA axes
    chance_accuracy: list[float]  # (L + 1,) 95th percentile of the accuracy with the context labels shuffled
    num_shuffles: int  # how many shuffles chance_accuracy is estimated from
    identical_at_embeddings: bool  # every occurrence is the same vector at layer 0 (true with RoPE)


# -- studies --------------------------------------------------------------------------------------------------------


def _occurrence(word: str, text: str, where: str) -> tuple[str, int]:
    """(text without the marking brackets, character offset of the word): the occurrence marked as [word], else the
    first whole-word occurrence."""
    marked = f"[{word}]"
    if text.count(marked) > 1:
        raise InsightError(f"{where} marks {marked} more than once; mark the one occurrence to read.")
    if marked in text:
        start = text.index(marked)
        return text[:start] + word + text[start + len(marked) :], start
    found = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text)
    if found is None:
        raise InsightError(f"The word {word!r} is not in {where} ({text!r}); give texts that contain it as a whole "
                           "word, or choose another word.")  # fmt: skip
    return text, found.start()


def custom_study(
    word: str, texts_a: list[str], texts_b: list[str], names: tuple[str, str] = ("context A", "context B")
) -> ContextStudy:
    """A study of `word` in the user's two lists of texts. In each text the word's first whole-word occurrence is
    read; to read another, mark it in square brackets: "two plus four equals [six]."."""
    word = word.strip()
    if not word or any(ch.isspace() for ch in word):
        raise InsightError(f"{word!r} is not a single word; give one word such as 'he'.")
    if len(names) != 2 or names[0] == names[1]:
        raise InsightError(f"The contexts need two different names, got {list(names)}.")
    contexts = {}
    for name, texts in zip(names, (texts_a, texts_b), strict=True):
        texts = [text.strip() for text in texts if text.strip()]
        if len(texts) < 2:
            raise InsightError(f"Context {name!r} has {len(texts)} text(s); give at least two per context (a "
                               "held-out score hides one and needs another).")  # fmt: skip
        contexts[name] = [_occurrence(word, text, f"text {i + 1} of {name!r}") for i, text in enumerate(texts)]
    return ContextStudy("custom", word, f"{word!r} in {names[0]} against {names[1]} (your texts)", contexts)


def _fill(template: str, rng: random.Random, fields: dict[str, str]) -> str:
    return template.format(**fields, **{name: rng.choice(SLOTS[name]) for name in template_slots(template)})


def _pronoun_study(per_context: int) -> ContextStudy:
    """Two-sentence royalty documents about a male noun: "the NOUN <family template>. he <template>.", royal
    templates for the king and the prince, commoner ones for the man, boy, father and husband; "he" is read in the
    second sentence. Fills are drawn with a fixed seed; every text is distinct."""
    word = PRONOUNS[0][0]
    males = [male for male, _ in NOUN_PAIRS]
    groups = {
        "royal": ([noun for noun in males if noun in ROYAL_NOUNS], ROYAL_TEMPLATES),
        "commoner": ([noun for noun in males if noun not in ROYAL_NOUNS], COMMONER_TEMPLATES),
    }
    contexts = {}
    for name, (nouns, templates) in groups.items():
        rng = random.Random(f"tinyllm-context:pronoun:{name}")
        texts: list[tuple[str, int]] = []
        for _ in range(100 * per_context):  # far more draws than needed: every per_context fills up
            if len(texts) == per_context:
                break
            noun = nouns[len(texts) % len(nouns)]
            first = _fill(rng.choice(templates), rng, agreement(noun, first=True))
            second = _fill(rng.choice(SHARED_TEMPLATES + templates), rng, agreement(noun, first=False))
            text = f"{first} {second}"
            if all(text != seen for seen, _ in texts):
                texts.append((text, len(first) + 1))
        contexts[name] = texts
    return ContextStudy("pronoun", word, f"{word!r} whose referent is royal (king, prince) against a commoner "
                        "(man, boy, father, husband)", contexts)  # fmt: skip


def _number_study(per_context: int) -> ContextStudy:
    """One-sentence arithmetic documents of TinyWorld's default distribution (held-out problems excluded) in which
    the word occurs once: as the second operand ("nine minus [six] equals three.") or as the answer ("two plus four
    equals [six]."), so it always follows a space; a seeded sample of up to `per_context` of each, the same number of
    both."""
    word = number_to_words(NUMBER_WORD)
    world = TinyWorld()
    roles: dict[str, list[tuple[str, int]]] = {"operand": [], "answer": []}
    for op, problems in world.problems.items():
        for a, b in problems:
            answer = {"plus": a + b, "minus": a - b, "times": a * b}[op]
            prompt = f"{number_to_words(a)} {op} {number_to_words(b)} equals"
            text = f"{prompt} {number_to_words(answer)}."
            if text.replace(".", "").split().count(word) != 1:
                continue
            if b == NUMBER_WORD:
                roles["operand"].append((text, len(prompt) - len(word) - len(" equals")))
            elif answer == NUMBER_WORD:
                roles["answer"].append((text, len(prompt) + 1))
    count = min(per_context, *(len(texts) for texts in roles.values()))
    contexts = {role: sorted(random.Random(f"tinyllm-context:number:{role}").sample(texts, count))
                for role, texts in roles.items()}  # fmt: skip
    return ContextStudy("number", word, f"{word!r} as an operand against {word!r} as the answer of a sum, "
                        "difference or product", contexts)  # fmt: skip


def built_in_studies(per_context: int = DEFAULT_PER_CONTEXT) -> dict[str, ContextStudy]:
    """The TinyWorld studies by name: "pronoun" (he: royal vs commoner) and "number" (six: operand vs answer)."""
    if per_context < 2:
        raise InsightError(f"per_context={per_context} must be at least 2 (a held-out score hides one occurrence).")
    return {"pronoun": _pronoun_study(per_context), "number": _number_study(per_context)}


# -- scores ---------------------------------------------------------------------------------------------------------


def _word_position(model, tokenizer, word: str, word_ids: list[int], text: str, start: int, where: str):
    """(ids (1, T), position of the word's last token), checking that the word is spelled by its own tokens there."""
    ids = encode_prompt(model, tokenizer, text)
    try:
        offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    except NotImplementedError as err:
        raise InsightError("This tokenizer cannot map tokens to characters (a slow tokenizer); load its fast "
                           "version (tokenizer.json).") from err  # fmt: skip
    end = start + len(word)
    inside = [t for t, (lo, hi) in enumerate(offsets) if lo < end and hi > start and hi > lo]
    position = inside[-1] if inside else -1
    found = ids[0, max(position - len(word_ids) + 1, 0) : position + 1].tolist()
    if not inside or found != word_ids:
        spelled = [token_text(tokenizer, i) for i in ids[0, inside].tolist()] if inside else []
        raise InsightError(f"In {where}, {word!r} is tokenised as {spelled}, not as in a sentence "
                           f"({[token_text(tokenizer, i) for i in word_ids]}); put a space before it and none "
                           "inside.")  # fmt: skip
    return ids, position


def _hidden_states(model: PreTrainedModel, prefixes: list[torch.Tensor], batch_size: int = 32) -> torch.Tensor:
    """(L + 1, N, C) float64: every layer's residual stream at the last token of each prefix (1-D ids). Prefixes run
    in batches, right-padded with their own last token: causal attention keeps the padding out of earlier positions,
    so no attention mask is needed."""
    rows = []
    for first in range(0, len(prefixes), batch_size):
        batch = prefixes[first : first + batch_size]
        width = max(len(row) for row in batch)
        ids = torch.stack([torch.cat([row, row[-1:].expand(width - len(row))]) for row in batch])  # (B, T)
        last = torch.tensor([len(row) - 1 for row in batch], device=ids.device)
        streams = residual_streams(model, ids)  # L + 1 tensors (B, T, C)
        rows.append(torch.stack([h[torch.arange(len(batch)), last] for h in streams]).double().cpu())
    return torch.cat(rows, 1)


def _pair_out_accuracy(x: torch.Tensor, index_a: torch.Tensor, index_b: torch.Tensor) -> torch.Tensor:
    """Leave-one-pair-out nearest-centroid accuracy of the rows of x (N, C), float64, for S labellings at once: row s
    of index_a (S, nA) and index_b (S, nB) lists the occurrences of context A and B. For every pair of one occurrence
    of each context, both are hidden, the centroids are the means of the rest, and each hidden occurrence scores 1
    if its own context's centroid is nearer, 0.5 on a tie, else 0; (S,) means over all pairs."""
    a, b = x[index_a], x[index_b]  # (S, nA, C), (S, nB, C)
    means_a = (a.sum(1, keepdim=True) - a) / (a.shape[1] - 1)  # [s, i]: context A's centroid without occurrence i
    means_b = (b.sum(1, keepdim=True) - b) / (b.shape[1] - 1)

    def hits(own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        return ((own < other).double() + 0.5 * (own == other).double()).mean((1, 2))

    exact = "donot_use_mm_for_euclid_dist"  # differences, not the |x|^2 - 2xy + |y|^2 shortcut: equal rows give 0
    a_own = (a - means_a).norm(dim=2)[:, :, None]  # (S, nA, 1)
    b_own = (b - means_b).norm(dim=2)[:, None, :]  # (S, 1, nB)
    a_other = torch.cdist(a, means_b, compute_mode=exact)  # [s, i, j]: occurrence i of A to B's centroid without j
    b_other = torch.cdist(means_a, b, compute_mode=exact)  # [s, i, j]: occurrence j of B to A's centroid without i
    return (hits(a_own, a_other) + hits(b_own, b_other)) / 2


def _pca_2d(x: torch.Tensor) -> tuple[list[list[float]], list[float]]:
    centred = x - x.mean(0)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    coords = torch.zeros(len(x), 2, dtype=x.dtype)
    k = min(2, len(s))
    coords[:, :k] = centred @ vh[:k].T
    largest = coords.abs().argmax(0)
    signs = torch.sign(coords[largest, torch.arange(2)])
    coords = coords * torch.where(signs == 0, torch.ones_like(signs), signs)
    total = float((s**2).sum())
    explained = [float(s[i] ** 2) / total if total > 0 and i < k else 0.0 for i in range(2)]
    return coords.tolist(), explained


def separation_scores(vectors: torch.Tensor, labels: list[int]) -> tuple[float, float, float]:
    """(held-out accuracy, cosine distance of the means, separation ratio) of vectors (N, C) in two contexts.

    Vectors are shifted by the first one before anything is averaged (distances do not change), so occurrences that
    are the same vector give exactly 0.5, 0 and 0 rather than float rounding."""
    x = vectors.double()
    origin = x[0].clone()
    x = x - origin
    y = torch.tensor(labels)
    accuracy = float(_pair_out_accuracy(x, *_indices(y[None])))
    means = [x[y == k].mean(0) for k in (0, 1)]
    unit = [(m + origin) / (m + origin).norm() for m in means]
    cosine_distance = float(((unit[0] - unit[1]) ** 2).sum() / 2)  # = 1 - cos, exactly 0 for equal means
    between = float((means[0] - means[1]).norm())
    within = math.sqrt(float(torch.cat([((x[y == k] - means[k]) ** 2).sum(1) for k in (0, 1)]).mean()))
    ratio = 0.0 if between == 0 else between / within if within > 0 else math.inf
    return accuracy, cosine_distance, ratio


def _indices(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, N) 0/1 labellings with the same counts -> the (S, nA) and (S, nB) indices of each context's rows."""
    order = labels.argsort(dim=1, stable=True)
    count_a = int((labels[0] == 0).sum())
    return order[:, :count_a], order[:, count_a:]


def chance_accuracy(vectors: torch.Tensor, labels: list[int], num_shuffles: int = 200, seed: int = 0) -> float:
    """The 95th percentile of the held-out accuracy of vectors (N, C) over `num_shuffles` seeded random permutations
    of the context labels (counts kept): the accuracy chance reaches one time in twenty."""
    x = vectors.double()
    x = x - x[0].clone()
    y = torch.tensor(labels)
    gen = torch.Generator().manual_seed(seed)
    shuffled = torch.stack([y[torch.randperm(len(y), generator=gen)] for _ in range(num_shuffles)])  # (S, N)
    chunk = max(1, 4_000_000 // (len(y) * x.shape[1]))  # shuffles per batch: a few million numbers at a time
    accuracies = torch.cat([_pair_out_accuracy(x, *_indices(shuffled[first : first + chunk]))
                            for first in range(0, num_shuffles, chunk)])  # fmt: skip
    return float(accuracies.quantile(0.95))


def context_separation(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    study: ContextStudy | str,
    per_context: int = DEFAULT_PER_CONTEXT,
    num_shuffles: int = DEFAULT_SHUFFLES,
) -> ContextResult:
    """Per layer, how well the hidden state of `study.word` tells its two contexts apart (a `ContextStudy`, or the
    name of a built-in one, built with `per_context` texts per context); see the module docstring for the scores."""
    if num_shuffles < 1:
        raise InsightError(f"num_shuffles={num_shuffles} must be at least 1 (20 or more for a 95th percentile).")
    if isinstance(study, str):
        studies = built_in_studies(per_context)
        if study not in studies:
            raise InsightError(f"Unknown study {study!r}; choose one of {list(studies)} or build your own with "
                               "custom_study(word, texts_a, texts_b).")  # fmt: skip
        study = studies[study]
    if len(study.contexts) != 2 or any(len(texts) < 2 for texts in study.contexts.values()):
        counts = {name: len(texts) for name, texts in study.contexts.items()}
        raise InsightError(f"A study needs exactly two contexts of at least two texts each, got {counts}.")
    word_ids = word_token_ids(tokenizer, study.word)
    names = list(study.contexts)
    texts, labels, positions, prefixes = [], [], [], []
    for label, name in enumerate(names):
        for i, (text, start) in enumerate(study.contexts[name]):
            if text[start : start + len(study.word)] != study.word:
                raise InsightError(f"Text {i + 1} of {name!r} has no {study.word!r} at character {start}; give the "
                                   "offset where the word starts.")  # fmt: skip
            where = f"text {i + 1} of {name!r}"
            ids, position = _word_position(model, tokenizer, study.word, word_ids, text, start, where)
            prefixes.append(ids[0, : position + 1])  # a causal LM's state there sees nothing after it
            texts.append(f"{text[:start]}[{study.word}]{text[start + len(study.word) :]}")
            labels.append(label)
            positions.append(position)
    hidden = _hidden_states(model, prefixes)  # (L + 1, N, C)
    scores = [separation_scores(layer, labels) for layer in hidden]
    pcas = [_pca_2d(layer - layer[0]) for layer in hidden]  # shifted as in the scores: equal vectors -> all zero
    return ContextResult(
        study=study.name,
        description=study.description,
        word=study.word,
        word_tokens=[token_text(tokenizer, i) for i in word_ids],
        context_names=names,
        texts=texts,
        labels=labels,
        positions=positions,
        layer_names=["embeddings"] + [f"layer {i}" for i in range(1, len(hidden))],
        accuracy=[s[0] for s in scores],
        cosine_distance=[s[1] for s in scores],
        separation_ratio=[s[2] for s in scores],
        points=[p[0] for p in pcas],
        explained_variance=[p[1] for p in pcas],
        chance_accuracy=[chance_accuracy(layer, labels, num_shuffles) for layer in hidden],
        num_shuffles=num_shuffles,
        identical_at_embeddings=bool((hidden[0] == hidden[0, 0]).all()),
    )


def interpretation(result: ContextResult) -> str:
    """One sentence on what the scores say: at which layers the contexts are told apart beyond chance (if at all),
    and where the two clouds lie furthest apart for their spread (the accuracy alone saturates at 100%)."""
    layers = range(len(result.accuracy))
    best = max(layers, key=result.accuracy.__getitem__)
    above = [layer for layer in layers if result.accuracy[layer] > result.chance_accuracy[layer]]
    pair = f"{result.context_names[0]} from {result.context_names[1]}"
    if not above:
        return (f"No layer tells {pair} beyond chance (best {result.accuracy[best]:.0%} at "
                f"{result.layer_names[best]}, chance reaches {result.chance_accuracy[best]:.0%} there): this model "
                f"gives {result.word!r} about the same vector in both.")  # fmt: skip
    if above == list(range(above[0], len(result.accuracy))):
        where = f"From {result.layer_names[above[0]]} on"
    else:
        where = "At " + ", ".join(result.layer_names[layer] for layer in above) + " (not the others)"
    best = max(above, key=result.accuracy.__getitem__)
    widest = max(layers, key=lambda layer: result.separation_ratio[layer])
    return (f"{where}, the hidden state of {result.word!r} tells {pair} beyond chance (best "
            f"{result.accuracy[best]:.0%} at {result.layer_names[best]}), the clouds furthest apart for their spread "
            f"at {result.layer_names[widest]} (between/within {result.separation_ratio[widest]:.2f}): the same token, "
            "moved by its context to different vectors.")  # fmt: skip


# -- picture --------------------------------------------------------------------------------------------------------

MAX_COLUMNS = 6


def plot_context_separation(result: ContextResult, path: str | Path) -> Path:
    """Small multiples, one panel per layer: the 2-D PCA of the word's hidden states coloured by context, titled with
    the held-out accuracy. Each panel has its own PCA and scale (axes carry no units)."""
    plt = pyplot()

    n_panels = len(result.layer_names)
    rows = math.ceil(n_panels / MAX_COLUMNS)
    columns = math.ceil(n_panels / rows)  # rows as even as they go: 8 panels are 4 + 4, not 6 + 2
    fig, axes = plt.subplots(rows, columns, figsize=(0.4 + 2.6 * columns, 0.9 + 2.7 * rows), dpi=100,
                             squeeze=False)  # fmt: skip
    palette = plt.get_cmap("tab10")
    markers = ("o", "^")
    for layer in range(rows * columns):
        ax = axes[layer // columns][layer % columns]
        if layer >= n_panels:
            ax.axis("off")
            continue
        points = result.points[layer]
        for k, name in enumerate(result.context_names):
            xy = [p for p, label in zip(points, result.labels, strict=True) if label == k]
            ax.scatter(*zip(*xy, strict=True), s=18, color=palette(k), marker=markers[k], alpha=0.75,
                       label=f"{name} ({len(xy)})", linewidths=0)  # fmt: skip
        spread = max((abs(v) for p in points for v in p), default=0.0)
        if spread == 0:  # every occurrence is one vector: a single dot
            ax.set_xlim(-1, 1)
            ax.set_ylim(-1, 1)
            ax.text(0, -0.35, f"all {len(points)} occurrences\nare one vector", ha="center", va="top", fontsize=7,
                    color="dimgrey")  # fmt: skip
        else:
            ax.margins(0.12)
        ax.set_xticks([])
        ax.set_yticks([])
        variance = sum(result.explained_variance[layer])
        shown = f" (PCA: {variance:.0%} of variance)" if spread else ""
        accuracy = f"held-out acc {result.accuracy[layer]:.0%} (chance {result.chance_accuracy[layer]:.0%})"
        ax.set_title(f"{result.layer_names[layer]}{shown}\n{accuracy}", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    tokens = "" if len(result.word_tokens) == 1 else f" (at its last token {result.word_tokens[-1]!r})"
    fig.suptitle(f"Hidden state of {result.word!r}{tokens} per layer, 2-D PCA per panel: "
                 f"{result.context_names[0]} vs {result.context_names[1]}", fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, path, tight=False)


__all__ = [
    "DEFAULT_PER_CONTEXT",
    "DEFAULT_SHUFFLES",
    "STUDY_NAMES",
    "ContextResult",
    "ContextStudy",
    "built_in_studies",
    "chance_accuracy",
    "context_separation",
    "custom_study",
    "interpretation",
    "plot_context_separation",
    "separation_scores",
]
