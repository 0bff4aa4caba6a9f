"""Embeddings become geometry: nearest neighbours, analogies, the parallelism of gender pairs and a 2-D word map, all
read off the model's INPUT embedding matrix (V, C) (`find_parts(model).embed_tokens`).

Words and tokens
----------------
* A word's vector is the MEAN of the input embeddings of its tokens, the tokens of " word" as it appears inside a
  sentence (`word_token_ids`). A byte-level BPE vocabulary of a few hundred tokens spells many words in several
  pieces ("princess" may be " prin" + "cess"), so every result reports `num_tokens` per word: a mean of fragments
  is a rougher vector than a word with its own token.
* Neighbours and analogy answers are chosen among CANDIDATES: the vocabulary tokens that decode to a whole word after
  a space (" queen": one leading space, then letters; digits are allowed after a letter for word-level vocabularies
  such as "w42"), and that re-encode to exactly themselves, so answers are words, not word-internal fragments. BPE
  merge steps that are also word starts (" equ" on the way to " equals") pass this test and may still show up.

Similarity is the cosine; an analogy "a - b + c" is answered with 3CosAdd (Mikolov et al. 2013, "Linguistic
Regularities in Continuous Space Word Representations"): the candidate nearest to vec(a) - vec(b) + vec(c), the
three inputs excluded.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.tinyworld import CAPITALS, NOUN_PAIRS, PRONOUNS, number_to_words
from .figures import pyplot, save_figure
from .model_parts import InsightError, find_parts, word_token_ids

# (male, female) pairs that occur in the TinyWorld corpus: its noun pairs, then its pronouns (he/she, his/her).
GENDER_PAIRS: list[tuple[str, str]] = [*NOUN_PAIRS, *zip(*PRONOUNS, strict=True)]

NUM_MAP_CAPITALS = 6  # country/capital pairs on the default word map (more labels would crowd it)


def _default_groups() -> dict[str, list[str]]:
    single = [(country, capital) for country, capital in CAPITALS if " " not in country + capital]
    return {
        "royalty and gender": [word for pair in GENDER_PAIRS for word in pair],
        "numbers": [number_to_words(n) for n in range(1, 13)],
        "countries": [country for country, _ in single[:NUM_MAP_CAPITALS]],
        "capitals": [capital for _, capital in single[:NUM_MAP_CAPITALS]],
    }


@dataclass
class NeighboursResult:
    word: str
    num_tokens: int  # tokens of " word"; its vector is their mean
    neighbours: list[tuple[str, float]]  # (candidate word, cosine), most similar first, the word itself excluded


@dataclass
class AnalogyResult:
    a: str
    b: str
    c: str
    top: list[tuple[str, float]]  # candidates nearest to vec(a) - vec(b) + vec(c) by cosine, a, b, c excluded
    expected: str | None = None
    expected_rank: int | None = None  # 1-based among the candidates; None when `expected` is not a candidate
    expected_cosine: float | None = None  # cosine of vec(expected) (a mean if several tokens) to the target
    num_tokens: dict[str, int] = field(default_factory=dict)  # tokens per word, for a, b, c (and expected)


@dataclass
class ParallelismResult:
    score: float  # mean pairwise cosine between the offsets vec(female) - vec(male) of the pairs
    baseline: float  # the same mean for the offsets of random pairs of candidate words
    baseline_std: float  # spread (std) of one offset-to-offset cosine among those random pairs
    num_pairs: int
    pairs_used: list[tuple[str, str]]
    pairs_skipped: list[tuple[str, str]] = field(default_factory=list)  # a word not in the vocabulary
    num_random: int = 0


@dataclass
class WordMap:
    words: list[str]
    groups: list[str]  # the group of each word
    coords: list[tuple[float, float]]  # the 2-D PCA coordinates of each word vector
    explained_variance: list[float]  # fraction of the variance of the word vectors along each of the 2 components
    pairs: list[tuple[str, str]]  # (male, female) pairs on the map, drawn as arrows
    num_tokens: list[int] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # words of the groups the tokenizer cannot spell


def _embedding(model: PreTrainedModel) -> torch.Tensor:
    """The input embedding matrix (V, C) as float64, detached (all geometry is read, never written)."""
    return find_parts(model).embed_tokens.weight.detach().double()


def _word_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, word: str) -> list[int]:
    ids = word_token_ids(tokenizer, word)
    vocab_size = find_parts(model).embed_tokens.num_embeddings
    if max(ids) >= vocab_size:
        raise InsightError(f"The word {word!r} has token id {max(ids)} outside the model's vocabulary of "
                           f"{vocab_size}; the tokenizer does not match the model (load both from one "
                           "folder).")  # fmt: skip
    return ids


def word_vector(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, word: str) -> torch.Tensor:
    """The (C,) vector of `word`: the mean of the input embeddings of the tokens of " word" (float64, detached)."""
    return _embedding(model)[_word_ids(model, tokenizer, word)].mean(0)


def candidate_words(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[list[str], torch.Tensor]:
    """The candidate words (see the module docstring) and their token ids (N,), in vocabulary order."""
    vocab_size = find_parts(model).embed_tokens.num_embeddings
    texts = tokenizer.batch_decode([[i] for i in range(vocab_size)])
    ids, words = [], []
    for token_id, text in enumerate(texts):
        word = text[1:] if text.startswith(" ") else text
        if word and word[0].isalpha() and word.isalnum():
            ids.append(token_id)
            words.append(word)
    if not words:
        return [], torch.zeros(0, dtype=torch.long)
    encoded = tokenizer([" " + word for word in words], add_special_tokens=False)["input_ids"]
    keep = [i for i, enc in enumerate(encoded) if enc == [ids[i]]]
    return [words[i] for i in keep], torch.tensor([ids[i] for i in keep], dtype=torch.long)


def _ranked(target: torch.Tensor, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines (N,) of `target` (C,) to `vectors` (N, C) and the indices sorted by decreasing cosine (stable)."""
    cosines = torch.nn.functional.cosine_similarity(vectors, target.unsqueeze(0), dim=-1)
    return cosines, torch.sort(cosines, descending=True, stable=True).indices


