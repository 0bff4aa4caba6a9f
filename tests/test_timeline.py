"""The training timeline (issue 24, item 1): snapshots at every probe step in the run folder, copied into the model
folder and staged for the Hub, and `hf_tinyllm.insight.timeline` giving the embedding and the whole model as they were
at any recorded step."""

import pytest
import torch
from conftest import tiny_model
from test_trainer_script import trainer_run
from test_training import run, small_run

from hf_tinyllm.hub import stage_repository
from hf_tinyllm.insight import InsightError
from hf_tinyllm.insight.timeline import Timeline, TimelineRecorder, load_timeline
from hf_tinyllm.modeling_tinyllm import TinyLLMForCausalLM
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


def test_the_loop_records_a_timeline_into_the_model_folder_and_the_hub_staging(tmp_path, tokenizer_dir):
    run(small_run(tmp_path / "run", tokenizer_dir, "--max_steps", "4", "--probe_steps", "2", "--probe_documents", "2"))
    model_dir = tmp_path / "run" / "model"
    timeline = load_timeline(model_dir)
    assert timeline.steps == [0, 2, 4] and (tmp_path / "run" / "timeline" / "timeline.json").is_file()
    final = TinyLLMForCausalLM.from_pretrained(model_dir).state_dict()
    at_end = timeline.model_at(4).state_dict()
    assert all(torch.equal(at_end[k], v) for k, v in final.items())
    assert not torch.equal(timeline.embeddings(0), timeline.embeddings(4))
    (tmp_path / "staging").mkdir()
    staged = stage_repository(model_dir, tmp_path / "staging", "tester/tiny")
    assert sorted(p.name for p in (staged / "timeline").iterdir()) == [
        "step-000000.safetensors", "step-000002.safetensors", "step-000004.safetensors", "timeline.json"]  # fmt: skip
    with pytest.raises(InsightError, match="no training timeline"):
        load_timeline(tmp_path / "staging" / "nowhere")


def test_the_trainer_records_a_timeline_from_step_0(tmp_path, tokenizer_dir):
    trainer_run(tmp_path / "run", tokenizer_dir, "--probe_steps", "3", "--probe_documents", "2")
    timeline = load_timeline(tmp_path / "run")
    assert timeline.steps == [0, 3, 6]
    final = TinyLLMForCausalLM.from_pretrained(tmp_path / "run").state_dict()
    assert all(torch.equal(timeline.model_at(6).state_dict()[k], v) for k, v in final.items())
