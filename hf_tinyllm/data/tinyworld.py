"""TinyWorld: the embedded default corpus, a seeded generator of short English documents with exact entropy.

Conventions
-----------
* Text is lowercase ASCII; words are separated by single spaces; every sentence ends with "." and sentences of a
  document are joined by one space. No "." occurs anywhere else, so a document splits uniquely into sentences.
* A document comes from one family, drawn with ``family_weights`` (normalised): ``royalty`` (gender-parallel
  stories about king/queen, prince/princess, man/woman, boy/girl, father/mother, husband/wife), ``arithmetic``
  ("three plus four equals seven."), ``facts`` ("the capital of france is paris.") or ``sayings``. Its number of
  sentences n is uniform in [min_sentences, max_sentences], for every family.
* Royalty: a subject noun is drawn once per document; the first sentence says "the {noun} ...", later ones use
  he/she, his/her and the opposite-gender partner of the pair. Male and female nouns share the same templates,
  royals add templates about the palace and the kingdom, commoners the parallel ones about the market and the village.
* The generator is a probabilistic program over a chooser: ``Chooser.choose(options, probs)`` is its only source of
  randomness, and agreements (pronouns, partner, the answer of a sum) are not choices. Every text has exactly one
  derivation (tested), so ``nll_bits = -log2 p(document)`` is the sum of -log2 p over its choices.
* Arithmetic held-out set: for each configured operation, round(heldout_fraction * #problems) problems (a, b) are
  drawn with ``heldout_seed`` alone (not the corpus seed), so every seed and split agree on it. They are removed from
  the arithmetic distribution (so the floor stays exact for validation) and exposed by ``heldout_problems()``.
  Operands run 0..max_operand for plus and minus (minus only when a >= b) and 0..max_factor for times.
* Bytes: documents are separated by one end-of-text token counted as ONE byte: ``num_bytes = len(utf8(text)) + 1``.
* Floor: documents are i.i.d., so the entropy rate of the separated stream is ``H / B`` bits per byte, with
  H = E[-log2 p(doc)] and B = E[num_bytes], both computed in closed form from the configuration; no model can do
  better on held-out text. The tests check the closed form against brute-force enumeration of small configurations.
"""

from __future__ import annotations

import json
import math
import random
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TypeVar

import datasets

T = TypeVar("T")

FAMILIES = ("royalty", "arithmetic", "facts", "sayings")
OPERATIONS = ("plus", "minus", "times")
SPLITS = ("train", "validation")

# Ordered so that a vocabulary_limit of 2 keeps one royal and one commoner pair.
NOUN_PAIRS = (
    ("king", "queen"),
    ("man", "woman"),
    ("prince", "princess"),
    ("boy", "girl"),
    ("father", "mother"),
    ("husband", "wife"),
)
ROYAL_NOUNS = frozenset({"king", "queen", "prince", "princess"})
PRONOUNS = (("he", "his"), ("she", "her"))  # indexed by position in the pair: male, female

