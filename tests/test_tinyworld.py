"""TinyWorld: determinism, the arithmetic hold-out, unique derivations and the exact entropy floor."""

import json
import math
import random
import re
import statistics
from collections import Counter

import datasets
import pytest

from hf_tinyllm.data.tinyworld import (
    FAMILIES,
    NOUN_PAIRS,
    TinyWorld,
    TinyWorldConfig,
    number_to_words,
    save_tinyworld,
    tinyworld_dataset,
    tinyworld_floor,
)

# Two small configurations that cover every family and can be enumerated exhaustively in well under a second.
SMALL_CONFIGS = {
    "all_families_n1_2": TinyWorldConfig(vocabulary_limit=2, max_operand=3, max_factor=2, max_sentences=2),
    "skewed_n2_3": TinyWorldConfig(
        family_weights={"royalty": 0.5, "arithmetic": 0.2, "facts": 0.25, "sayings": 0.05},
        vocabulary_limit=1,
        min_sentences=2,
        max_sentences=3,
        operations=("plus", "times"),
        max_operand=2,
        max_factor=2,
        heldout_fraction=0.2,
    ),
}


@pytest.fixture(scope="module")
def default_world() -> TinyWorld:
    return TinyWorld()


@pytest.fixture(scope="module", params=sorted(SMALL_CONFIGS))
def small(request) -> tuple[TinyWorld, dict[str, float]]:
    world = TinyWorld(SMALL_CONFIGS[request.param])
    return world, dict(world.enumerate_documents())


def sentences(text: str) -> list[str]:
    return [s + "." for s in text[:-1].split(". ")]


def small_world(**overrides) -> TinyWorld:
    return TinyWorld(TinyWorldConfig(num_train_documents=200, num_validation_documents=200, **overrides))


def test_same_seed_same_documents_and_splits_differ():
    first, again, other = small_world(seed=3), small_world(seed=3), small_world(seed=4)
    assert first.documents("train") == again.documents("train")
    assert first.documents("validation") == again.documents("validation")
    assert first.documents("train") != other.documents("train")
    assert [d.text for d in first.documents("train")] != [d.text for d in first.documents("validation")]
    with pytest.raises(ValueError, match="split"):
        first.documents("test")


