"""The studio page as an API: the real server (`tinyllm studio FOLDER`, run from this process by
tests/studio_server.py), every endpoint called over HTTP with gradio_client, the numbers checked against
`hf_tinyllm.insight` computed directly on the same model."""

import json
import logging
import shutil

import pytest
import torch
from conftest import cli_user_error
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_tinyllm.insight.geometry import analogy, nearest_neighbours, word_map
from hf_tinyllm.insight.layers import attention_maps, logit_lens
from hf_tinyllm.insight.learning import LearningProbe
from hf_tinyllm.insight.microscope import optimizer_step_microscope, step_settings
from hf_tinyllm.insight.next_token import next_token_distribution, rank_guess
from hf_tinyllm.insight.timeline import load_timeline, word_map_timeline
from hf_tinyllm.insight.truth import compare_along, compare_next_word
from hf_tinyllm.model_card import SUMMARY_FILE, TRAINING_LOG_FILE

pytest.importorskip("gradio")
from gradio_client import Client
from studio_server import studio

PROMPT = "two plus three equals"
ALONG = "two plus three equals five. seven times six equals forty two."
# /at_step after the step: be, layers, the map's word, the word-by-word text
VIEW_INPUTS = (PROMPT, 1.0, 0, 1.0, PROMPT, -1, 1, 2, "king", ALONG)


@pytest.fixture(scope="module")
def model_with_records(trained_tiny_dir, tmp_path_factory):
    """The trained tiny model in a folder that also holds training records: two real probe records."""
    folder = tmp_path_factory.mktemp("studio") / "model"
    shutil.copytree(trained_tiny_dir, folder)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    probe = LearningProbe(tokenizer, probe_batch=tokenizer(PROMPT + " five.", return_tensors="pt")["input_ids"],
                          heldout_problems=[{"prompt": PROMPT, "answer": "five"}])  # fmt: skip
    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}] + [{"step": s, **probe.measure(model)} for s in (1, 2)]
    (folder / TRAINING_LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / SUMMARY_FILE).write_text(json.dumps({"final_metrics": {"floor_bits_per_byte": 0.27}}))
    return folder, model.eval(), tokenizer


@pytest.fixture(scope="module")
def client(model_with_records):
    """The page served with --fast_decode: its /generate must give the tokens of the regular `generate`."""
    from torch._dynamo.utils import counters

    counters.clear()
    with studio(model_with_records[0], "--fast_decode") as url:
        assert counters["stats"]["unique_graphs"] >= 1  # the decode step was compiled before serving
        yield Client(url, verbose=False)


