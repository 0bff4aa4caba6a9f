"""Sharded training for real on CPU: FSDP2 (and DeepSpeed ZeRO-2/3 where deepspeed is installed) with 2 processes
under `accelerate launch` and the repository's CPU configs. The losses, probes and evaluations equal the 1-process run
with the same global batch, a run resumed from a sharded checkpoint equals the uninterrupted one bit for bit, and the
final model folder holds the whole trained weights, which `from_pretrained` loads.

Tolerance against one process: fp32 throughout; with the same 8 samples per step only the order of the floating-point
sums differs (each process sums its half of the batch, then the gradients are reduce-scattered and averaged), which
moved the losses by at most 3e-7 relative (step 1: 5.783575058 vs 5.783575535). rel=1e-5 leaves room for that and
catches real differences: one extra optimizer step (a probe that stepped the optimizer) moved step 3 by 1.2e-3, and a
gradient off by the process count doubles or halves the logged gradient norm.

Each case is two 2-process launches (about 45 s on 2 cores). The DeepSpeed cases need the `deepspeed` extra and are
skipped without it.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import REPO_ROOT
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from hf_tinyllm.training import parse_train_arguments, train

CONFIGS = REPO_ROOT / "configs" / "accelerate"
TIMING_KEYS = {"tokens_per_s", "mfu", "probe/seconds"}
needs_deepspeed = pytest.mark.skipif(
    importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed (pip install -e .[deepspeed])"
)


def run_args(output_dir: Path, tokenizer_dir: str, per_device_batch_size: int, *extra: str) -> list[str]:
    """4 steps with a checkpoint, an evaluation and the learning probes at step 2 (mid-run) and step 4."""
    return [
        "--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "600", "--block_size", "32",
        "--per_device_batch_size", str(per_device_batch_size), "--max_steps", "4", "--warmup_steps", "2",
        "--learning_rate", "3e-3", "--save_steps", "2", "--eval_steps", "2", "--eval_documents", "4",
        "--probe_steps", "2", "--probe_documents", "2", "--probe_problems", "2", "--logging_steps", "1",
        "--report_to", "none", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def launch(config: str, output_dir: Path, tokenizer_dir: str, *extra: str) -> None:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{config}.yaml"),
           "scripts/train.py", *run_args(output_dir, tokenizer_dir, 4, *extra)]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]


def records(output_dir: Path) -> dict[tuple[int, str], dict]:
    """The logged rows by (step, kind), kind being loss, probe or eval; timings left out."""
    rows = map(json.loads, (output_dir / "logs" / "metrics.jsonl").read_text().splitlines())
    return {(row["step"], kind(row)): {k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows}


def kind(row: dict) -> str:
    return "loss" if "loss" in row else next(k for k in row if k != "step").split("/")[0]


def summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "model" / "training_summary.json").read_text())


def checkpoint_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The whole weights in a sharded checkpoint, gathered here from its per-process files by the format's own tool."""
    if (checkpoint / "pytorch_model_fsdp_0").is_dir():  # torch.distributed.checkpoint, one file per process
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(checkpoint / "pytorch_model_fsdp_0", Path(tmp) / "model.pt")
            return torch.load(Path(tmp) / "model.pt")["model"]
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    return get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tokenizer_dir) -> Path:
    """The reference: one process, 8 samples per step."""
    output_dir = tmp_path_factory.mktemp("one") / "run"
    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh Accelerator in this process
    train(*parse_train_arguments(run_args(output_dir, tokenizer_dir, 8)))
    return output_dir


# Under DeepSpeed the sparsity probe replays a fresh AdamW, not the run's (its partitioned state is not gathered).
DEEPSPEED_DIFFERS = {"probe/rows_changed_by_adamw"}


@pytest.mark.parametrize(
    "config, distributed_type, differs",
    [
        pytest.param("fsdp2_cpu", "FSDP", set(), id="fsdp2"),
        pytest.param("deepspeed_zero2_cpu", "DEEPSPEED", DEEPSPEED_DIFFERS, id="zero2", marks=needs_deepspeed),
        pytest.param("deepspeed_zero3_cpu", "DEEPSPEED", DEEPSPEED_DIFFERS, id="zero3", marks=needs_deepspeed),
    ],
)
def test_two_sharded_processes_match_one_resume_exactly_and_save_whole_weights(
    config, distributed_type, differs, one_process, tmp_path, tokenizer_dir
):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    launch(config, straight, tokenizer_dir)
    launch(config, resumed, tokenizer_dir, "--resume_from_checkpoint", str(straight / "checkpoints" / "checkpoint-2"))
    hardware = summary(straight)["hardware"]
    assert hardware["num_processes"] == 2 and hardware["distributed_type"] == f"DistributedType.{distributed_type}"

    # Same global batch: the losses, and the probes and evaluations run on the sharded model, equal one process's.
    one, two = records(one_process), records(straight)
    assert one.keys() == two.keys()
    assert sorted(key for key in two if key[1] != "loss") == [(0, "probe"), (2, "eval"), (2, "probe"), (4, "eval"),
                                                             (4, "probe")]  # fmt: skip
    for key, row in one.items():
        expected = {name: value for name, value in row.items() if name not in differs}
        assert {name: two[key][name] for name in expected} == pytest.approx(expected, rel=1e-5, abs=1e-7), key

    # Resumed from the sharded checkpoint of step 2: steps 3 and 4 exactly as uninterrupted, to the last bit.
    again = records(resumed)
    assert again == {key: row for key, row in two.items() if key[0] > 2}

    # The final folder holds the whole trained weights: those gathered from the final sharded checkpoint.
    model = AutoModelForCausalLM.from_pretrained(straight / "model").eval()
    gathered = AutoModelForCausalLM.from_config(model.config)
    gathered.load_state_dict(checkpoint_weights(straight / "checkpoints" / "checkpoint-4"), strict=False)
    gathered.tie_weights()
    ids = torch.randint(3, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, gathered.eval()(ids).logits)
    final, final_resumed, final_one = (load_file(d / "model" / "model.safetensors") for d in (straight, resumed,
                                                                                              one_process))  # fmt: skip
    assert final.keys() == final_resumed.keys() == final_one.keys()
    for name in final:
        assert torch.equal(final_resumed[name], final[name]), name
        torch.testing.assert_close(final[name], final_one[name], rtol=1e-4, atol=1e-6)
