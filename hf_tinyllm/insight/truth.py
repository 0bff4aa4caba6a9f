"""The truth beside the model: TinyWorld's generator knows the probability of every choice, so after any TinyWorld
prefix the exact distribution of the next word is computable, and so is what a model has left to learn there.

A word is what lies between spaces ("paris." keeps its full stop); after a whole sentence the document may also end
(`END`). Given a prefix, the generator's choices so far (the family, the number of sentences, the royal subject, the
sentences) are weighed by Bayes' rule over its enumerated sentence tables (`TinyWorld.enumerate_sentences`), and the
sentences that continue the unfinished one give the next word's probabilities:

    truth = TinyWorldTruth(TinyWorld())
    truth.next_word("the capital of france is")          # {"paris.": 1.0}
    truth.next_word("the king fed his")                  # dog., cat., horse., goat.: 1/4 each
    truth.along("the queen ate bread in the morning.")   # per word: the true conditional entropy and surprise

A model's probability of a word is its tokens' probabilities in turn, times the probability that the word ends
there (the next token starts a new word, or ends the document); `gap_bits` is the KL divergence from the truth to the
model, in bits: 0 for a model that has learned everything there is to learn at that position.
"""

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..data.tinyworld import NOUN_PAIRS, TinyWorld, TinyWorldConfig
from ..model_card import SUMMARY_FILE
from .model_parts import InsightError, check_ids, eval_mode

END = "<end of document>"  # the event "the document ends here", after a whole sentence
# How a vocabulary writes a token that begins with a space: byte-level BPE's "Ġ", SentencePiece's "▁", or a space.
WORD_START_MARKS = ("\u0120", "\u2581", " ")
BATCH = 256  # sequences per forward pass when scoring words


@dataclass
class TrueNextWord:
    """The generator's exact distribution of the next word after `prefix` (most likely first)."""

    prefix: str
    words: list[str]
    probabilities: list[float]
    entropy_bits: float
    families: dict[str, float] = field(default_factory=dict)  # the posterior over the document's family

    def probability(self, word: str) -> float:
        return dict(zip(self.words, self.probabilities, strict=True)).get(word, 0.0)


@dataclass
class PositionTruth:
    """One word of a text: the truth before it, and how surprising the word is to the generator."""

    index: int  # the word's position in the text (len(words) for the end of the document)
    word: str  # the word that follows (END at the end)
    entropy_bits: float  # the true conditional entropy there: what no model can avoid
    surprise_bits: float  # -log2 p_true(word): this text's own information there


def split_words(text: str) -> list[str]:
    return text.split()