def test_every_endpoint_answers_with_the_insight_numbers(client, model_with_records):
    _, model, tokenizer = model_with_records
    endpoints = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert endpoints == {"/new_round", "/guess", "/distribution", "/next_word", "/layers", "/word_map", "/analogy",
                         "/neighbours", "/learning", "/generate", "/at_step", "/truth", "/truth_along", "/microscope",
                         "/context", "/steer", "/flip_rates", "/train_start", "/train_pause", "/train_resume",
                         "/train_stop", "/train_poll"}  # fmt: skip

    update, status, prompt, _, _ = client.predict(PROMPT, api_name="/new_round")
    expected = next_token_distribution(model, tokenizer, PROMPT, k=6)
    assert sorted(value for value, _ in update["choices"]) == sorted(t.strip() for t in expected.model.tokens)
    assert PROMPT in status and prompt == PROMPT

    _, status, numbers = client.predict(PROMPT, 0.7, 5, 0.9, api_name="/distribution")
    direct = next_token_distribution(model, tokenizer, PROMPT, k=10, temperature=0.7, top_k=5, top_p=0.9)
    assert numbers["sampling"]["tokens"] == direct.sampling.tokens
    assert numbers["sampling"]["probabilities"] == pytest.approx(direct.sampling.probabilities, abs=1e-6)
    assert f"{direct.sampling.entropy_bits:.2f} after" in status

    rows, status, numbers = client.predict("the king fed his", api_name="/truth")
    beside = compare_next_word(model, tokenizer, "the king fed his")
    assert [row[0] for row in rows["data"]] == beside.truth.words and numbers["gap_bits"] == pytest.approx(
        beside.gap_bits
    )
    assert f"the model is **{beside.gap_bits:.3f} bits** from it" in status
    assert "none here ('hello world' cannot begin" in client.predict("hello world", api_name="/truth")[1]
    figure, status, numbers = client.predict(ALONG, api_name="/truth_along")
    along = compare_along(model, tokenizer, ALONG)
    assert [w["word"] for w in numbers["along"]] == [r.word for r in along]
    assert [w["gap_bits"] for w in numbers["along"]] == pytest.approx([r.gap_bits for r in along])
    bars = json.loads(figure["plot"])["data"]
    assert bars[0]["y"] == pytest.approx([r.model_surprise_bits for r in along], abs=1e-9)
    assert bars[2]["y"] == pytest.approx([r.entropy_bits for r in along], abs=1e-12)
    assert f"the gap to the truth (KL, summed) is **{sum(r.gap_bits for r in along):.3f} bits**" in status

    batch, heldout = "two plus three equals five.\nthe king fed his dog.", "the queen fed her cat."
    *figures, rows, status, numbers = client.predict(batch, heldout, "fresh", 0, api_name="/microscope")
    step = optimizer_step_microscope(model, tokenizer, batch.splitlines(), heldout,
                                     settings=step_settings(None, "fresh"))  # fmt: skip
    assert numbers["batch_loss_after"] == pytest.approx(step.batch_loss_after, rel=1e-5)
    assert step.batch_loss_after < step.batch_loss_before
    assert [row[0] for row in rows["data"]] == [token for _, token, _ in step.rows_moved[: len(rows["data"])]]
    assert json.loads(figures[0]["plot"])["data"][1]["x"] == pytest.approx(
        [t.loss_after for t in [*step.batch, step.heldout]], rel=1e-5
    )
    assert f"{step.rows_changed} of {step.vocab_size} embedding rows moved" in status and all(figures)

    word = expected.model.tokens[1].strip()
    verdict, numbers = client.predict(PROMPT, word, api_name="/guess")  # the score is session state, not an input
    guess = rank_guess(model, tokenizer, PROMPT, word)
    assert numbers["rank"] == guess.rank and numbers["word_probability"] == pytest.approx(guess.word_probability)
    assert f"ranks **{guess.rank}**" in verdict and "of 1 rounds" in verdict
    assert "of 2 rounds" in client.predict(PROMPT, word, api_name="/guess")[0]

    assert client.predict(PROMPT, api_name="/next_word") == PROMPT + expected.model.tokens[0]

    _, rows, _, status, numbers = client.predict(PROMPT, -1, 2, 1, api_name="/layers")
    lens = logit_lens(model, tokenizer, PROMPT)
    assert numbers["logit_lens"]["final_token_probabilities"] == pytest.approx(lens.final_token_probabilities)
    assert [row[0] for row in rows["data"]] == lens.layer_names and "position" in status

    _, _, _, numbers = client.predict(api_name="/word_map")
    assert numbers["words"] == word_map(model, tokenizer).words
    table, _, numbers = client.predict("king", "man", "woman", api_name="/analogy")
    top = analogy(model, tokenizer, "king", "man", "woman", k=5).top
    assert [row[1] for row in table["data"]] == [w for w, _ in top]
    table, _, _ = client.predict("queen", api_name="/neighbours")
    assert [row[0] for row in table["data"]] == [
        w for w, _ in nearest_neighbours(model, tokenizer, "queen", k=8).neighbours
    ]

    *figures, status = client.predict(api_name="/learning")
    assert status == "4 logged rows, 2 probe records" and all(figures)

    text = client.predict(PROMPT, 6, 1.0, 0, 1.0, False, api_name="/generate")
    greedy = model.generate(**tokenizer(PROMPT, return_tensors="pt"), max_new_tokens=6, do_sample=False)
    assert text == tokenizer.decode(greedy[0], skip_special_tokens=True)
    assert text.startswith(PROMPT) and len(text) > len(PROMPT)