def _candidates_or_raise(model, tokenizer) -> tuple[list[str], torch.Tensor]:
    words, ids = candidate_words(model, tokenizer)
    if not words:
        raise InsightError("No vocabulary token decodes to a whole word after a space; neighbours and analogies "
                           "need a tokenizer with word tokens (train one with a larger vocabulary).")  # fmt: skip
    return words, ids


def nearest_neighbours(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, word: str, k: int = 10
) -> NeighboursResult:
    """The `k` candidate words whose input embeddings have the highest cosine to `word`'s vector (itself excluded)."""
    query_ids = _word_ids(model, tokenizer, word)
    words, ids = _candidates_or_raise(model, tokenizer)
    embedding = _embedding(model)
    cosines, order = _ranked(embedding[query_ids].mean(0), embedding[ids.to(embedding.device)])
    query = word.strip()
    top = [(words[i], float(cosines[i])) for i in order.tolist() if words[i] != query][:k]
    return NeighboursResult(query, len(query_ids), top)


def analogy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    a: str,
    b: str,
    c: str,
    k: int = 5,
    expected: str | None = None,
) -> AnalogyResult:
    """3CosAdd: the `k` candidates nearest by cosine to vec(a) - vec(b) + vec(c), with a, b and c excluded.

    "king - man + woman" is `analogy(model, tokenizer, "king", "man", "woman", expected="queen")`; `expected_rank`
    is its 1-based rank among the remaining candidates (None when it is not a candidate word)."""
    vectors = {w: word_vector(model, tokenizer, w) for w in (a, b, c)}
    num_tokens = {w.strip(): len(_word_ids(model, tokenizer, w)) for w in (a, b, c)}
    target = vectors[a] - vectors[b] + vectors[c]  # (C,)
    words, ids = _candidates_or_raise(model, tokenizer)
    embedding = _embedding(model)
    cosines, order = _ranked(target, embedding[ids.to(embedding.device)])
    inputs = {a.strip(), b.strip(), c.strip()}
    ranked = [i for i in order.tolist() if words[i] not in inputs]
    result = AnalogyResult(a.strip(), b.strip(), c.strip(), [(words[i], float(cosines[i])) for i in ranked[:k]])
    if expected is not None:
        result.expected = expected.strip()
        expected_vector = word_vector(model, tokenizer, expected)
        num_tokens[result.expected] = len(_word_ids(model, tokenizer, expected))
        result.expected_cosine = float(torch.nn.functional.cosine_similarity(expected_vector, target, dim=0))
        ranked_words = [words[i] for i in ranked]
        if result.expected in ranked_words:
            result.expected_rank = ranked_words.index(result.expected) + 1
    result.num_tokens = num_tokens
    return result