class TinyWorldTruth:
    """Exact next-word distributions of one TinyWorld configuration."""

    def __init__(self, world: TinyWorld | None = None) -> None:
        self.world = world if world is not None else TinyWorld()
        counts = self.world.sentence_counts
        self._p_count = {n: 1.0 / len(counts) for n in counts}
        self._table = cache(self._sentence_table)

    def _sentence_table(self, family: str, state: str | None, first: bool) -> dict[tuple[str, ...], float]:
        """Every sentence (as words) of `family` given the document's state and whether it opens the document."""
        table: dict[tuple[str, ...], float] = {}
        for sentence, probability in self.world.enumerate_sentences(family, state, first):
            words = tuple(split_words(sentence))
            table[words] = table.get(words, 0.0) + probability
        return table

    def _documents_so_far(self, sentences: list[tuple[str, ...]]) -> Iterator[tuple[str, str | None, float]]:
        """(family, state, p(family, state, these whole sentences)) for every pair that can have written them."""
        for family, family_probability in zip(self.world.families, self.world.family_probs, strict=True):
            states = self.world.states(family)
            for state in states:
                weight = family_probability / len(states)
                for i, sentence in enumerate(sentences):
                    weight *= self._table(family, state, i == 0).get(sentence, 0.0)
                    if weight == 0.0:
                        break
                if weight > 0.0:
                    yield family, state, weight

    def _more_than(self, k: int) -> float:
        return math.fsum(p for n, p in self._p_count.items() if n > k)

    def next_word(self, prefix: str) -> TrueNextWord:
        """The exact distribution of the word after `prefix` (a document's beginning, whole words)."""
        words = split_words(prefix)
        sentences, partial = [], []
        for word in words:
            partial.append(word)
            if word.endswith("."):
                sentences.append(tuple(partial))
                partial = []
        k = len(sentences)
        mass: dict[str, float] = {}
        families: dict[str, float] = {}

        def add(word: str, family: str, p: float) -> None:
            mass[word] = mass.get(word, 0.0) + p
            families[family] = families.get(family, 0.0) + p

        for family, state, weight in self._documents_so_far(sentences):
            if not partial and k and (end := weight * self._p_count.get(k, 0.0)) > 0:
                add(END, family, end)
            going_on = weight * self._more_than(k)
            if going_on == 0.0:
                continue
            start = tuple(partial)
            for sentence, p in self._table(family, state, k == 0).items():
                if len(sentence) > len(start) and sentence[: len(start)] == start:
                    add(sentence[len(start)], family, going_on * p)
        total = math.fsum(mass.values())
        if total == 0.0:
            raise InsightError(f"{prefix!r} cannot begin a TinyWorld document of this configuration; give a prefix "
                               "of a TinyWorld text, e.g. 'the capital of france is'.")  # fmt: skip
        ranked = sorted(mass.items(), key=lambda item: (-item[1], item[0]))
        probabilities = [p / total for _, p in ranked]
        entropy = -math.fsum(p * math.log2(p) for p in probabilities if p > 0)
        return TrueNextWord(prefix, [w for w, _ in ranked], probabilities, max(0.0, entropy),
                            {f: p / total for f, p in sorted(families.items(), key=lambda item: -item[1])})  # fmt: skip

    def along(self, text: str, end: bool = True) -> list[PositionTruth]:
        """For every word of the TinyWorld document `text` (and its end, with `end`): the true conditional entropy
        and the word's true surprise. Over a whole document the surprises sum to -log2 p(document)."""
        words = split_words(text)
        positions = []
        for i, word in enumerate([*words, END] if end else words):
            truth = self.next_word(" ".join(words[:i]))
            p = truth.probability(word)
            if p == 0.0:
                raise InsightError(f"{word!r} cannot follow {' '.join(words[:i])!r} in TinyWorld; give a TinyWorld "
                                   "text.")  # fmt: skip
            positions.append(PositionTruth(i, word, truth.entropy_bits, -math.log2(p)))
        return positions


@dataclass
class FamilyFloor:
    """One family's share of the corpus floor: its documents' exact entropy and length, given the family."""

    family: str
    probability: float
    entropy_bits_per_document: float
    bytes_per_document: float
    floor_bits_per_byte: float  # entropy over bytes, given the family
    byte_share: float  # probability x bytes over the corpus's expected bytes per document


def family_floors(world: TinyWorld) -> dict[str, FamilyFloor]:
    """Each family's exact floor. The corpus floor is the family choice's entropy per byte plus these floors weighted
    by their byte shares: H / B = (H(family) + sum_f p_f H_f) / B, with B = sum_f p_f B_f."""
    corpus_bytes = world.expected_bytes_per_document()
    floors = {}
    for family, probability in zip(world.families, world.family_probs, strict=True):
        alone = TinyWorld(replace(world.config, family_weights={family: 1.0}))
        entropy, length = alone.entropy_bits_per_document(), alone.expected_bytes_per_document()
        floors[family] = FamilyFloor(family, probability, entropy, length, entropy / length,
                                     probability * length / corpus_bytes)  # fmt: skip
    return floors