SLOTS = {
    "time": ("in the morning", "in the evening", "at night", "every day", "on sunday"),
    "food": ("bread", "apples", "soup", "cheese", "fish", "honey"),
    "feeling": ("happy", "sad", "tired", "proud", "calm", "brave"),
    "animal": ("dog", "cat", "horse", "goat"),
    "adverb": ("wisely", "kindly", "bravely", "fairly", "quietly"),
    "gift": ("gold", "flowers", "coins", "wine"),
}
# Agreement fields: {subj} is "the {noun}" in the first sentence and the pronoun later; not random choices.
AGREEMENT_FIELDS = frozenset({"subj", "poss", "partner"})
SHARED_TEMPLATES = (
    "{subj} ate {food} {time}.",
    "{subj} felt {feeling} {time}.",
    "{subj} fed {poss} {animal}.",
    "{subj} smiled at the {partner}.",
)
ROYAL_TEMPLATES = (
    "{subj} ruled the kingdom {adverb}.",
    "{subj} wore {poss} golden crown {time}.",
    "{subj} walked to the palace with the {partner}.",
    "{subj} gave {gift} to the people of the kingdom.",
)
COMMONER_TEMPLATES = (
    "{subj} worked in the fields {adverb}.",
    "{subj} wore {poss} old hat {time}.",
    "{subj} walked to the market with the {partner}.",
    "{subj} gave {gift} to the people of the village.",
)
CAPITALS = (
    ("france", "paris"),
    ("germany", "berlin"),
    ("italy", "rome"),
    ("spain", "madrid"),
    ("portugal", "lisbon"),
    ("united kingdom", "london"),
    ("ireland", "dublin"),
    ("norway", "oslo"),
    ("sweden", "stockholm"),
    ("finland", "helsinki"),
    ("denmark", "copenhagen"),
    ("poland", "warsaw"),
    ("greece", "athens"),
    ("austria", "vienna"),
    ("hungary", "budapest"),
    ("egypt", "cairo"),
    ("kenya", "nairobi"),
    ("nigeria", "abuja"),
    ("japan", "tokyo"),
    ("china", "beijing"),
    ("india", "new delhi"),
    ("thailand", "bangkok"),
    ("vietnam", "hanoi"),
    ("russia", "moscow"),
    ("turkey", "ankara"),
    ("canada", "ottawa"),
    ("mexico", "mexico city"),
    ("peru", "lima"),
    ("argentina", "buenos aires"),
    ("australia", "canberra"),
)
SAYINGS = (
    "a stitch in time saves nine.",
    "actions speak louder than words.",
    "all that glitters is not gold.",
    "better late than never.",
    "every cloud has a silver lining.",
    "look before you leap.",
    "practice makes perfect.",
    "an apple a day keeps the doctor away.",
)

_ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
MAX_NUMBER = 999


def number_to_words(n: int) -> str:
    """English words for 0..999 without hyphens or "and": 21 -> "twenty one", 144 -> "one hundred forty four"."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"number_to_words expects an int, got {type(n).__name__}")
    if not 0 <= n <= MAX_NUMBER:
        raise ValueError(f"number_to_words covers 0..{MAX_NUMBER}, got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")


def _apply(op: str, a: int, b: int) -> int:
    return {"plus": a + b, "minus": a - b, "times": a * b}[op]


def _arithmetic_prompt(op: str, a: int, b: int) -> str:
    return f"{number_to_words(a)} {op} {number_to_words(b)} equals"


def _arithmetic_sentence(op: str, a: int, b: int) -> str:
    return f"{_arithmetic_prompt(op, a, b)} {number_to_words(_apply(op, a, b))}."


def template_slots(template: str) -> tuple[str, ...]:
    """The free slots of a royalty template (names of SLOTS), in order; the agreement fields are left out."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name]
    return tuple(name for name in names if name not in AGREEMENT_FIELDS)


def agreement(noun: str, first: bool) -> dict[str, str]:
    """The agreement fields of a royalty sentence about `noun`: its subject ("the king" in the document's first
    sentence, the pronoun after), the possessive and the partner of the other gender."""
    pair = next(pair for pair in NOUN_PAIRS if noun in pair)
    gender = pair.index(noun)
    pronoun, possessive = PRONOUNS[gender]
    return {"subj": f"the {noun}" if first else pronoun, "poss": possessive, "partner": pair[1 - gender]}


def _entropy(probs: Sequence[float]) -> float:
    return -math.fsum(p * math.log2(p) for p in probs if p > 0)


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


class Chooser:
    """The single source of randomness of a program; accumulates ``nll_bits`` = sum of -log2 p over its choices."""

    def __init__(self) -> None:
        self.nll_bits = 0.0

    def choose(self, options: Sequence[T], probs: Sequence[float] | None = None) -> T:
        """Pick one of ``options`` with probabilities ``probs`` (uniform when None; every p must be > 0)."""
        index = self._pick(len(options), probs)
        self.nll_bits += math.log2(len(options)) if probs is None else -math.log2(probs[index])
        return options[index]

    def _pick(self, n: int, probs: Sequence[float] | None) -> int:
        raise NotImplementedError


class SamplingChooser(Chooser):
    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def _pick(self, n: int, probs: Sequence[float] | None) -> int:
        if probs is None:
            return self.rng.randrange(n)
        u, cumulative = self.rng.random(), 0.0
        for index, p in enumerate(probs):
            cumulative += p
            if u < cumulative:
                return index
        return max(i for i, p in enumerate(probs) if p > 0)  # u fell in the float rounding gap below 1


