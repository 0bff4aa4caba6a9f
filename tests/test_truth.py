"""The truth beside the model (issue 25, item 1): TinyWorld's exact next-word distributions, checked against the
generator itself, and the gap in bits between them and a model."""

import json
import math
import random

import pytest
from transformers import AutoTokenizer

from hf_tinyllm.data.tinyworld import FAMILIES, TinyWorld, TinyWorldConfig
from hf_tinyllm.explain import main as explain
from hf_tinyllm.insight.model_parts import InsightError
from hf_tinyllm.insight.timeline import load_timeline
from hf_tinyllm.insight.truth import (
    END,
    POSITION_KINDS,
    TinyWorldTruth,
    TruthProbe,
    compare_next_word,
    families_in_turn,
    family_floors,
    gap_bits,
    world_of,
)
from hf_tinyllm.model_card import SUMMARY_FILE, TRAINING_LOG_FILE


@pytest.fixture(scope="module")
def truth() -> TinyWorldTruth:
    return TinyWorldTruth(TinyWorld())


def test_the_words_of_sampled_documents_add_up_to_their_exact_information(truth):
    """Along a document, the true surprises of its words (and of its end) sum to -log2 p(document), the sum of the
    generator's own choices: every choice is accounted for once, in the right place."""
    rng = random.Random(0)
    for _ in range(40):
        document = truth.world.sample_document(rng)
        positions = truth.along(document.text)
        assert positions[-1].word == END
        assert math.fsum(p.surprise_bits for p in positions) == pytest.approx(document.nll_bits, abs=1e-9)
        assert all(p.entropy_bits >= -1e-12 for p in positions)


def test_known_prefixes(truth):
    assert truth.next_word("the capital of france is").words == ["paris."]
    assert truth.next_word("two plus three equals").probability("five.") == 1.0
    fed = truth.next_word("the king fed his")
    assert sorted(fed.words) == ["cat.", "dog.", "goat.", "horse."] and fed.entropy_bits == pytest.approx(2.0)
    after = truth.next_word("the queen fed her cat.")
    stop = 1 / len(truth.world.sentence_counts)  # a document has 1 to 4 sentences, uniformly
    assert after.probability(END) == pytest.approx(stop) and after.probability("she") == pytest.approx(1 - stop)
    assert truth.next_word("the").families["facts"] > 0 and set(truth.next_word("the king").families) == {"royalty"}
    with pytest.raises(InsightError, match="cannot begin a TinyWorld document"):
        truth.next_word("the king ate paris.")


def test_the_generator_as_a_model_has_no_gap_and_a_uniform_model_has_log2_v_minus_h(truth):
    vocabulary = sorted({w for doc in truth.world.documents("train")[:2000] for w in doc.text.split()} | {END})
    for prefix in ("", "the", "the king fed his", "seven times", "the queen fed her cat.", "every cloud"):
        exact = truth.next_word(prefix)
        assert gap_bits(exact, exact.probability) < 1e-3
        assert set(exact.words) <= set(vocabulary)
        uniform = gap_bits(exact, lambda word: 1 / len(vocabulary))
        assert uniform == pytest.approx(math.log2(len(vocabulary)) - exact.entropy_bits, abs=1e-9)
    assert gap_bits(truth.next_word("the king fed his"), lambda word: 0.0) == math.inf


def test_the_family_floors_weighted_give_back_the_corpus_floor():
    world = TinyWorld(TinyWorldConfig(family_weights={"royalty": 0.25, "arithmetic": 0.5, "facts": 0.15,
                                                      "sayings": 0.1}))  # fmt: skip
    floors = family_floors(world)
    assert set(floors) == set(FAMILIES)
    family_choice = -math.fsum(p * math.log2(p) for p in world.family_probs) / world.expected_bytes_per_document()
    rebuilt = family_choice + math.fsum(f.byte_share * f.floor_bits_per_byte for f in floors.values())
    assert rebuilt == pytest.approx(world.floor_bits_per_byte(), rel=1e-12)
    assert math.fsum(f.byte_share for f in floors.values()) == pytest.approx(1.0)
    assert floors["facts"].floor_bits_per_byte < floors["royalty"].floor_bits_per_byte