def world_of(folder: str | Path | None) -> tuple[TinyWorld, str]:
    """The TinyWorld a model folder's run trained on (its family mix, from the training summary) and a line saying
    so; the default TinyWorld when the folder does not record one."""
    summary = Path(folder) / SUMMARY_FILE if folder is not None else None
    if summary is not None and summary.is_file():
        hyperparameters = json.loads(summary.read_text()).get("hyperparameters", {})
        if hyperparameters.get("dataset") == "tinyworld" and hyperparameters.get("tinyworld_weights"):
            weights = json.loads(hyperparameters["tinyworld_weights"])
            return TinyWorld(TinyWorldConfig(family_weights=weights)), f"TinyWorld with the run's mix {weights}"
    default = TinyWorldConfig().family_weights
    return TinyWorld(), f"TinyWorld's default mix {default} (the model folder does not record its run's mix)"


def gap_bits(truth: TrueNextWord, model_probability: Callable[[str], float]) -> float:
    """KL(truth || model) in bits: the model's expected surprise beyond the truth's entropy at this position. A model
    that gives a word of the truth probability 0 is infinitely far (inf)."""
    gap = 0.0
    for word, p in zip(truth.words, truth.probabilities, strict=True):
        q = model_probability(word)
        if q <= 0.0:
            return math.inf
        gap += p * math.log2(p / q)
    return max(gap, 0.0)