class EnumeratingChooser(Chooser):
    """Replays a scripted prefix of choice indices, then takes index 0; records the path and the option counts."""

    def __init__(self, script: Sequence[int]) -> None:
        super().__init__()
        self.script = script
        self.path: list[int] = []
        self.widths: list[int] = []
        self.probability = 1.0

    def _pick(self, n: int, probs: Sequence[float] | None) -> int:
        index = self.script[len(self.path)] if len(self.path) < len(self.script) else 0
        self.path.append(index)
        self.widths.append(n)
        self.probability *= 1.0 / n if probs is None else probs[index]
        return index


def enumerate_derivations(program: Callable[[Chooser], T]) -> Iterator[tuple[T, float]]:
    """Every (result, probability) of ``program`` by depth-first search over its choice sequences."""
    script: list[int] = []
    while True:
        chooser = EnumeratingChooser(script)
        result = program(chooser)
        yield result, chooser.probability
        depth = len(chooser.path) - 1
        while depth >= 0 and chooser.path[depth] + 1 >= chooser.widths[depth]:
            depth -= 1
        if depth < 0:
            return
        script = [*chooser.path[:depth], chooser.path[depth] + 1]


@dataclass
class TinyWorldConfig:
    seed: int = 0
    num_train_documents: int = 40_000
    num_validation_documents: int = 2_000
    family_weights: dict[str, float] = field(
        default_factory=lambda: {"royalty": 0.35, "arithmetic": 0.35, "facts": 0.2, "sayings": 0.1}
    )
    min_sentences: int = 1
    max_sentences: int = 4
    operations: tuple[str, ...] = ("plus", "minus", "times")
    max_operand: int = 20
    max_factor: int = 12
    heldout_fraction: float = 0.1
    heldout_seed: int = 1234
    # Keep only the first k entries of each word list (noun pairs, slot fillers, countries, sayings); for tests.
    vocabulary_limit: int | None = None


@dataclass(frozen=True)
class TinyWorldDocument:
    text: str
    nll_bits: float
    family: str
    num_bytes: int


@dataclass(frozen=True)
class ArithmeticProblem:
    op: str
    a: int
    b: int
    prompt: str
    answer: str
    text: str


def _validate(config: TinyWorldConfig) -> None:
    def check(ok: bool, name: str, message: str) -> None:
        if not ok:
            raise ValueError(f"TinyWorldConfig.{name}: {message}")

    weights = config.family_weights
    unknown = sorted(set(weights) - set(FAMILIES))
    check(not unknown, "family_weights", f"unknown families {unknown}; use keys among {list(FAMILIES)}")
    check(
        all(math.isfinite(w) and w >= 0 for w in weights.values()),
        "family_weights",
        f"weights must be finite and >= 0, got {weights}",
    )
    check(sum(weights.values()) > 0, "family_weights", "all weights are zero; give at least one family a weight > 0")
    for name in ("num_train_documents", "num_validation_documents"):
        check(getattr(config, name) >= 0, name, f"must be >= 0, got {getattr(config, name)}")
    check(config.min_sentences >= 1, "min_sentences", f"must be >= 1, got {config.min_sentences}")
    check(
        config.max_sentences >= config.min_sentences,
        "min_sentences",
        f"min_sentences={config.min_sentences} > max_sentences={config.max_sentences}; lower it or raise max_sentences",
    )
    unknown_ops = [op for op in config.operations if op not in OPERATIONS]
    check(not unknown_ops, "operations", f"unknown operations {unknown_ops}; use a subset of {list(OPERATIONS)}")
    check(
        len(config.operations) > 0 and len(set(config.operations)) == len(config.operations),
        "operations",
        f"must be a non-empty tuple without repeats, got {config.operations}",
    )
    check(
        0 <= 2 * config.max_operand <= MAX_NUMBER,
        "max_operand",
        f"must be in 0..{MAX_NUMBER // 2} (sums must stay within number_to_words' 0..{MAX_NUMBER}), "
        f"got {config.max_operand}",
    )
    check(
        config.max_factor >= 0 and config.max_factor**2 <= MAX_NUMBER,
        "max_factor",
        f"must be in 0..{math.isqrt(MAX_NUMBER)} (products must stay within 0..{MAX_NUMBER}), got {config.max_factor}",
    )
    check(
        0 <= config.heldout_fraction < 1,
        "heldout_fraction",
        f"must be in [0, 1), got {config.heldout_fraction}",
    )
    check(
        config.vocabulary_limit is None or config.vocabulary_limit >= 1,
        "vocabulary_limit",
        f"must be None or >= 1, got {config.vocabulary_limit}",
    )