def test_a_model_beside_the_truth(trained_tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tokenizer = (
        AutoModelForCausalLM.from_pretrained(trained_tiny_dir),
        AutoTokenizer.from_pretrained(trained_tiny_dir),
    )
    comparison = compare_next_word(model, tokenizer, "the king fed his")
    assert comparison.truth.words == sorted(comparison.truth.words, key=comparison.truth.probability, reverse=True)
    assert all(0 < q < 1 for q in comparison.model_probabilities)
    pairs = zip(comparison.truth.probabilities, comparison.model_probabilities, strict=True)
    expected = math.fsum(p * math.log2(p / q) for p, q in pairs)
    assert comparison.gap_bits == pytest.approx(max(expected, 0.0))


def test_the_run_records_its_mix_and_the_truth_follows_it(timeline_run_dir, tmp_path):
    summary = json.loads((timeline_run_dir / "model" / SUMMARY_FILE).read_text())
    assert summary["hyperparameters"]["tinyworld_weights"] is None  # that run used the default mix
    assert world_of(timeline_run_dir / "model")[0].family_probs == TinyWorld().family_probs
    recorded = {"dataset": "tinyworld", "tinyworld_weights": '{"facts": 1}'}
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"hyperparameters": recorded}))
    world, source = world_of(tmp_path)
    assert "the run's mix {'facts': 1}" in source
    assert TinyWorldTruth(world).next_word("the").words == ["capital"]


def test_explain_next_puts_the_truth_beside_the_model(trained_tiny_dir, tmp_path, capsys):
    explain(["next", str(trained_tiny_dir), "--prompt", "the king fed his", "--text", "the king fed his dog.",
             "--output_dir", str(tmp_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert "The truth beside the model (TinyWorld's default mix" in out
    assert "true entropy 2.000 bits; KL(truth || model) = " in out
    rows = out.split("Word by word")[1].splitlines()[2:7]
    assert [row.split()[0] for row in rows] == ["the", "king", "fed", "his", "dog."]
    explain(["next", str(trained_tiny_dir), "--prompt", "hello world", "--output_dir", str(tmp_path)])
    assert "The truth beside the model: none here ('hello world' cannot begin a TinyWorld document" in (
        capsys.readouterr().out
    )


def test_the_loop_probes_the_gap_to_the_truth_per_family_and_kind(timeline_run_dir):
    """The run's probe rows hold the gap per family and per kind of word; at the last step it is what TruthProbe
    measures on that step's snapshot, on 4 of the run's validation documents, one per family."""
    rows = [json.loads(line) for line in (timeline_run_dir / "model" / TRAINING_LOG_FILE).read_text().splitlines()]
    probes = [row for row in rows if "probe/gap_bits" in row]
    assert [row["step"] for row in probes] == [0, 2, 4, 6]
    world = TinyWorld(TinyWorldConfig(num_train_documents=600, num_validation_documents=100))
    documents = families_in_turn([{"text": d.text, "family": d.family} for d in world.documents("validation")], 4)
    assert sorted(d["family"] for d in documents) == sorted(FAMILIES)  # every family has its curve
    probe = TruthProbe(TinyWorldTruth(world), documents)
    model = load_timeline(timeline_run_dir / "model").model_at(6)
    measured = probe.measure(model, AutoTokenizer.from_pretrained(timeline_run_dir / "model"))
    assert {f"probe/{key}" for key in measured} <= set(probes[-1])
    for key, value in measured.items():
        assert probes[-1][f"probe/{key}"] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    kinds = {key.removeprefix("gap_bits_") for key in measured if key.startswith("gap_bits_")} - set(FAMILIES)
    assert kinds <= set(POSITION_KINDS) and {"boundary", "choice"} <= kinds
    assert probes[0]["probe/gap_bits"] > probes[-1]["probe/gap_bits"] > 0  # six steps already close some of it
    assert probes[0]["probe/floor_bits"] == probes[-1]["probe/floor_bits"]  # the truth does not train