class ModelWords:
    """A causal LM's probability of the next word after a prefix: the word's tokens in turn (after a space, or first
    in the document), times the probability that the word ends there: that the next token starts a new word (begins
    with a space) or ends the document. `END` is the end-of-document token."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        if tokenizer.eos_token_id is None:
            raise InsightError("the tokenizer has no end-of-text token, so a document's end has no probability.")
        self.model, self.tokenizer = model, tokenizer
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        spaced = [i for i, piece in enumerate(pieces) if piece and piece.startswith(WORD_START_MARKS)]
        self._starts_a_word = torch.zeros(model.config.get_text_config().vocab_size, dtype=torch.bool)
        self._starts_a_word[[i for i in spaced if i < self._starts_a_word.numel()]] = True
        self._starts_a_word[tokenizer.eos_token_id] = True

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    def probabilities(self, prefix: str, words: list[str]) -> dict[str, float]:
        """q(word | prefix) for each of `words` (one batched forward pass)."""
        return self.probabilities_after([(prefix, words)])[0]

    def probabilities_after(self, requests: list[tuple[str, list[str]]]) -> list[dict[str, float]]:
        """`probabilities` for several (prefix, words) at once, in batches of `BATCH` sequences."""
        rows = []
        for index, (prefix, words) in enumerate(requests):
            prefix_ids = self._prefix_ids(prefix)
            rows += [(index, word, *self._sequence(prefix, prefix_ids, word)) for word in words]
        results: list[dict[str, float]] = [{} for _ in requests]
        for first in range(0, len(rows), BATCH):
            chunk = rows[first : first + BATCH]
            logp = self._log_probabilities([ids for _, _, ids, _ in chunk])
            for row, (index, word, ids, start) in enumerate(chunk):
                if word == END:
                    results[index][word] = float(logp[row, start - 1, self.tokenizer.eos_token_id].exp())
                    continue
                total = sum(float(logp[row, t - 1, ids[t]]) for t in range(start, len(ids)))
                ends = float(logp[row, len(ids) - 1].exp()[self._starts_a_word[: logp.shape[-1]]].sum())
                results[index][word] = math.exp(total) * ends
        return results

    def _prefix_ids(self, prefix: str) -> list[int]:
        prefix_ids = self._ids(prefix)
        if not prefix_ids:
            raise InsightError("the tokenizer adds no beginning-of-text token, so a document's first word has no "
                               "context to be predicted from; give a prefix.")  # fmt: skip
        return prefix_ids

    def _sequence(self, prefix: str, prefix_ids: list[int], word: str) -> tuple[list[int], int]:
        """The token ids of `prefix` (`prefix_ids`) followed by `word` (the prefix alone for `END`) and where the
        word starts."""
        if word == END:
            return prefix_ids, len(prefix_ids)
        ids = self._ids(f"{prefix} {word}" if prefix else word)
        if ids[: len(prefix_ids)] != prefix_ids:  # a pre-tokeniser that merges across the word boundary
            raise InsightError(f"the tokenizer does not keep {prefix!r}'s tokens when {word!r} follows; word "
                               "probabilities need a tokenizer that splits at spaces.")  # fmt: skip
        return ids, len(prefix_ids)

    def _log_probabilities(self, sequences: list[list[int]]) -> torch.Tensor:
        width = max(len(ids) for ids in sequences)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch = torch.tensor([ids + [pad] * (width - len(ids)) for ids in sequences])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in sequences])
        check_ids(self.model, batch)
        with eval_mode(self.model), torch.no_grad():
            return self.model(input_ids=batch.to(self.model.device), attention_mask=mask.to(self.model.device),
                              use_cache=False).logits.float().log_softmax(-1).cpu()  # fmt: skip


POSITION_KINDS = ("boundary", "choice", "answer", "capital", "agreement", "fixed")
AGREEING_WORDS = frozenset({"he", "she", "his", "her"} | {noun for pair in NOUN_PAIRS for noun in pair})


def position_kind(family: str, words: list[str], index: int, entropy_bits: float) -> str:
    """What decides the word at `index` of a document's `words` (`len(words)`: its end):
    boundary: the end of the document or a sentence's first word (how many sentences, and what comes next);
    answer: an arithmetic answer (after "equals"); capital: a country's capital (after "is");
    agreement: a pronoun, possessive or partner that agrees with the story's subject (royalty);
    choice: any other free choice of the generator (a template, a slot, an operand); fixed: a word nothing else
    could replace."""
    if index == len(words) or index == 0 or words[index - 1].endswith("."):
        return "boundary"
    sentence = " ".join(words[:index]).rsplit(".", 1)[-1].split()
    if family == "arithmetic" and "equals" in sentence:
        return "answer"
    if family == "facts" and "is" in sentence:
        return "capital"
    if family == "royalty" and index > 1 and words[index].rstrip(".") in AGREEING_WORDS:
        return "agreement"
    return "choice" if entropy_bits > 1e-9 else "fixed"


def families_in_turn(documents: list[dict], count: int) -> list[dict]:
    """`count` of `documents` taking each family in turn (its first document, then its second, ...), in the order the
    families first appear: a few documents still show every family's gap."""
    by_family: dict[str, list[dict]] = {}
    for document in documents:
        by_family.setdefault(document["family"], []).append(document)
    chosen: list[dict] = []
    for rank in range(max((len(group) for group in by_family.values()), default=0)):
        chosen += [group[rank] for group in by_family.values() if rank < len(group)]
    return chosen[:count]


