"""The Accelerate training loop: exact resume, gradient accumulation, two processes, signals, checkpoints, NaN guard,
YAML configs, bad arguments, final artifacts."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import REPO_ROOT
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_tinyllm.training import NonFiniteLossError, parse_train_arguments, train
from hf_tinyllm.training.checkpoint import checkpoints, resolve_checkpoint, save_checkpoint


def small_run(output_dir, tokenizer_dir, *extra: str) -> list[str]:
    return [
        "--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "600", "--block_size", "32",
        "--per_device_batch_size", "4", "--max_steps", "8", "--warmup_steps", "2", "--learning_rate", "3e-3",
        "--eval_steps", "0", "--eval_documents", "10", "--logging_steps", "1", "--report_to", "none",
        "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip


def run(argv: list[str]) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh Accelerator per run in this process
    return train(*parse_train_arguments(argv))


def losses(output_dir, key: str = "loss") -> dict[int, float]:
    """The logged `key` (loss, grad_norm, ...) per step."""
    lines = (output_dir / "logs" / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r[key] for r in map(json.loads, lines) if key in r}


def assert_same_steps(a, b, rel: float = 1e-5) -> None:
    """Per step, the same loss and the same gradient norm: AdamW and clipping hide a constant gradient scale from the
    losses (a backward loss scaled by 0.5 moved them by under 2e-7), never from the gradient norm."""
    for key in ("loss", "grad_norm"):
        left, right = losses(a, key), losses(b, key)
        assert left.keys() == right.keys() and left, key
        for step in left:
            assert right[step] == pytest.approx(left[step], rel=rel), (key, step)


def printed_summary(stdout: str) -> dict:
    """The JSON summary scripts/train.py prints last (an indented object starting on a line of its own)."""
    return json.loads(stdout[stdout.rindex("\n{\n") :])


def final_weights(output_dir) -> dict[str, torch.Tensor]:
    return load_file(checkpoints(output_dir)[-1] / "model.safetensors")


# What a resume must restore: the random stream of dropout (on in the attention and the residual branches), the data
# order across epoch boundaries (30 documents make about 3 steps of 2 x 4 blocks an epoch: the run stops in the first
# epoch and ends in a later one) and the accumulation of 2 micro-batches per step.
RESUME_STRESS = ["--tinyworld_documents", "30", "--gradient_accumulation_steps", "2", "--max_steps", "10",
                 "--model_overrides", '{"residual_dropout": 0.1, "attention_dropout": 0.1}']  # fmt: skip


def test_resumed_run_reproduces_the_uninterrupted_run_bit_for_bit(tmp_path, tokenizer_dir):
    straight_summary = run(small_run(tmp_path / "straight", tokenizer_dir, *RESUME_STRESS))
    first = run(small_run(tmp_path / "resumed", tokenizer_dir, *RESUME_STRESS, "--stop_after_steps", "2"))
    assert first["steps"] == 2 and not first["finished"]
    assert [p.name for p in checkpoints(tmp_path / "resumed")] == ["checkpoint-2"]
    second = run(small_run(tmp_path / "resumed", tokenizer_dir, *RESUME_STRESS, "--resume_from_checkpoint", "latest"))
    assert second["finished"] and second["steps"] == 10
    assert straight_summary["steps"] == 10
    progress = [sorted(p.glob("custom_checkpoint_*.pkl"))[-1] for p in checkpoints(tmp_path / "resumed")]
    epochs = [torch.load(path)["epoch"] for path in progress]  # TrainingProgress, registered last
    assert epochs[0] == 0 and epochs[-1] >= 1  # stopped in the first epoch, finished in a later one
    straight, resumed = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert sorted(resumed) == list(range(1, 11))
    assert resumed == straight  # equal floats, step for step
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_accumulation_4x2_equals_1x8(tmp_path, tokenizer_dir):
    run(small_run(tmp_path / "full", tokenizer_dir, "--per_device_batch_size", "8", "--max_steps", "4"))
    run(small_run(tmp_path / "accum", tokenizer_dir, "--per_device_batch_size", "2", "--gradient_accumulation_steps",
                  "4", "--max_steps", "4"))  # fmt: skip
    assert losses(tmp_path / "full").keys() == {1, 2, 3, 4}
    assert_same_steps(tmp_path / "full", tmp_path / "accum")
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "accum")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


CONSTANT_LR = ["--warmup_steps", "0", "--lr_scheduler_type", "constant"]  # a schedule that ignores max_steps
NO_GPU = {"CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}


def wait_for_steps(output_dir, steps: int, process: subprocess.Popen, timeout: float = 240) -> None:
    metrics = output_dir / "logs" / "metrics.jsonl"
    deadline = time.time() + timeout
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= steps):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.time() < deadline, f"no {steps} logged steps within {timeout} s"
        time.sleep(0.2)


def test_sigint_finishes_the_step_and_leaves_a_resumable_checkpoint(tmp_path, tokenizer_dir):
    """Ctrl-C (SIGINT, here sent to this process once 3 steps are logged) ends the run after the current step with a
    checkpoint, instead of a KeyboardInterrupt that loses the work since the last save."""
    output = tmp_path / "sig"
    metrics = output / "logs" / "metrics.jsonl"
    finished = threading.Event()

    def interrupt_after_three_steps() -> None:
        while not finished.wait(0.05):
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                os.kill(os.getpid(), signal.SIGINT)
                return

    threading.Thread(target=interrupt_after_three_steps, daemon=True).start()
    try:
        summary = run(small_run(output, tokenizer_dir, "--max_steps", "100000", "--warmup_steps", "0"))
    finally:
        finished.set()
    assert summary["stopped_by"] == "SIGINT" and not summary["finished"]
    assert summary["steps"] >= 3 and summary["steps"] == max(losses(output))
    assert [p.name for p in checkpoints(output)] == [f"checkpoint-{summary['steps']}"]
    resumed = run(small_run(output, tokenizer_dir, "--resume_from_checkpoint", "latest", "--warmup_steps", "0",
                            "--max_steps", str(summary["steps"] + 2)))  # fmt: skip
    assert resumed["finished"] and resumed["steps"] == summary["steps"] + 2
    assert sorted(losses(output)) == list(range(1, summary["steps"] + 3))


def launch(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, **NO_GPU}
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def outcome(process: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """stdout and stderr of a run that must end within `timeout` s; a hung run is killed, workers included (the
    launcher starts them in sessions of their own), and fails the test."""
    import psutil

    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        stdout, stderr = process.communicate()
        pytest.fail(f"the run hung ({timeout:.0f} s) and was killed:\n{stdout[-2000:]}\n{stderr[-3000:]}")


def rank(launcher: subprocess.Popen, number: int):
    """The worker process of rank `number` under `launcher`."""
    import psutil

    workers = {p.environ().get("RANK"): p for p in psutil.Process(launcher.pid).children(recursive=True)
               if p.environ().get("RANK") is not None}  # fmt: skip
    assert set(workers) == {"0", "1"}
    return workers[str(number)]


def test_a_signal_to_one_rank_or_to_the_launcher_stops_both_ranks_at_the_same_step(tmp_path, tokenizer_dir):
    """Two processes, launched with the shipped configs/accelerate/cpu_2proc.yaml. SIGTERM to rank 1 alone: rank 0
    never sees a signal, yet both stop after the same step with one checkpoint (a rank stopping alone would leave the
    other in a mismatched collective: the run hangs, and `outcome` fails the test). torchrun resumes them; SIGTERM to
    the launcher (what a scheduler's preemption sends) stops both again. Every step's loss and gradient norm, and the
    weights, equal those of one process with the same global batch."""
    two = tmp_path / "two"
    argv = small_run(two, tokenizer_dir, "--per_device_batch_size", "4", "--max_steps", "100000", *CONSTANT_LR)
    launcher = launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                       str(REPO_ROOT / "configs/accelerate/cpu_2proc.yaml"), "scripts/train.py", *argv])  # fmt: skip
    wait_for_steps(two, 3, launcher)
    rank(launcher, 1).send_signal(signal.SIGTERM)
    stdout, stderr = outcome(launcher)
    assert launcher.returncode == 0, stderr[-3000:]
    assert stdout.count("\n{\n") == 1  # one summary per run: rank 0's, printed after the collective final checkpoint
    first = printed_summary(stdout)
    assert first["stopped_by"] == "a signal to another process" and first["hardware"]["num_processes"] == 2
    assert [p.name for p in checkpoints(two)] == [f"checkpoint-{first['steps']}"]
    assert resolve_checkpoint("latest", two).name == f"checkpoint-{first['steps']}"  # complete: its manifest checks

    torchrun = launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "scripts/train.py",
                       *argv, "--resume_from_checkpoint", "latest"])  # fmt: skip
    wait_for_steps(two, first["steps"] + 2, torchrun)
    torchrun.send_signal(signal.SIGTERM)
    stdout, stderr = outcome(torchrun)
    assert "\n{\n" in stdout, stderr[-3000:]
    second = printed_summary(stdout)
    assert second["stopped_by"] == "SIGTERM" and "MULTI_CPU" in second["hardware"]["distributed_type"]
    steps = second["steps"]
    assert [p.name for p in checkpoints(two)] == [f"checkpoint-{first['steps']}", f"checkpoint-{steps}"]

    run(small_run(tmp_path / "one", tokenizer_dir, "--per_device_batch_size", "8", "--max_steps", str(steps),
                  *CONSTANT_LR))  # fmt: skip
    assert sorted(losses(two)) == list(range(1, steps + 1))
    assert_same_steps(tmp_path / "one", two)  # only the order of the floating-point sums differs
    a, b = final_weights(tmp_path / "one"), final_weights(two)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, tokenizer_dir, monkeypatch):
    output = tmp_path / "crash"
    run(small_run(output, tokenizer_dir, "--stop_after_steps", "2"))
    good = resolve_checkpoint("latest", output)
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    from accelerate import Accelerator

    def dies_midway(self, output_dir, **kwargs):
        with open(os.path.join(output_dir, "model.safetensors"), "wb") as f:
            f.write(b"half")
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(Accelerator, "save_state", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(Accelerator(cpu=True), output, step=3, keep=2)
    assert resolve_checkpoint("latest", output) == good
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert [p.name for p in checkpoints(output)] == ["checkpoint-2"]


def test_non_finite_loss_stops_with_the_step_named_and_keeps_the_last_good_checkpoint(tmp_path, tokenizer_dir):
    output = tmp_path / "nan"
    explode = ["--learning_rate", "1e30", "--warmup_steps", "0", "--lr_scheduler_type", "constant", "--save_steps",
               "1", "--max_grad_norm", "0", "--optimizer", "adamw"]  # fmt: skip
    with pytest.raises(
        NonFiniteLossError, match=r"Non-finite loss or gradient \(loss=.*\) at step \d+; stopped without saving"
    ):
        run(small_run(output, tokenizer_dir, *explode))
    good = checkpoints(output)
    assert good, "the steps before the explosion were checkpointed"
    weights = load_file(good[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    with pytest.raises(NonFiniteLossError):
        run(small_run(tmp_path / "skips", tokenizer_dir, *explode, "--skip_nonfinite_steps", "2"))


def test_skip_nonfinite_steps_skips_exactly_the_bad_steps(tmp_path, tokenizer_dir, monkeypatch, capsys):
    """One poisoned forward (the 3rd): with --skip_nonfinite_steps 2 the run skips that one step and finishes."""
    import hf_tinyllm.training.loop as loop

    build, forwards = loop.build_training_model, []

    def with_one_poisoned_forward(*args, **kwargs):
        model = build(*args, **kwargs)

        def poison(module, inputs, output):
            forwards.append(1)
            if len(forwards) == 3:
                output.loss = output.loss * float("nan")

        model.register_forward_hook(poison)
        return model

    monkeypatch.setattr(loop, "build_training_model", with_one_poisoned_forward)
    summary = run(small_run(tmp_path / "skip", tokenizer_dir, "--skip_nonfinite_steps", "2"))
    assert summary["finished"] and summary["steps"] == 8 and summary["skipped_steps"] == 1
    assert "Skipped step 3: loss=nan" in capsys.readouterr().out
    weights = load_file(checkpoints(tmp_path / "skip")[-1] / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_yaml_config_with_flag_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("preset: micro\nmax_steps: 123\nwarmup_steps: 5\nlearning_rate: 0.001\noutput_dir: out/x\n")
    model, _data, optim, run_args, _probe = parse_train_arguments(["--config", str(config), "--max_steps", "7"])
    assert (model.preset, optim.max_steps, optim.learning_rate, run_args.output_dir) == ("micro", 7, 0.001, "out/x")
    model, _, optim, _, _ = parse_train_arguments([str(config)])
    assert (model.preset, optim.max_steps) == ("micro", 123)
    model, _, optim, _, _ = parse_train_arguments([str(config), "--preset", "nano"])
    assert (model.preset, optim.max_steps) == ("nano", 123)
    (tmp_path / "bad.yaml").write_text("max_stpes: 3\n")
    with pytest.raises(ValueError, match=r"unknown fields \['max_stpes'\]"):
        parse_train_arguments(["--config", str(tmp_path / "bad.yaml")])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_train_arguments(["--config", str(tmp_path / "missing.yaml")])


def test_bad_arguments_give_clear_errors(tmp_path, tokenizer_dir):
    with pytest.raises(ValueError, match="optimizer='sgd' is not supported"):
        run(small_run(tmp_path / "a", tokenizer_dir, "--optimizer", "sgd"))
    with pytest.raises(ValueError, match="block_size=512 is larger than the max_position_embeddings=128 of the"):
        run(small_run(tmp_path / "b", tokenizer_dir, "--block_size", "512"))
    with pytest.raises(ValueError, match="cannot fill one batch of 100000"):
        run(small_run(tmp_path / "c", tokenizer_dir, "--per_device_batch_size", "100000"))
    with pytest.raises(ValueError, match="--preset 'giant' is unknown"):
        run(small_run(tmp_path / "d", tokenizer_dir, "--preset", "giant"))
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        run(small_run(tmp_path / "e", tokenizer_dir, "--resume_from_checkpoint", "latest"))


def test_muon_and_the_final_model_folder(tmp_path, tokenizer_dir):
    output = tmp_path / "muon"
    summary = run(small_run(output, tokenizer_dir, "--optimizer", "muon", "--eval_documents", "5"))
    assert summary["finished"] and summary["tokens_seen"] == 8 * 4 * 32
    model_dir = output / "model"
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "training_summary.json",
            "loss_curve.png", "modeling_tinyllm.py"} <= {p.name for p in model_dir.iterdir()}  # fmt: skip
    saved = json.loads((model_dir / "training_summary.json").read_text())
    assert saved["steps"] == 8 and "bits_per_byte" in saved["final_metrics"] and saved["hardware"]["device"] == "cpu"
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.config.use_cache is True and model.generation_config.pad_token_id == tokenizer.pad_token_id
    ids = tokenizer("two plus three equals", return_tensors="pt")
    assert model.generate(**ids, max_new_tokens=3, do_sample=False).shape[1] == ids["input_ids"].shape[1] + 3
    first_losses = losses(output)
    assert first_losses[8] < first_losses[1]


def test_loss_curve_panels_say_when_too_few_points_were_logged():
    """A panel with one point or none (the Trainer's default logging_steps=500 over 200 steps; a single final
    evaluation) says so and how to log more, instead of drawing an empty or single-dot panel silently."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_tinyllm.training.artifacts import _plot_series

    _, (empty, single, curve) = plt.subplots(1, 3)
    _plot_series(empty, [], "training loss", "more often: lower logging_steps")
    _plot_series(single, [(200, 0.326)], "validation bits per byte", "a curve: eval_steps")
    _plot_series(curve, [(0, 2.0), (10, 1.0)], "training loss", "more often: lower logging_steps")
    assert [t.get_text() for t in empty.texts] == [
        "training loss: nothing logged;\nfor more often: lower logging_steps"
    ]
    assert "one point (step 200: 0.326)" in single.texts[0].get_text() and single.lines[0].get_marker() == "o"
    assert not curve.texts and len(curve.lines[0].get_xdata()) == 2
    plt.close("all")


def test_every_shipped_accelerate_config_is_one_the_loop_accepts():
    """The GPU configs cannot run here; they must at least load as Accelerate reads them and agree with what the
    loop requires (the CPU ones are launched by the multi-process tests)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from hf_tinyllm.modeling_tinyllm import TinyLLMDecoderLayer
    from hf_tinyllm.training import OptimArguments

    paths = sorted((REPO_ROOT / "configs/accelerate").glob("*.yaml"))
    assert {p.stem for p in paths} >= {"cpu", "cpu_2proc", "ddp", "fsdp2", "fsdp2_cpu", "deepspeed_zero2",
                                       "deepspeed_zero2_cpu", "deepspeed_zero3", "deepspeed_zero3_cpu"}  # fmt: skip
    defaults = OptimArguments()
    for path in paths:
        config = load_config_from_file(str(path))
        assert config.mixed_precision in ("no", "bf16", "fp16") and config.num_processes >= 1, path.name
        if config.distributed_type == DistributedType.DEEPSPEED:  # the loop refuses other values (sharding.py)
            assert config.deepspeed_config["gradient_accumulation_steps"] == 1, path.name
            assert config.deepspeed_config["gradient_clipping"] == defaults.max_grad_norm, path.name
        if config.distributed_type == DistributedType.FSDP:
            assert config.fsdp_config["fsdp_version"] == 2, path.name  # FSDP1 is refused
            assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == TinyLLMDecoderLayer.__name__
        if path.stem.endswith("cpu") or path.stem == "cpu_2proc":
            assert config.mixed_precision == "no", path.name  # fp32 on CPU
