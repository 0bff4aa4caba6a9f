"""Batch-size sweep at equal tokens: the token accounting, identical starts, determinism, the learning-rate rule,
the plot, the TinyWorld blocks and the `tinyllm explain batching` command."""

import json

import numpy as np
import pytest
import torch
from conftest import cli_user_error, tiny_config

from hf_tinyllm import TinyLLMForCausalLM
from hf_tinyllm.data.packing import document_position_ids
from hf_tinyllm.explain import main
from hf_tinyllm.insight.batching import batch_size_sweep, plot_batching, tinyworld_blocks
from hf_tinyllm.insight.model_parts import InsightError
from hf_tinyllm.tokenization import load_tokenizer

T = 16
BOS = 1


def blocks(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, T) ids from a learnable repeating pattern with a document start (bos) every 8 tokens, and their
    document positions."""
    gen = torch.Generator().manual_seed(seed)
    start = torch.randint(0, 12, (rows, 1), generator=gen)
    ids = 10 + (start + torch.arange(T)) % 12
    ids[:, ::8] = BOS
    positions = torch.stack([torch.from_numpy(document_position_ids(row.numpy(), BOS)) for row in ids])
    return ids, positions


TRAIN, TRAIN_POS = blocks(40, seed=1)
VALID, VALID_POS = blocks(8, seed=2)


def sweep(**kwargs):
    settings = dict(batch_sizes=(2, 4), total_tokens=400, learning_rate=1e-2, eval_points=4, seed=0)
    return batch_size_sweep(tiny_config(), TRAIN, VALID, TRAIN_POS, VALID_POS, **{**settings, **kwargs})


@pytest.fixture(scope="module")
def result():
    return sweep()


def test_every_run_sees_the_same_tokens_in_tokens_over_batch_times_t_steps(result):
    assert result.total_tokens == 384  # 400 rounded down to a multiple of lcm(2, 4) * T = 64
    for run in result.runs:
        assert run.steps == 384 // (run.batch_size * T)
        assert len(run.train_losses) == run.steps
        assert run.tokens == [step * run.batch_size * T for step in range(1, run.steps + 1)]
        assert run.eval_tokens == [0, 128, 256, 384]
        assert [s * run.batch_size * T for s in run.eval_steps] == run.eval_tokens
        assert run.final_validation_loss == run.validation_losses[-1]
        late = np.asarray(run.train_losses[run.steps // 2 :])
        assert run.train_loss_noise == pytest.approx(np.diff(late).std())
    assert [run.steps for run in result.runs] == [12, 6]


def test_all_runs_start_from_the_same_weights_and_the_first_loss_is_the_models_own(result):
    torch.manual_seed(0)
    model = TinyLLMForCausalLM(tiny_config()).eval()
    with torch.no_grad():
        direct = model(input_ids=VALID, position_ids=VALID_POS, labels=VALID, use_cache=False).loss.item()
        without_positions = model(input_ids=VALID, labels=VALID, use_cache=False).loss.item()
    assert direct != pytest.approx(without_positions, abs=1e-4)  # so the check below also checks the positions
    for run in result.runs:
        assert run.validation_losses[0] == pytest.approx(direct, abs=1e-6)
    assert all(run.final_validation_loss < run.validation_losses[0] - 0.5 for run in result.runs)


def test_same_seed_same_sweep_and_the_global_rng_is_left_alone(result):
    state = torch.get_rng_state()
    again = sweep()
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(result.runs, again.runs, strict=True):
        assert a.train_losses == b.train_losses
        assert a.validation_losses == b.validation_losses
    assert sweep(seed=1).runs[0].train_losses != result.runs[0].train_losses


@pytest.mark.parametrize(("rule", "factor"), [("sqrt", 2.0), ("linear", 4.0), ("none", 1.0)])
def test_the_learning_rate_rule_is_applied_exactly(rule, factor):
    scaled = sweep(batch_sizes=(2, 8), total_tokens=256, lr_scaling=rule, eval_points=2)
    assert [run.learning_rate for run in scaled.runs] == [pytest.approx(1e-2, rel=1e-12),
                                                          pytest.approx(1e-2 * factor, rel=1e-12)]  # fmt: skip
    unscaled = sweep(batch_sizes=(2, 8), total_tokens=256, lr_scaling="none", eval_points=2)
    assert scaled.runs[0].train_losses == unscaled.runs[0].train_losses  # the smallest batch keeps the base rate
    assert (scaled.runs[1].train_losses == unscaled.runs[1].train_losses) == (rule == "none")


def test_bad_inputs_are_one_line_insight_errors():
    with pytest.raises(InsightError, match="total_tokens"):
        sweep(total_tokens=63)
    with pytest.raises(InsightError, match="batch_sizes"):
        sweep(batch_sizes=(0, 4))
    with pytest.raises(InsightError, match="lr_scaling"):
        sweep(lr_scaling="cubic")


def test_the_plot_is_written(result, tmp_path):
    path = plot_batching(result, tmp_path / "batching.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tinyworld_blocks_are_packed_documents(tokenizer_dir):
    tokenizer = load_tokenizer(tokenizer_dir)
    data = tinyworld_blocks(tokenizer, block_size=32, num_documents=100, seed=0)
    assert data.train.shape[1] == data.validation.shape[1] == 32
    assert data.train.shape == data.train_positions.shape and data.validation.shape == data.validation_positions.shape
    assert (data.train_positions[data.train == tokenizer.bos_token_id] == 0).all()
    assert (data.train == tokenizer.eos_token_id).any()


CLI_BUDGET = ["--total_tokens", "512", "--batch_sizes", "2,4", "--block_size", "16", "--documents", "200"]


def test_cli_report_on_the_debug_preset(capsys, tmp_path):
    main(["batching", "debug", *CLI_BUDGET, "--output_dir", str(tmp_path)])
    report = capsys.readouterr().out
    assert "preset debug" in report and "512 tokens per run" in report
    assert "     2     16" in report and "     4      8" in report  # batch, steps
    assert (tmp_path / "batching.png").exists()


def test_cli_json_on_a_trained_folder(capsys, tmp_path, trained_tiny_dir):
    main(["batching", str(trained_tiny_dir), *CLI_BUDGET, "--output_dir", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert data["total_tokens"] == 512
    assert [run["steps"] for run in data["runs"]] == [16, 8]
    assert data["runs"][0]["validation_losses"][0] == data["runs"][1]["validation_losses"][0]
    main(["batching", str(trained_tiny_dir), *CLI_BUDGET, "--output_dir", str(tmp_path)])
    assert "weights re-initialised" in capsys.readouterr().out


def test_cli_bad_batch_sizes_is_a_one_line_error(tmp_path, capsys):
    message = cli_user_error(["explain", "batching", "debug", "--batch_sizes", "4,x", "--output_dir", str(tmp_path)],
                             capsys)  # fmt: skip
    assert "--batch_sizes" in message