def test_heldout_problems_never_in_corpus(default_world):
    heldout = default_world.heldout_problems()
    corpus = default_world.documents("train") + default_world.documents("validation")
    arithmetic = [s for doc in corpus if doc.family == "arithmetic" for s in sentences(doc.text)]
    seen_prompts = {s.split(" equals ")[0] + " equals" for s in arithmetic}
    assert len(seen_prompts) > 0.8 * (21 * 21 + 21 * 22 // 2 + 13 * 13)  # the check below is not vacuous
    all_sentences = {s for doc in corpus for s in sentences(doc.text)}
    for problem in heldout:
        assert problem.prompt == f"{number_to_words(problem.a)} {problem.op} {number_to_words(problem.b)} equals"
        assert problem.text == f"{problem.prompt} {problem.answer}."
        assert problem.prompt not in seen_prompts
        assert problem.text not in all_sentences


def test_heldout_set_is_independent_of_corpus_seed_and_has_stated_size():
    problems = {"plus": 21 * 21, "minus": 21 * 22 // 2, "times": 13 * 13}
    reference = TinyWorld(TinyWorldConfig(seed=0)).heldout_problems()
    assert TinyWorld(TinyWorldConfig(seed=99)).heldout_problems() == reference
    assert TinyWorld(TinyWorldConfig(heldout_seed=7)).heldout_problems() != reference
    counts = Counter(p.op for p in reference)
    assert counts == {op: round(0.1 * n) for op, n in problems.items()}
    assert len({(p.op, p.a, p.b) for p in reference}) == len(reference)
    assert all(p.a >= p.b for p in reference if p.op == "minus")


def test_enumeration_is_a_distribution_of_distinct_texts_over_all_families(small):
    world, distribution = small
    derivations = list(world.enumerate_documents())
    assert len(derivations) == len(distribution) == world.num_derivations()  # dict keys: distinct texts
    assert math.fsum(p for _, p in derivations) == pytest.approx(1.0, abs=1e-12)
    rng = random.Random(0)
    assert {world.sample_document(rng).family for _ in range(300)} == set(FAMILIES)


def test_analytic_floor_equals_enumeration(small):
    world, distribution = small
    entropy = -math.fsum(p * math.log2(p) for p in distribution.values())
    expected_bytes = math.fsum(p * (len(text.encode()) + 1) for text, p in distribution.items())
    assert world.entropy_bits_per_document() == pytest.approx(entropy, abs=1e-9)
    assert world.expected_bytes_per_document() == pytest.approx(expected_bytes, abs=1e-9)
    assert world.floor_bits_per_byte() == pytest.approx(entropy / expected_bytes, abs=1e-9)


def test_sampled_nll_is_exact_log_probability(small):
    world, distribution = small
    rng = random.Random(1)
    for _ in range(500):
        doc = world.sample_document(rng)
        assert doc.nll_bits == pytest.approx(-math.log2(distribution[doc.text]), abs=1e-9)
        assert doc.num_bytes == len(doc.text.encode()) + 1


def test_full_tables_give_unique_sentences_and_exact_sentence_stats(default_world):
    """Sentence-level injectivity of the default tables: with '.' only at sentence ends, it makes texts unique."""
    well_formed = re.compile(r"[a-z]+( [a-z]+)*\.")
    first_owner: dict[str, tuple] = {}
    for family in FAMILIES:
        for state in default_world.states(family):
            for first in (True, False):
                outcomes = list(default_world.enumerate_sentences(family, state, first))
                texts = [text for text, _ in outcomes]
                assert len(set(texts)) == len(texts), (family, state, first)
                assert all(well_formed.fullmatch(t) for t in texts)
                entropy, length, count = default_world.sentence_stats(family, state, first)
                assert count == len(outcomes)
                assert entropy == pytest.approx(-math.fsum(p * math.log2(p) for _, p in outcomes), abs=1e-9)
                assert length == pytest.approx(math.fsum(p * len(t) for t, p in outcomes), abs=1e-9)
                if first:  # the first sentence identifies family and state
                    for text in texts:
                        assert first_owner.setdefault(text, (family, state)) == (family, state)


def test_sample_means_match_analytic_expectations(default_world):
    docs = default_world.documents("train")[:20_000]
    for values, expected in (
        ([d.nll_bits for d in docs], default_world.entropy_bits_per_document()),
        ([d.num_bytes for d in docs], default_world.expected_bytes_per_document()),
    ):
        standard_error = statistics.stdev(values) / math.sqrt(len(values))
        assert abs(statistics.fmean(values) - expected) < 4 * standard_error


@pytest.mark.parametrize(
    ("n", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (21, "twenty one"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (144, "one hundred forty four"),
        (999, "nine hundred ninety nine"),
    ],
)
def test_number_to_words(n, words):
    assert number_to_words(n) == words


@pytest.mark.parametrize("n", [-1, 1000])
def test_number_to_words_rejects_out_of_range(n):
    with pytest.raises(ValueError, match=r"0\.\.999"):
        number_to_words(n)


def test_dataset_and_save_roundtrip(tmp_path):
    config = TinyWorldConfig(num_train_documents=60, num_validation_documents=20, max_operand=5, max_factor=4)
    dataset = tinyworld_dataset(config)
    assert set(dataset) == {"train", "validation", "heldout_arithmetic"}
    assert dataset["train"].column_names == ["text", "nll_bits", "family", "num_bytes"]
    assert dataset["heldout_arithmetic"].column_names == ["op", "a", "b", "prompt", "answer", "text"]
    assert (dataset["train"].num_rows, dataset["validation"].num_rows) == (60, 20)
    assert dataset["heldout_arithmetic"].num_rows == len(TinyWorld(config).heldout_problems()) > 0
    summary = json.loads(dataset["validation"].info.description)
    assert summary["floor_bits_per_byte"] == pytest.approx(tinyworld_floor(config), abs=1e-12)
    assert summary["train_bytes"] == sum(dataset["train"]["num_bytes"])
    for fmt, loader in (("jsonl", "json"), ("parquet", "parquet")):
        folder = save_tinyworld(dataset, tmp_path / fmt, format=fmt)
        for split in dataset:
            reloaded = datasets.load_dataset(loader, data_files=str(folder / f"{split}.{fmt}"), split="train")
            assert reloaded["text"] == dataset[split]["text"]
    with pytest.raises(ValueError, match="format"):
        save_tinyworld(dataset, tmp_path / "csv", format="csv")


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"family_weights": {"royalty": -1.0, "facts": 1.0}}, "family_weights"),
        ({"family_weights": {"poetry": 1.0}}, "family_weights"),
        ({"family_weights": dict.fromkeys(FAMILIES, 0.0)}, "family_weights"),
        ({"min_sentences": 3, "max_sentences": 2}, "min_sentences"),
        ({"min_sentences": 0}, "min_sentences"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
        ({"heldout_fraction": -0.1}, "heldout_fraction"),
        ({"operations": ("divide",)}, "operations"),
        ({"operations": ()}, "operations"),
        ({"max_operand": 500}, "max_operand"),
        ({"max_factor": 32}, "max_factor"),
        ({"vocabulary_limit": 0}, "vocabulary_limit"),
        ({"num_train_documents": -1}, "num_train_documents"),
        ({"operations": ("times",), "max_factor": 0, "heldout_fraction": 0.9}, "heldout_fraction"),
    ],
)
def test_bad_config_raises_naming_the_field(overrides, field_name):
    with pytest.raises(ValueError, match=field_name):
        TinyWorld(TinyWorldConfig(**overrides))


def test_enumeration_refuses_huge_configurations(default_world):
    with pytest.raises(ValueError, match="derivations"):
        default_world.enumerate_documents()


def test_gender_parallelism(small):
    """For each pair, the male and female documents are the same stories up to the noun and agreement words."""
    world, distribution = small
    pairs = [pair for pair in NOUN_PAIRS if pair[0] in world.nouns]
    assert pairs
    for male, female in pairs:
        masked = {}
        for noun, partner, pronoun, possessive in ((male, female, "he", "his"), (female, male, "she", "her")):
            roles = {noun: "<noun>", partner: "<partner>", pronoun: "<pron>", possessive: "<poss>"}
            masked[noun] = {
                " ".join(roles.get(word, word) for word in text[:-1].replace(".", " .").split()): p
                for text, p in distribution.items()
                if text.startswith(f"the {noun} ")
            }
        assert masked[male] == masked[female]
        assert any("<pron>" in t and "<poss>" in t and "<partner>" in t for t in masked[male])