def _mean_pairwise_cosine(offsets: torch.Tensor) -> tuple[float, float]:
    """Mean and std of the cosines between every two distinct rows of `offsets` (N, C)."""
    unit = torch.nn.functional.normalize(offsets, dim=-1)
    rows, cols = torch.triu_indices(len(unit), len(unit), offset=1)
    cosines = (unit @ unit.T)[rows, cols]
    std = float(cosines.std()) if len(cosines) > 1 else 0.0
    return float(cosines.mean()), std


def parallelism_score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pairs: list[tuple[str, str]] = GENDER_PAIRS,
    num_random: int = 200,
    seed: int = 0,
) -> ParallelismResult:
    """How parallel the offsets vec(female) - vec(male) of `pairs` are: their mean pairwise cosine (1 when every pair
    differs by the same direction), against the same statistic for `num_random` random pairs of distinct candidate
    words drawn with `seed`. Pairs with a word the tokenizer cannot spell are skipped and listed."""
    used, skipped, offsets = [], [], []
    for male, female in pairs:
        try:
            offsets.append(word_vector(model, tokenizer, female) - word_vector(model, tokenizer, male))
            used.append((male, female))
        except InsightError:
            skipped.append((male, female))
    if len(used) < 2:
        raise InsightError(f"Only {len(used)} of the pairs {pairs} are in the vocabulary; the parallelism score "
                           "needs at least two (give pairs of words from the corpus).")  # fmt: skip
    score, _ = _mean_pairwise_cosine(torch.stack(offsets))
    _, ids = _candidates_or_raise(model, tokenizer)
    if len(ids) < 2 or num_random < 2:
        raise InsightError(f"The random baseline needs num_random >= 2 (got {num_random}) and at least two candidate "
                           f"words (got {len(ids)}).")  # fmt: skip
    generator = torch.Generator().manual_seed(seed)
    first = torch.randint(len(ids), (num_random,), generator=generator)
    second = (first + torch.randint(1, len(ids), (num_random,), generator=generator)) % len(ids)  # never == first
    embedding = _embedding(model)
    random_offsets = embedding[ids[second].to(embedding.device)] - embedding[ids[first].to(embedding.device)]
    baseline, baseline_std = _mean_pairwise_cosine(random_offsets)
    return ParallelismResult(score, baseline, baseline_std, len(used), used, skipped, num_random)


def word_map(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    groups: dict[str, list[str]] | None = None,
    pairs: list[tuple[str, str]] = GENDER_PAIRS,
) -> WordMap:
    """A 2-D PCA of the vectors of word sets (default: the royalty/gender pairs, the numbers one..twelve, and six
    countries and their capitals of TinyWorld). PCA is the SVD of the centred (N, C) vectors; each axis's sign is
    fixed so that its largest coordinate is positive. A word in several groups stays in the first."""
    groups = _default_groups() if groups is None else groups
    words, word_groups, vectors, num_tokens, missing = [], [], [], [], []
    for group, members in groups.items():
        for word in members:
            word = word.strip()
            if word in words or word in missing:
                continue
            try:
                vectors.append(word_vector(model, tokenizer, word))
                num_tokens.append(len(_word_ids(model, tokenizer, word)))
                words.append(word)
                word_groups.append(group)
            except InsightError:
                missing.append(word)
    if len(words) < 3:
        raise InsightError(f"Only {len(words)} of the map's words are in the vocabulary ({words}); a 2-D map needs "
                           "at least three (give groups of words from the corpus).")  # fmt: skip
    centred = torch.stack(vectors) - torch.stack(vectors).mean(0)  # (N, C)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    coords = u[:, :2] * s[:2]  # (N, 2)
    largest = coords.abs().argmax(0)
    signs = torch.sign(coords[largest, torch.arange(2)])
    coords = coords * torch.where(signs == 0, torch.ones_like(signs), signs)
    total = float((s**2).sum())
    explained = [float(v) / total if total > 0 else math.nan for v in (s[:2] ** 2)]
    on_map = [(m, f) for m, f in pairs if m in words and f in words]
    return WordMap(words, word_groups, [tuple(xy) for xy in coords.tolist()], explained, on_map, num_tokens, missing)


