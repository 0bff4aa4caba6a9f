"""Memorise or compress: nested slices, the problems of a slice, memorising a tiny slice (its training documents below
their exact code length, its own problems answered and the held-out ones not), the plot and
`tinyllm explain memorise`."""

import json

import pytest
from conftest import cli_user_error, tiny_config

from hf_tinyllm.explain import main
from hf_tinyllm.insight.memorisation import memorisation_sweep, plot_memorisation, slice_problems, training_slice
from hf_tinyllm.insight.model_parts import InsightError
from hf_tinyllm.insight.small_runs import demo_family_weights, pack_documents, tinyworld_corpus
from hf_tinyllm.tokenization import load_tokenizer, model_overrides_for

SLICES = (20, 60)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models train faster on one thread


@pytest.fixture(scope="module")
def setting(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    config = tiny_config(**model_overrides_for(tokenizer), hidden_size=64, intermediate_size=128,
                         max_position_embeddings=128)  # fmt: skip
    return config, tokenizer, tinyworld_corpus(max(SLICES), 20, demo_family_weights(), seed=0)


@pytest.fixture(scope="module")
def result(setting):
    # 150 steps on 20 documents (about 85 epochs) memorise them; checked for seeds 0, 1 and 2: training gap -0.14,
    # -0.14, -0.18 bits per byte, trained exact match 75%, 31%, 46% against held-out 0%, 0%, 1%.
    return memorisation_sweep(*setting, slices=SLICES, max_steps=150, block_size=128, batch_size=4,
                              learning_rate=2e-2, eval_documents=40, seed=0)  # fmt: skip


def test_slices_are_nested_prefixes_of_one_generator(setting):
    _, _, corpus = setting
    small, large = training_slice(corpus, 20)["text"], training_slice(corpus, 60)["text"]
    assert small == large[:20] and len(set(large)) > 20
    assert tinyworld_corpus(20, 5, demo_family_weights(), seed=0).train_documents["text"] == small


def test_a_slices_problems_are_in_its_intact_documents_and_never_held_out(setting):
    _, tokenizer, corpus = setting
    _, _, intact = pack_documents(training_slice(corpus, 20), tokenizer, 128)
    texts = " ".join(corpus.train_documents.select(intact)["text"])
    problems = slice_problems(corpus, intact)
    assert problems and all(f"{p['prompt']} {p['answer']}." in texts for p in problems)
    heldout = {p["prompt"] for p in corpus.heldout_problems}
    assert not heldout & {p["prompt"] for p in problems}
    assert slice_problems(corpus, intact, count=2, seed=0) == slice_problems(corpus, intact, count=2, seed=0)
    assert len(slice_problems(corpus, intact, count=2)) == 2 and slice_problems(corpus, []) == []


def test_a_tiny_slice_is_memorised(result):
    tiny = result.runs[0]
    assert tiny.num_documents == 20 and tiny.steps == 150
    assert tiny.train_gap < 0  # below the exact code length of its own documents: only memorising gets there
    assert tiny.validation_gap > tiny.train_gap + 1.0  # and far above it on unseen documents
    assert tiny.trained_exact_match > tiny.heldout_exact_match
    assert tiny.train_gap == pytest.approx(tiny.train_bits_per_byte - tiny.train_source_bits_per_byte, abs=1e-12)


def test_every_slice_trains_the_same_steps_from_the_same_weights(result):
    assert [run.num_documents for run in result.runs] == list(SLICES)
    for run in result.runs:
        assert run.steps == 150 and run.tokens == 150 * 4 * 128
        assert run.epochs == pytest.approx(150 * 4 / run.num_blocks)
        assert 0 < run.num_train_eval_documents == min(run.intact_documents, 40) <= run.num_documents
        assert run.validation_source_bits_per_byte == result.runs[0].validation_source_bits_per_byte
    assert result.runs[0].train_losses[0] == pytest.approx(result.runs[1].train_losses[0], rel=0.05)
    assert result.runs[0].num_blocks < result.runs[1].num_blocks


@pytest.mark.parametrize(("slices", "match"), [
    ((20, 61), "larger than the corpus's 60"),
    ((0, 20), "positive"),
    ((20.5,), "positive"),
    ((20, 20), "distinct"),
])  # fmt: skip
def test_bad_slices_are_one_line_insight_errors(setting, slices, match):
    with pytest.raises(InsightError, match=match):
        memorisation_sweep(*setting, slices=slices, max_steps=1)


def test_the_plot_is_written(result, tmp_path):
    path = plot_memorisation(result, tmp_path / "memorise.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CLI_BUDGET = ["--slices", "10,30", "--max_steps", "4", "--block_size", "64", "--batch_size", "4",
              "--eval_documents", "10"]  # fmt: skip


def test_cli_report_and_json_on_the_debug_preset(capsys, tmp_path):
    main(["memorise", "debug", *CLI_BUDGET, "--output_dir", str(tmp_path)])
    report = capsys.readouterr().out
    assert "preset debug" in report and "trained 4 steps" in report
    assert [line.split()[0] for line in report.splitlines() if line.split()[:1] in (["10"], ["30"])] == ["10", "30"]
    assert (tmp_path / "memorise.png").exists()
    main(["memorise", "debug", *CLI_BUDGET, "--output_dir", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [run["num_documents"] for run in data["runs"]] == [10, 30] and data["max_steps"] == 4


def test_cli_bad_slices_is_a_one_line_error(tmp_path, capsys):
    message = cli_user_error(["explain", "memorise", "debug", "--slices", "50,x", "--output_dir", str(tmp_path)],
                             capsys)  # fmt: skip
    assert "--slices" in message