class TruthProbe:
    """Per family and per kind of position, on a fixed set of TinyWorld documents: the exact floor (the true
    conditional entropy, bits per word) and how far a model is above it (the KL gap, bits per word). The truth is
    computed once; `measure` scores the model on every word the truth allows at every position."""

    def __init__(self, truth: TinyWorldTruth, documents: list[dict]) -> None:
        self.truth = truth
        self.positions: list[tuple[str, TrueNextWord, tuple[str, str]]] = []  # prefix, truth, (family, kind)
        for document in documents:
            words = split_words(document["text"])
            for index in range(len(words) + 1):
                exact = truth.next_word(" ".join(words[:index]))
                kind = position_kind(document["family"], words, index, exact.entropy_bits)
                self.positions.append((" ".join(words[:index]), exact, (document["family"], kind)))
        self._floors = self._by_group("floor_bits", [exact.entropy_bits for _, exact, _ in self.positions])

    def floors(self) -> dict[str, float]:
        """The mean true conditional entropy per word, per family and per kind (`floor_bits_<name>`)."""
        return dict(self._floors)

    def measure(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict[str, float]:
        """`gap_bits_<family>` and `gap_bits_<kind>`: the model's mean KL to the truth per word there, `gap_bits`
        over every position; and the floors."""
        requests = [(prefix, exact.words) for prefix, exact, _ in self.positions]
        scores = ModelWords(model, tokenizer).probabilities_after(requests)
        gaps = [gap_bits(exact, q.__getitem__) for (_, exact, _), q in zip(self.positions, scores, strict=True)]
        return {**self._by_group("gap_bits", gaps), **self.floors()}

    def _by_group(self, name: str, values: list[float]) -> dict[str, float]:
        """The mean of `values` over every position (`name`) and per family and kind (`name_<group>`)."""
        groups: dict[str, list[float]] = {name: list(values)}
        for (_, _, names), value in zip(self.positions, values, strict=True):
            for group in names:
                groups.setdefault(f"{name}_{group}", []).append(value)
        return {key: math.fsum(v) / len(v) for key, v in groups.items()}


@dataclass
class NextWordComparison:
    """The truth and a model side by side after one prefix."""

    truth: TrueNextWord
    model_probabilities: list[float]  # the model's q for each of truth.words, in order
    gap_bits: float  # KL(truth || model)


@dataclass
class WordComparison:
    """One word of a text: the truth there and the model's surprise."""

    word: str
    entropy_bits: float  # the true conditional entropy: what no model can avoid
    true_surprise_bits: float  # -log2 p_true(word)
    model_surprise_bits: float  # -log2 q(word)
    gap_bits: float  # KL(truth || model) at this position: what the model has left to learn here


def compare_along(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, truth: TinyWorldTruth | None = None
) -> list[WordComparison]:
    """Word by word along a TinyWorld text (a document or its beginning): the truth and the model side by side."""
    truth = truth if truth is not None else TinyWorldTruth()
    words = split_words(text)
    prefixes = [" ".join(words[:i]) for i in range(len(words))]
    truths = [truth.next_word(prefix) for prefix in prefixes]
    for prefix, word, exact in zip(prefixes, words, truths, strict=True):
        if exact.probability(word) == 0.0:
            raise InsightError(f"{word!r} cannot follow {prefix!r} in TinyWorld; give a TinyWorld text.")
    scores = ModelWords(model, tokenizer).probabilities_after(
        [(prefix, exact.words) for prefix, exact in zip(prefixes, truths, strict=True)]
    )  # every position in one batch
    return [WordComparison(word, exact.entropy_bits, -math.log2(exact.probability(word)),
                           -math.log2(q[word]) if q[word] > 0 else math.inf, gap_bits(exact, q.__getitem__))
            for word, exact, q in zip(words, truths, scores, strict=True)]  # fmt: skip


def compare_next_word(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prefix: str, truth: TinyWorldTruth | None = None
) -> NextWordComparison:
    """The generator's exact next-word distribution after `prefix` beside the model's, and the gap in bits."""
    truth = truth if truth is not None else TinyWorldTruth()
    exact = truth.next_word(prefix)
    q = ModelWords(model, tokenizer).probabilities(prefix.strip(), exact.words)
    return NextWordComparison(exact, [q[w] for w in exact.words], gap_bits(exact, q.__getitem__))


__all__ = [
    "END",
    "POSITION_KINDS",
    "FamilyFloor",
    "ModelWords",
    "NextWordComparison",
    "PositionTruth",
    "TinyWorldTruth",
    "TrueNextWord",
    "TruthProbe",
    "WordComparison",
    "compare_along",
    "compare_next_word",
    "families_in_turn",
    "family_floors",
    "gap_bits",
    "position_kind",
    "world_of",
]
