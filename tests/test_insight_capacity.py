"""Capacity at equal budget: one run per width in order, the widths' configs, the loss above TinyWorld's exact floor,
determinism with a budget of steps, the seconds budget, the FLOPs budget (whole steps by hand, reproducible), the
plot and `tinyllm explain capacity`."""

import json
import math

import pytest
import torch
from conftest import cli_user_error, tiny_config
from transformers import AutoModelForCausalLM

from hf_tinyllm.data.tinyworld import TinyWorld, TinyWorldConfig
from hf_tinyllm.explain import main
from hf_tinyllm.insight.capacity import capacity_sweep, plot_capacity, width_config
from hf_tinyllm.insight.model_parts import InsightError
from hf_tinyllm.insight.small_runs import demo_family_weights, tinyworld_corpus
from hf_tinyllm.tokenization import load_tokenizer, model_overrides_for
from hf_tinyllm.training.throughput import training_flops_per_token

WIDTHS = (16, 32)
STEPS = 8
SETTINGS = dict(max_steps=STEPS, block_size=64, batch_size=4, learning_rate=1e-2, seed=0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models train faster on one thread


@pytest.fixture(scope="module")
def setting(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    corpus = tinyworld_corpus(120, 20, demo_family_weights(), seed=0)
    return tiny_config(**model_overrides_for(tokenizer), max_position_embeddings=128), tokenizer, corpus


@pytest.fixture(scope="module")
def result(setting):
    return capacity_sweep(*setting, widths=WIDTHS, **SETTINGS)


def test_one_run_per_width_in_order_with_the_budget_of_steps(result, setting):
    _, _, corpus = setting
    assert [run.hidden_size for run in result.runs] == list(WIDTHS)
    assert [run.intermediate_size for run in result.runs] == [24, 48]  # tiny_config's 48 at width 32, in proportion
    assert [run.head_dim for run in result.runs] == [4, 8]  # 4 heads kept
    assert result.runs[0].num_parameters < result.runs[1].num_parameters
    for run in result.runs:
        assert run.steps == STEPS and len(run.train_losses) == len(run.elapsed) == STEPS
        assert run.tokens == STEPS * 4 * 64
    assert result.budget == "steps" and result.max_steps == STEPS and result.seconds is None
    assert result.num_heldout_problems == len(corpus.heldout_problems) == TinyWorld().summary()["num_heldout_problems"]


def test_the_loss_above_the_floor_is_validation_bits_per_byte_minus_the_exact_floor(result, setting):
    _, _, corpus = setting
    documents = list(corpus.validation_documents)
    source = math.fsum(d["nll_bits"] for d in documents) / sum(len(d["text"].encode()) + 1 for d in documents)
    assert result.source_bits_per_byte == pytest.approx(source, rel=1e-12)
    corpus_floor = TinyWorld(TinyWorldConfig(family_weights=demo_family_weights())).floor_bits_per_byte()
    assert result.floor_bits_per_byte == pytest.approx(corpus_floor, rel=1e-12)
    for run in result.runs:
        assert run.loss_above_floor == pytest.approx(run.validation_bits_per_byte - source, abs=1e-9)
        assert run.loss_above_floor > 0  # a few steps are far from the truth
        assert 0.0 <= run.heldout_exact_match <= 1.0
        assert -1.0 <= run.parallelism <= 1.0 and -1.0 <= run.parallelism_baseline <= 1.0


def test_same_seed_same_runs_and_the_global_rng_is_left_alone(result, setting):
    state = torch.get_rng_state()
    again = capacity_sweep(*setting, widths=WIDTHS[:1], **SETTINGS)
    assert torch.equal(torch.get_rng_state(), state)
    assert again.runs[0].train_losses == result.runs[0].train_losses
    assert again.runs[0].loss_above_floor == result.runs[0].loss_above_floor


def test_a_seconds_budget_trains_until_it_is_spent(setting):
    timed = capacity_sweep(*setting, widths=(16,), seconds=0.2, block_size=64, batch_size=4)
    run = timed.runs[0]
    assert timed.budget == "seconds" and timed.max_steps is None
    assert run.steps >= 1 and run.train_seconds >= 0.2 and run.elapsed[-1] == run.train_seconds
    assert run.steps == 1 or run.elapsed[-2] < 0.2  # the last step started within the budget


def step_flops(config, width: int, block_size: int, batch_size: int) -> float:
    """One step's training FLOPs by hand: 6 x the matmul parameters per token (the input embedding is a lookup
    unless the head shares it) plus the attention term, times the step's tokens."""
    model = AutoModelForCausalLM.from_config(width_config(config, width))
    matmul = sum(p.numel() for p in model.parameters())
    if not config.tie_word_embeddings:
        matmul -= model.get_input_embeddings().weight.numel()
    return training_flops_per_token(model.config, matmul, block_size) * block_size * batch_size


def test_a_flops_budget_gives_each_width_the_whole_steps_that_fit_and_is_deterministic(setting):
    config = setting[0]
    cost = {width: step_flops(config, width, 64, 4) for width in WIDTHS}
    budget = 6.5 * cost[32]  # width 32: 6 steps; width 16: more, in the same compute
    options = dict(widths=WIDTHS, flops=budget, block_size=64, batch_size=4, learning_rate=1e-2, seed=0)
    result = capacity_sweep(*setting, **options)
    assert result.budget == "flops" and result.flops == budget and result.seconds is None and result.max_steps is None
    steps = [run.steps for run in result.runs]
    assert steps == [int(budget // cost[16]), 6] and steps[0] > steps[1]
    for run, width in zip(result.runs, WIDTHS, strict=True):
        assert run.train_flops == pytest.approx(run.steps * cost[width], rel=1e-12)
        assert budget - cost[width] < run.train_flops <= budget  # not one more step would fit
        assert run.tokens == run.steps * 4 * 64
    again = capacity_sweep(*setting, **options)  # equal compute is reproducible, unlike equal time
    assert [run.train_losses for run in again.runs] == [run.train_losses for run in result.runs]
    assert [run.loss_above_floor for run in again.runs] == [run.loss_above_floor for run in result.runs]


def test_width_config_keeps_layers_and_heads(setting):
    config = width_config(setting[0], 64)
    assert (config.hidden_size, config.intermediate_size, config.head_dim) == (64, 96, 16)
    assert config.num_hidden_layers == setting[0].num_hidden_layers
    assert config.num_attention_heads == setting[0].num_attention_heads


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(widths=("16", 32), max_steps=2), "widths"),
    (dict(widths=(16, 16), max_steps=2), "widths"),
    (dict(widths=(18,), max_steps=2), "multiple of the model's 4 attention heads"),
    (dict(widths=(16,), seconds=0.0), "seconds"),
    (dict(widths=(16,), seconds=1.0, max_steps=2), "not both"),
    (dict(widths=(16,), max_steps=0), "max_steps"),
    (dict(widths=(16,), flops=0.0), "flops=0.0 is not a positive budget"),
    (dict(widths=(16,), flops=1e12, max_steps=2), "not several"),
    (dict(widths=(16, 32), flops=1e3), "flops=1e\\+03 buys width 16 no whole step"),
])  # fmt: skip
def test_bad_inputs_are_one_line_insight_errors(setting, kwargs, match):
    with pytest.raises(InsightError, match=match):
        capacity_sweep(*setting, **kwargs)


def test_the_plot_is_written(result, tmp_path):
    path = plot_capacity(result, tmp_path / "capacity.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


CLI_BUDGET = ["--widths", "16,32", "--max_steps", "4", "--block_size", "32", "--batch_size", "4",
              "--documents", "100", "--eval_documents", "10"]  # fmt: skip


def test_cli_report_and_json_on_the_debug_preset(capsys, tmp_path):
    main(["capacity", "debug", *CLI_BUDGET, "--output_dir", str(tmp_path)])
    report = capsys.readouterr().out
    assert "preset debug" in report and "each trained for 4 steps" in report
    rows = [line.split() for line in report.splitlines() if line.split()[:1] in (["16"], ["32"])]
    assert [(row[0], row[2], row[3]) for row in rows] == [("16", "4", "512"), ("32", "4", "512")]  # width steps tokens
    assert (tmp_path / "capacity.png").exists()
    main(["capacity", "debug", *CLI_BUDGET, "--output_dir", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert [run["hidden_size"] for run in data["runs"]] == [16, 32] and data["budget"] == "steps"


def test_cli_flops_budget_reports_equal_compute(capsys, tmp_path):
    budget = ["--widths", "16,32", "--flops", "2e9", "--block_size", "32", "--batch_size", "4", "--documents", "100",
              "--eval_documents", "10"]  # fmt: skip
    main(["capacity", "debug", *budget, "--output_dir", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["budget"] == "flops" and data["flops"] == 2e9
    narrow, wide = data["runs"]
    assert narrow["steps"] > wide["steps"] >= 1 and all(2e9 / 2 < run["train_flops"] <= 2e9 for run in data["runs"])
    main(["capacity", "debug", *budget, "--output_dir", str(tmp_path)])
    report = capsys.readouterr().out
    assert "each trained for 2e+09 training FLOPs" in report
    rows = [line.split() for line in report.splitlines() if line.split()[:1] in (["16"], ["32"])]
    expected = [(run["steps"], pytest.approx(run["train_flops"], rel=1e-2)) for run in data["runs"]]
    expected = [(run["steps"], pytest.approx(run["train_flops"], rel=1e-2)) for run in data["runs"]]
    assert [(int(row[2]), float(row[5])) for row in rows] == expected  # width params steps tokens seconds FLOPs


def test_cli_bad_widths_is_a_one_line_error(tmp_path, capsys):
    message = cli_user_error(["explain", "capacity", "debug", "--widths", "32,x", "--output_dir", str(tmp_path)],
                             capsys)  # fmt: skip
    assert "--widths" in message
