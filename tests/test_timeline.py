"""The training timeline (issue 24, item 1): snapshots at every probe step in the run folder, copied into the model
folder and staged for the Hub, and `hf_tinyllm.insight.timeline` giving the embedding and the whole model as they were
at any recorded step."""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model
from PIL import Image
from test_trainer_script import trainer_run

from hf_tinyllm.explain import main as explain
from hf_tinyllm.hub import stage_repository
from hf_tinyllm.insight import InsightError
from hf_tinyllm.insight.geometry import parallelism_score, word_map
from hf_tinyllm.insight.timeline import (
    Timeline,
    TimelineRecorder,
    load_timeline,
    plot_word_map_animation,
    procrustes,
    word_map_timeline,
)
from hf_tinyllm.modeling_tinyllm import TinyLLMForCausalLM
from hf_tinyllm.tokenization import load_tokenizer
from hf_tinyllm.training import ProbeArguments


def test_snapshots_round_trip_and_kinds(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    recorder = TimelineRecorder(tmp_path / "timeline")
    recorder.record(model, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)
    recorder.record(model, 7)
    timeline = load_timeline(tmp_path)
    assert timeline.steps == [0, 7]
    for step, expected in ((0, before), (7, model.state_dict())):
        again = timeline.model_at(step).state_dict()
        assert all(torch.equal(again[k], v) for k, v in expected.items())
    assert torch.equal(timeline.embeddings(0), before["model.embed_tokens.weight"])
    # Above the whole-weight limit, the embedding alone; off, nothing; a resumed recorder keeps the index.
    small = TimelineRecorder(tmp_path / "timeline", max_parameters=model.num_parameters() - 1)
    assert small.record(model, 9).stat().st_size < (tmp_path / "timeline" / "step-000007.safetensors").stat().st_size
    assert TimelineRecorder(tmp_path / "timeline", kind="off").record(model, 11) is None
    timeline = Timeline(tmp_path)
    assert timeline.steps == [0, 7, 9]
    assert torch.equal(timeline.embeddings(9), model.get_input_embeddings().weight)
    with pytest.raises(InsightError, match="embedding only"):
        timeline.model_at(9)
    with pytest.raises(InsightError, match="no snapshot at step 8"):
        timeline.embeddings(8)
    with pytest.raises(ValueError, match="timeline='sometimes'"):
        TimelineRecorder(tmp_path / "x", kind="sometimes")
    # Fewer snapshots: --timeline_every K keeps every K-th probe step.
    fewer = ProbeArguments(probe_steps=2, timeline_every=3).timeline_recorder(tmp_path / "fewer")
    assert [fewer.record(model, step) is not None for step in (0, 2, 4, 6, 12)] == [True, False, False, True, True]
    assert Timeline(tmp_path, tmp_path / "fewer").steps == [0, 6, 12]


@pytest.fixture(scope="module")
def loop_run(timeline_run_dir) -> Path:
    return timeline_run_dir


def test_the_loop_records_a_timeline_into_the_model_folder_and_the_hub_staging(loop_run, tmp_path):
    model_dir = loop_run / "model"
    timeline = load_timeline(model_dir)
    assert timeline.steps == [0, 2, 4, 6] and (loop_run / "timeline" / "timeline.json").is_file()
    final = TinyLLMForCausalLM.from_pretrained(model_dir).state_dict()
    at_end = timeline.model_at(6).state_dict()
    assert all(torch.equal(at_end[k], v) for k, v in final.items())
    assert not torch.equal(timeline.embeddings(0), timeline.embeddings(6))
    (tmp_path / "staging").mkdir()
    staged = stage_repository(model_dir, tmp_path / "staging", "tester/tiny")
    assert sorted(p.name for p in (staged / "timeline").iterdir()) == [
        "step-000000.safetensors", "step-000002.safetensors", "step-000004.safetensors", "step-000006.safetensors",
        "timeline.json"]  # fmt: skip
    with Image.open(staged / "word_map_timeline.gif") as image:  # rendered for the card at push time
        assert image.n_frames == 4
    assert "![The word map through training](word_map_timeline.gif)" in (staged / "README.md").read_text()
    with pytest.raises(InsightError, match="no training timeline"):
        load_timeline(tmp_path / "staging" / "nowhere")


def test_procrustes_undoes_a_rotation_a_reflection_a_scale_and_a_shift():
    reference = np.random.default_rng(0).normal(size=(12, 2))
    angle = 0.7
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.diag([1.0, -1.0])
    assert np.allclose(procrustes(3.0 * reference @ turn + [5.0, -2.0], reference), reference)


def test_the_word_map_moves_step_by_step_and_animates(loop_run, tmp_path, capsys):
    model_dir = loop_run / "model"
    tokenizer = load_tokenizer(model_dir)
    result = word_map_timeline(load_timeline(model_dir), tokenizer)
    assert result.steps == [0, 2, 4, 6] and len(result.maps) == len(result.parallelism) == 4
    final = TinyLLMForCausalLM.from_pretrained(model_dir)
    plain = word_map(final, tokenizer)  # the last frame is the final model's own map, unmoved
    assert result.maps[-1].words == plain.words and np.allclose(result.maps[-1].coords, plain.coords)
    assert result.parallelism[-1] == pytest.approx(parallelism_score(final, tokenizer).score)
    timeline = load_timeline(model_dir)
    for step, aligned in zip(result.steps, result.maps, strict=True):  # aligning only ever brings a frame closer
        final.get_input_embeddings().weight.data.copy_(timeline.embeddings(step))
        raw = np.asarray(word_map(final, tokenizer).coords)
        target = np.asarray(plain.coords)
        assert np.linalg.norm(np.asarray(aligned.coords) - target) <= np.linalg.norm(raw - target) + 1e-9
    gif = plot_word_map_animation(result, tmp_path / "map.gif")
    with Image.open(gif) as image:
        assert image.n_frames == 4
    capsys.readouterr()
    explain(["timeline", str(model_dir), "--output_dir", str(tmp_path / "explain")])
    output = capsys.readouterr().out
    assert "4 snapshots (weights), steps 0 to 6" in output and (tmp_path / "explain/word_map_timeline.gif").is_file()


def test_the_trainer_records_a_timeline_from_step_0(tmp_path, tokenizer_dir):
    trainer_run(tmp_path / "run", tokenizer_dir, "--probe_steps", "3", "--probe_documents", "2")
    timeline = load_timeline(tmp_path / "run")
    assert timeline.steps == [0, 3, 6]
    final = TinyLLMForCausalLM.from_pretrained(tmp_path / "run").state_dict()
    assert all(torch.equal(timeline.model_at(6).state_dict()[k], v) for k, v in final.items())