def _overlap(box, other) -> float:
    width = min(box.x1, other.x1) - max(box.x0, other.x0)
    height = min(box.y1, other.y1) - max(box.y0, other.y0)
    return max(width, 0.0) * max(height, 0.0)


def _place_labels(ax, xy: list[tuple[float, float]], labels: list[str], colors: list) -> None:
    """Write each label next to its point at the first of a ring of offsets where it overlaps no label or point
    already placed (greedy, in display coordinates), else where it overlaps least; far labels get a leader line."""
    from matplotlib.transforms import Bbox

    renderer = ax.figure.canvas.get_renderer()
    dots = [ax.transData.transform(p) for p in xy]
    dots = [Bbox.from_extents(px - 3, py - 3, px + 3, py + 3) for px, py in dots]
    placed = []
    offsets = [(dx * r, dy * r) for r in (4, 11, 18) for dx, dy in
               ((1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1))]  # fmt: skip
    for (x, y), label, color in zip(xy, labels, colors, strict=True):
        best = None
        for dx, dy in offsets:
            ha = "left" if dx > 0 else "right" if dx < 0 else "center"
            va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
            text = ax.annotate(label, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                               fontsize=8, color=color)  # fmt: skip
            box = text.get_window_extent(renderer).expanded(1.04, 1.08)
            cost = sum(_overlap(box, other) for other in placed + dots)
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, text, box, (dx, dy))
            else:
                text.remove()
            if cost == 0:
                break
        _, text, box, (dx, dy) = best
        placed.append(box)
        if max(abs(dx), abs(dy)) > 4:
            leader = dict(arrowstyle="-", color=color, lw=0.5, alpha=0.6, shrinkA=0, shrinkB=2)
            ax.annotate("", (x, y), xytext=(dx, dy), textcoords="offset points", arrowprops=leader)


def plot_word_map(result: WordMap, path: str | Path) -> Path:
    """A scatter of the word map coloured by group, with word labels and grey arrows male -> female."""
    plt = pyplot()

    names = list(dict.fromkeys(result.groups))
    palette = plt.get_cmap("tab10")
    color_of = {group: palette(i % 10) for i, group in enumerate(names)}
    xy = {word: xy for word, xy in zip(result.words, result.coords, strict=True)}
    fig, ax = plt.subplots(figsize=(7.5, 6), dpi=100)
    for group in names:
        points = [xy[w] for w, g in zip(result.words, result.groups, strict=True) if g == group]
        ax.scatter(*zip(*points, strict=True), s=22, color=color_of[group], label=group, zorder=3)
    for male, female in result.pairs:
        ax.annotate("", xy=xy[female], xytext=xy[male], zorder=2,
                    arrowprops=dict(arrowstyle="->", color="grey", alpha=0.6, lw=0.9))  # fmt: skip
    xs, ys = zip(*result.coords, strict=True)
    pad_x, pad_y = 0.12 * (max(xs) - min(xs) or 1.0), 0.08 * (max(ys) - min(ys) or 1.0)
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x)
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    variance = [f"{100 * v:.0f}%" if math.isfinite(v) else "?" for v in result.explained_variance]
    ax.set_xlabel(f"PC 1 ({variance[0]} of variance)")
    ax.set_ylabel(f"PC 2 ({variance[1]} of variance)")
    ax.set_title("Input embeddings of word sets (2-D PCA); arrows: male -> female", fontsize=10)
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    ax.grid(alpha=0.2)
    fig.tight_layout()
    labels = [w + ("*" if n > 1 else "") for w, n in zip(result.words, result.num_tokens or [1] * len(result.words),
                                                          strict=True)]  # fmt: skip
    if any(label.endswith("*") for label in labels):
        fig.text(0.01, 0.01, "* several tokens: the mean of their embeddings", fontsize=7, color="dimgrey")
    _place_labels(ax, result.coords, labels, [color_of[g] for g in result.groups])
    return save_figure(fig, path, tight=False)  # laid out before the labels were placed


__all__ = [
    "GENDER_PAIRS",
    "AnalogyResult",
    "NeighboursResult",
    "ParallelismResult",
    "WordMap",
    "analogy",
    "candidate_words",
    "nearest_neighbours",
    "parallelism_score",
    "plot_word_map",
    "word_map",
    "word_vector",
]