class TinyWorld:
    """The TinyWorld document distribution of one configuration: sampling, exact entropy, enumeration."""

    def __init__(self, config: TinyWorldConfig | None = None) -> None:
        self.config = config = config if config is not None else TinyWorldConfig()
        _validate(config)
        limit = config.vocabulary_limit

        def cut(items: Sequence[T]) -> tuple[T, ...]:
            return tuple(items[:limit]) if limit is not None else tuple(items)

        weights = {f: float(config.family_weights.get(f, 0.0)) for f in FAMILIES}
        self.families = tuple(f for f in FAMILIES if weights[f] > 0)
        self.family_probs = tuple(weights[f] / math.fsum(weights.values()) for f in self.families)
        self.sentence_counts = tuple(range(config.min_sentences, config.max_sentences + 1))
        self.nouns = tuple(noun for pair in cut(NOUN_PAIRS) for noun in pair)
        self.slots = {name: cut(options) for name, options in SLOTS.items()}
        self.capitals = cut(CAPITALS)
        self.sayings = cut(SAYINGS)
        self._heldout = self._draw_heldout()
        heldout = {(p.op, p.a, p.b) for p in self._heldout}
        self.problems = {
            op: tuple((a, b) for a, b in self._all_problems(op) if (op, a, b) not in heldout)
            for op in config.operations
        }
        if "arithmetic" in self.families:
            empty = [op for op, allowed in self.problems.items() if not allowed]
            if empty:
                raise ValueError(
                    f"TinyWorldConfig.heldout_fraction: {config.heldout_fraction} holds out every {empty} problem; "
                    "lower it or raise max_operand/max_factor"
                )
        self._documents: dict[str, list[TinyWorldDocument]] = {}

    # -- the probabilistic program -------------------------------------------------------------------------------

    def _all_problems(self, op: str) -> list[tuple[int, int]]:
        top = self.config.max_factor if op == "times" else self.config.max_operand
        return [(a, b) for a in range(top + 1) for b in range(top + 1) if op != "minus" or a >= b]

    def _draw_heldout(self) -> list[ArithmeticProblem]:
        problems = []
        for op in self.config.operations:
            candidates = self._all_problems(op)
            rng = random.Random(f"tinyworld-heldout:{self.config.heldout_seed}:{op}")
            chosen = rng.sample(candidates, round(self.config.heldout_fraction * len(candidates)))
            for a, b in sorted(chosen):
                prompt, answer = _arithmetic_prompt(op, a, b), number_to_words(_apply(op, a, b))
                problems.append(ArithmeticProblem(op, a, b, prompt, answer, f"{prompt} {answer}."))
        return problems

    def _templates(self, noun: str) -> tuple[str, ...]:
        return SHARED_TEMPLATES + (ROYAL_TEMPLATES if noun in ROYAL_NOUNS else COMMONER_TEMPLATES)

    def states(self, family: str) -> tuple:
        """The per-document states of a family (royalty: its subject nouns, uniform); (None,) for the others."""
        return self.nouns if family == "royalty" else (None,)

    def _state(self, chooser: Chooser, family: str) -> str | None:
        return chooser.choose(self.nouns) if family == "royalty" else None

    def _sentence(self, chooser: Chooser, family: str, state: str | None, first: bool) -> str:
        if family == "royalty":
            template = chooser.choose(self._templates(state))
            fills = {name: chooser.choose(self.slots[name]) for name in template_slots(template)}
            return template.format(**agreement(state, first), **fills)
        if family == "arithmetic":
            op = chooser.choose(self.config.operations)
            return _arithmetic_sentence(op, *chooser.choose(self.problems[op]))
        if family == "facts":
            country, capital = chooser.choose(self.capitals)
            return f"the capital of {country} is {capital}."
        return chooser.choose(self.sayings)

    def _document(self, chooser: Chooser) -> tuple[str, str]:
        family = chooser.choose(self.families, self.family_probs)
        n = chooser.choose(self.sentence_counts)
        state = self._state(chooser, family)
        return " ".join(self._sentence(chooser, family, state, i == 0) for i in range(n)), family

    def sample_document(self, rng: random.Random) -> TinyWorldDocument:
        chooser = SamplingChooser(rng)
        text, family = self._document(chooser)
        return TinyWorldDocument(text, chooser.nll_bits, family, len(text.encode("utf-8")) + 1)

    def documents(self, split: str) -> list[TinyWorldDocument]:
        """The split's documents: "train" draws from Random(seed), "validation" from an independent derived seed."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {list(SPLITS)}")
        if split not in self._documents:
            seed = self.config.seed if split == "train" else f"tinyworld-validation:{self.config.seed}"
            count = getattr(self.config, f"num_{split}_documents")
            rng = random.Random(seed)
            self._documents[split] = [self.sample_document(rng) for _ in range(count)]
        return self._documents[split]

    def heldout_problems(self) -> list[ArithmeticProblem]:
        return list(self._heldout)

    def trained_problems(self, count: int | None = None, seed: int = 0) -> list[ArithmeticProblem]:
        """Arithmetic problems whose sentence occurs in the training documents (what a model can have memorised),
        in a fixed order; a seeded sample of `count` of them when given. The counterpart of `heldout_problems`."""
        sentences = {part.strip() for doc in self.documents("train") if doc.family == "arithmetic"
                     for part in doc.text.split(".")}  # fmt: skip
        problems = []
        for op, pairs in self.problems.items():
            for a, b in pairs:
                prompt, answer = _arithmetic_prompt(op, a, b), number_to_words(_apply(op, a, b))
                if f"{prompt} {answer}" in sentences:
                    problems.append(ArithmeticProblem(op, a, b, prompt, answer, f"{prompt} {answer}."))
        if count is not None and count < len(problems):
            problems = sorted(random.Random(f"tinyworld-trained:{seed}").sample(problems, count), key=problems.index)
        return problems

    # -- exact information content ------------------------------------------------------------------------------

    def sentence_stats(self, family: str, state: str | None, first: bool) -> tuple[float, float, int]:
        """(entropy in bits, expected length in bytes, number of derivations) of one sentence, in closed form."""
        if family == "royalty":
            entropies, lengths, counts = [], [], []
            for template in self._templates(state):
                slots = [self.slots[name] for name in template_slots(template)]
                fixed = template.format(**agreement(state, first), **dict.fromkeys(template_slots(template), ""))
                entropies.append(math.fsum(math.log2(len(options)) for options in slots))
                lengths.append(len(fixed) + math.fsum(_mean([len(o) for o in options]) for options in slots))
                counts.append(math.prod(len(options) for options in slots))
            return math.log2(len(entropies)) + _mean(entropies), _mean(lengths), sum(counts)
        if family == "arithmetic":
            ops = self.config.operations
            entropy = math.log2(len(ops)) + _mean([math.log2(len(self.problems[op])) for op in ops])
            lengths = [_mean([len(_arithmetic_sentence(op, a, b)) for a, b in self.problems[op]]) for op in ops]
            return entropy, _mean(lengths), sum(len(self.problems[op]) for op in ops)
        sentences = (
            [f"the capital of {c} is {k}." for c, k in self.capitals] if family == "facts" else list(self.sayings)
        )
        return math.log2(len(sentences)), _mean([len(s) for s in sentences]), len(sentences)

    def _family_expectation(self, family: str, stat: int) -> float:
        """E over states of [first sentence + (E[n] - 1) * later sentence] for one entry of sentence_stats."""
        later_sentences = _mean(self.sentence_counts) - 1
        first = [self.sentence_stats(family, s, True)[stat] for s in self.states(family)]
        later = [self.sentence_stats(family, s, False)[stat] for s in self.states(family)]
        return _mean(first) + later_sentences * _mean(later)

    def entropy_bits_per_document(self) -> float:
        """H = H(family) + H(n) + sum_f w_f (H(state | f) + E_state[H(first) + (E[n] - 1) H(later)])."""
        per_family = [math.log2(len(self.states(f))) + self._family_expectation(f, 0) for f in self.families]
        weighted = math.fsum(w * h for w, h in zip(self.family_probs, per_family, strict=True))
        return _entropy(self.family_probs) + math.log2(len(self.sentence_counts)) + weighted

    def expected_bytes_per_document(self) -> float:
        """B = E[sum of sentence lengths] + E[n] (n - 1 joining spaces plus the one-byte separator)."""
        per_family = [self._family_expectation(f, 1) for f in self.families]
        weighted = math.fsum(w * length for w, length in zip(self.family_probs, per_family, strict=True))
        return _mean(self.sentence_counts) + weighted

    def floor_bits_per_byte(self) -> float:
        return self.entropy_bits_per_document() / self.expected_bytes_per_document()

    def num_derivations(self) -> int:
        total = 0
        for family in self.families:
            for state in self.states(family):
                first, later = self.sentence_stats(family, state, True)[2], self.sentence_stats(family, state, False)[2]
                total += sum(first * later ** (n - 1) for n in self.sentence_counts)
        return total

    def enumerate_documents(self, max_derivations: int = 2_000_000) -> Iterator[tuple[str, float]]:
        """Every (text, probability) derivation of the configuration; only feasible for small configurations."""
        count = self.num_derivations()
        if count > max_derivations:
            raise ValueError(
                f"this TinyWorld configuration has {count:,} derivations, more than "
                f"max_derivations={max_derivations:,}; "
                "shrink it (vocabulary_limit, max_sentences, max_operand, max_factor) to enumerate it"
            )
        return ((text, probability) for (text, _), probability in enumerate_derivations(self._document))

    def enumerate_sentences(self, family: str, state: str | None, first: bool) -> Iterator[tuple[str, float]]:
        """Every (sentence, probability) derivation of one sentence of `family` given the document state."""
        yield from enumerate_derivations(lambda chooser: self._sentence(chooser, family, state, first))

    def summary(self) -> dict:
        """The floor and its ingredients, plus the corpus size (generates the splits if not done yet)."""
        summary = {
            "floor_bits_per_byte": self.floor_bits_per_byte(),
            "entropy_bits_per_document": self.entropy_bits_per_document(),
            "expected_bytes_per_document": self.expected_bytes_per_document(),
            "num_heldout_problems": len(self._heldout),
        }
        for split in SPLITS:
            docs = self.documents(split)
            summary[f"num_{split}_documents"] = len(docs)
            summary[f"{split}_bytes"] = sum(doc.num_bytes for doc in docs)
        summary["config"] = asdict(self.config)
        return summary


def tinyworld_floor(config: TinyWorldConfig | None = None) -> float:
    """The corpus entropy floor in bits per byte (end-of-text separator counted as one byte); no generation needed."""
    return TinyWorld(config).floor_bits_per_byte()


def tinyworld_dataset(config: TinyWorldConfig | TinyWorld | None = None) -> datasets.DatasetDict:
    """Splits "train" and "validation" (text, nll_bits, family, num_bytes) and "heldout_arithmetic"
    (op, a, b, prompt, answer, text); each split's ``info.description`` is ``TinyWorld.summary()`` as JSON. Given a
    `TinyWorld`, its already generated documents are used (and kept for the caller's other questions to it)."""
    world = config if isinstance(config, TinyWorld) else TinyWorld(config)
    description = json.dumps(world.summary())

    def build(rows: Sequence, columns: dict[str, str]) -> datasets.Dataset:
        features = datasets.Features({name: datasets.Value(dtype) for name, dtype in columns.items()})
        data = {name: [getattr(row, name) for row in rows] for name in columns}
        info = datasets.DatasetInfo(description=description, features=features)
        return datasets.Dataset.from_dict(data, features=features, info=info)

    document_columns = {"text": "string", "nll_bits": "float64", "family": "string", "num_bytes": "int64"}
    splits = {split: build(world.documents(split), document_columns) for split in SPLITS}
    problem_columns = {"op": "string", "a": "int64", "b": "int64", "prompt": "string", "answer": "string"}
    splits["heldout_arithmetic"] = build(world.heldout_problems(), {**problem_columns, "text": "string"})
    return datasets.DatasetDict(splits)


def save_tinyworld(dataset: datasets.DatasetDict, path: str | Path, format: str = "jsonl") -> Path:
    """Write one file per split, ``{path}/{split}.jsonl`` or ``{path}/{split}.parquet``; returns the folder."""
    if format not in ("jsonl", "parquet"):
        raise ValueError(f"unknown format {format!r}; use 'jsonl' or 'parquet'")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    for split, data in dataset.items():
        if format == "jsonl":
            data.to_json(folder / f"{split}.jsonl", lines=True)
        else:
            data.to_parquet(folder / f"{split}.parquet")
    return folder