def test_the_timeline_moves_every_view_to_the_model_as_it_was(timeline_run_dir):
    """/at_step (the slider) at every recorded step: each view's numbers are insight's on that step's snapshot."""
    folder = timeline_run_dir / "model"
    tokenizer, timeline = AutoTokenizer.from_pretrained(folder), load_timeline(folder)
    maps = word_map_timeline(timeline, tokenizer)
    distributions = []
    with studio(folder) as url:
        client = Client(url, verbose=False)
        for index, step in enumerate(timeline.steps):
            model = timeline.model_at(step)
            views = client.predict(step, *VIEW_INPUTS, api_name="/at_step")
            status, distribution, truth, attention, lens, geometry = (views[i] for i in (0, 3, 6, 9, 11, 15))
            curves, along = views[16:20], views[23]
            assert [w["gap_bits"] for w in along["along"]] == pytest.approx(
                [r.gap_bits for r in compare_along(model, tokenizer, ALONG)]
            )
            assert f"step {step}** of {timeline.steps[-1]}" in status
            direct = next_token_distribution(model, tokenizer, PROMPT, k=10)
            assert distribution["model"]["tokens"] == direct.model.tokens
            assert distribution["model"]["probabilities"] == pytest.approx(direct.model.probabilities, abs=1e-6)
            distributions.append(distribution["model"]["probabilities"])
            beside = compare_next_word(model, tokenizer, PROMPT)  # the truth beside the snapshot
            assert truth["truth"]["words"] == ["five."] and truth["gap_bits"] == pytest.approx(beside.gap_bits)
            expected_lens = logit_lens(model, tokenizer, PROMPT)
            assert lens["logit_lens"]["top_tokens"] == expected_lens.top_tokens
            assert lens["logit_lens"]["final_token_probabilities"] == pytest.approx(
                expected_lens.final_token_probabilities, abs=1e-6
            )
            heads = attention_maps(model, tokenizer, PROMPT).weights[0][1]  # layer 1, head 2
            plotted = json.loads(attention["plot"])["data"][0]["z"]
            assert torch.allclose(torch.tensor(plotted), torch.tensor(heads), atol=1e-6)
            assert torch.allclose(torch.tensor(geometry["coords"]), torch.tensor(maps.maps[index].coords), atol=1e-6)
            for curve in curves:  # a cursor at the step on every learning curve
                shapes = json.loads(curve["plot"])["layout"]["shapes"]
                assert [shape["x0"] for shape in shapes if shape["yref"] == "y domain"] == [step]
        assert distributions[0] != pytest.approx(distributions[-1], abs=1e-3)  # the views did move
        final = AutoModelForCausalLM.from_pretrained(folder)
        # Between recorded steps the slider lands on the nearest one; the last step is the saved model.
        near_the_end = client.predict(timeline.steps[-1] - 0.4, *VIEW_INPUTS, api_name="/at_step")[3]["model"]
        expected = next_token_distribution(final, tokenizer, PROMPT, k=10).model
        assert near_the_end["probabilities"] == pytest.approx(expected.probabilities, abs=1e-6)


def test_user_errors_are_a_readable_line_and_the_server_keeps_serving(client):
    for args, api in ((("", 1.0, 0, 1.0), "/distribution"), (("word " * 400, 1.0, 0, 1.0), "/distribution")):
        _, status, numbers = client.predict(*args, api_name=api)
        assert status.startswith("**Problem:**") and numbers == {} and "Traceback" not in status
    assert "longer than the model's context" in client.predict("word " * 400, -1, 1, 1, api_name="/layers")[3]
    assert "not a single word" in client.predict("two words", api_name="/neighbours")[1]
    assert "Problem" in client.predict("", 5, 1.0, 0, 1.0, False, api_name="/generate")
    assert client.predict(PROMPT, api_name="/new_round")[2] == PROMPT  # still serving


class Warnings(logging.Handler):
    """The WARNING-or-worse records that reach it: in a `tinyllm` process of its own, these are printed on stderr."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}")


def test_a_folder_that_is_not_a_causal_lm_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    read = []

    class KeptCapsys:  # capsys, keeping what the helper read
        def readouterr(self):
            read.append(capsys.readouterr())
            return read[-1]

    # In this process, log records go to the handlers set up earlier instead of this stderr: they are collected from
    # the root logger and transformers' (which does not propagate), and must be none, as the one line allows none.
    warnings = Warnings()
    for name in ("", "transformers"):
        logging.getLogger(name).addHandler(warnings)
    try:
        line = cli_user_error(["studio", str(tmp_path)], KeptCapsys())  # exit status 2, the last line `error: ...`
    finally:
        for name in ("", "transformers"):
            logging.getLogger(name).removeHandler(warnings)
    stderr = read[-1].err
    assert stderr.strip().startswith("error: ") and line.startswith("error: ")
    assert len(stderr.strip().splitlines()) == 1 and not warnings.messages, (stderr, warnings.messages)
