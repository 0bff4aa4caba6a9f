"""One edge for user errors: every bad input to a script or `tinyllm` subcommand ends in a single
`error: <what and how to fix it>` line and exit status 2, before any work; `--debug` / TINYLLM_DEBUG=1 show the
traceback instead. The table holds every argument rule of the training script."""

import os
import random
import subprocess
import sys

import pytest
import torch
from accelerate.state import AcceleratorState
from conftest import REPO_ROOT, cli_user_error, expect_user_error, run_script, tiny_model
from transformers import AutoTokenizer

from hf_tinyllm.errors import entry_point, format_user_error
from hf_tinyllm.evaluation import evaluate_model, generate_answers


def script_user_error(script: str, argv: list[str], capsys) -> str:
    """`expect_user_error` for scripts/SCRIPT run in-process as `__main__`."""
    return expect_user_error(lambda: run_script(f"scripts/{script}", argv), capsys)


TRAIN_ARGUMENT_ERRORS = [
    (["--learning_rate", "-1"], "--learning_rate=-1.0 must be >= 0"),
    (["--max_steps", "0"], "--max_steps=0: nothing to train; pass --max_steps 1 or more"),
    (["--max_steps", "-3"], "--max_steps=-3 must be an integer >= 1"),
    (["--block_size", "100000"], "--block_size=100000 is larger than the max_position_embeddings=256 of the 'nano'"),
    (["--block_size", "1"], "--block_size=1 must be an integer >= 2"),
    (["--warmup_steps", "600", "--max_steps", "500"], "--warmup_steps=600 must be below --max_steps=500"),
    (["--per_device_batch_size", "0"], "--per_device_batch_size=0 must be an integer >= 1"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps=0 must be an integer >= 1"),
    (["--optimizer", "sgd"], "--optimizer='sgd' is not supported; choose one of ['adamw', 'muon']"),
    (["--lr_scheduler_type", "cosnie"], "--lr_scheduler_type='cosnie' is not supported; choose one of"),
    (["--mixed_precision", "fp8"], "--mixed_precision='fp8' is not supported; choose one of ['no', 'bf16', 'fp16']"),
    (["--adam_beta2", "1.5"], "--adam_beta2=1.5 must be in [0, 1)"),
    (["--weight_decay", "-0.1"], "--weight_decay=-0.1 must be >= 0"),
    (["--preset", "giant"], "--preset 'giant' is unknown; choose one of"),
    (["--attn_implementation", "magic"], "--attn_implementation='magic' is not supported"),
    (["--model_overrides", "{layers: 2}"], "--model_overrides is not valid JSON"),
    (["--validation_fraction", "1.5"], "--validation_fraction=1.5 must be in (0, 1)"),
    (["--resume_from_checkpoint", "no/such/checkpoint"], "--resume_from_checkpoint no/such/checkpoint is not a"),
    (["--output_dir", "README.md"], "--output_dir README.md is a file; pass a folder path"),
    (["--eval_documents", "0"], "--eval_documents=0 must be an integer >= 1"),
    (["--push_to_hub"], "--push_to_hub needs --hub_model_id user/name"),
    (["--probe_batch_size", "0"], "--probe_batch_size=0 must be an integer >= 1"),
    (["--config", "missing.yaml"], "Config file missing.yaml does not exist"),
    (["--max_stpes", "3"], "Some specified arguments are not used by the HfArgumentParser: ['--max_stpes', '3']"),
]


@pytest.mark.parametrize(
    ("argv", "message"), TRAIN_ARGUMENT_ERRORS, ids=[" ".join(a) for a, _ in TRAIN_ARGUMENT_ERRORS]
)
def test_train_script_argument_errors(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(REPO_ROOT)
    if "--output_dir" not in argv:
        argv = [*argv, "--output_dir", str(tmp_path / "run")]
    assert message in script_user_error("train.py", argv, capsys)
    assert not (tmp_path / "run").exists()  # refused before any work


def binary_file(folder):
    path = folder / "corpus.txt"
    path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    return path, f"{path} is not UTF-8 text (byte 0x"


def empty_file(folder):
    path = folder / "empty.txt"
    path.write_text("")
    return path, f"{path} has no text"


def damaged_checkpoint(folder):
    path = folder / "run" / "checkpoints" / "checkpoint-3"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"\x00" * 8)
    return path, f"The checkpoint {path} is damaged: {path / 'manifest.json'} is missing"


def not_a_tokenizer(folder):
    path = folder / "notes"
    path.mkdir()
    (path / "readme.txt").write_text("not a tokenizer")
    return path, f"{path} holds no tokenizer (tokenizer.json is missing): pass the folder `tinyllm tokenizer` wrote"


INPUT_ERRORS = {"binary dataset": ("--dataset", binary_file), "empty dataset": ("--dataset", empty_file),
                "damaged checkpoint": ("--resume_from_checkpoint", damaged_checkpoint),
                "not a tokenizer folder": ("--tokenizer", not_a_tokenizer)}  # fmt: skip


@pytest.mark.parametrize("case", sorted(INPUT_ERRORS))
def test_train_script_input_errors(case, capsys, monkeypatch, tmp_path, tokenizer_dir):
    flag, make = INPUT_ERRORS[case]
    path, message = make(tmp_path)
    small = ["--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "300", "--block_size", "32",
             "--per_device_batch_size", "4", "--max_steps", "4", "--warmup_steps", "1", "--report_to", "none",
             "--output_dir", str(tmp_path / "run")]  # fmt: skip
    AcceleratorState._reset_state(reset_partial_state=True)
    assert message in script_user_error("train.py", [*small, flag, str(path)], capsys)
    assert not (tmp_path / "run" / "model").exists()


def test_the_real_process_exits_2_with_one_line(tmp_path):
    """The whole edge in a real process (the debug switch is tested in-process below)."""
    cmd = [sys.executable, "scripts/train.py", "--learning_rate", "-1", "--output_dir", str(tmp_path / "run")]
    env = {k: v for k, v in os.environ.items() if k != "TINYLLM_DEBUG"}
    done = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --learning_rate=-1.0 must be >= 0."]


def test_debug_mode_and_what_counts_as_a_user_error(monkeypatch, capsys):
    @entry_point
    def fails(error: BaseException) -> None:
        raise error

    monkeypatch.setattr(sys, "argv", ["prog"])
    monkeypatch.delenv("TINYLLM_DEBUG", raising=False)
    missing = ModuleNotFoundError("No module named 'gradio'", name="gradio")
    for error in (ValueError("bad value"), FileNotFoundError("no such file"), missing):
        with pytest.raises(SystemExit) as exit_info:
            fails(error)
        assert exit_info.value.code == 2
    assert "pip install gradio" in capsys.readouterr().err
    with pytest.raises(KeyError):  # a bug keeps its traceback
        fails(KeyError("bug"))
    monkeypatch.setenv("TINYLLM_DEBUG", "1")
    with pytest.raises(ValueError, match="bad value"):
        fails(ValueError("bad value"))
    monkeypatch.delenv("TINYLLM_DEBUG")
    # `--debug VALUE` is transformers' TrainingArguments.debug: left to the script; a bare `--debug` is ours.
    monkeypatch.setattr(sys, "argv", ["prog", "--debug", "underflow_overflow"])
    with pytest.raises(SystemExit):
        fails(ValueError("bad value"))
    assert sys.argv == ["prog", "--debug", "underflow_overflow"]
    monkeypatch.setattr(sys, "argv", ["prog", "--debug", "--other"])
    with pytest.raises(ValueError):
        fails(ValueError("bad value"))
    assert sys.argv == ["prog", "--other"]
    assert format_user_error(FileNotFoundError(2, "No such file or directory", "x.txt")) == (
        "error: x.txt: No such file or directory"
    )


def test_tinyllm_without_a_command_is_usage_status_2(capsys):
    from hf_tinyllm.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2 and "usage: tinyllm" in capsys.readouterr().err


@pytest.fixture
def mismatched(word_tokenizer):
    """A 99-token word tokenizer with one extra word, next to a model that knows 99 tokens."""
    word_tokenizer.add_tokens(["zebra"])
    return tiny_model(), word_tokenizer


def test_token_ids_outside_the_vocabulary_are_named_by_evaluation(mismatched):
    model, tokenizer = mismatched
    with pytest.raises(ValueError, match="Token id 99 is outside the model's vocabulary of 99; the tokenizer does not"):
        evaluate_model(model, tokenizer, [{"text": "w5 zebra w6"}])
    with pytest.raises(ValueError, match="Token id 99 is outside the model's vocabulary of 99"):
        generate_answers(model, tokenizer, ["w5 zebra"])
    with torch.no_grad(), pytest.raises(IndexError):  # forward itself stays as in transformers: torch's IndexError
        model(torch.tensor([[99]]))


def test_token_ids_outside_the_vocabulary_are_a_cli_error(mismatched, tmp_path, capsys):
    model, tokenizer = mismatched
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    assert AutoTokenizer.from_pretrained(tmp_path / "model").convert_tokens_to_ids("zebra") == 99
    message = cli_user_error(["explain", "next", str(tmp_path / "model"), "--prompt", "w5 zebra",
                              "--output_dir", str(tmp_path / "out")], capsys)  # fmt: skip
    assert "Token id 99 is outside the model's vocabulary of 99" in message


def test_a_model_folder_without_its_tokenizer_is_one_line_naming_the_file(tmp_path, capsys):
    tiny_model().save_pretrained(tmp_path / "model")
    message = cli_user_error(["explain", "next", str(tmp_path / "model"), "--prompt", "w5",
                              "--output_dir", str(tmp_path / "out")], capsys)  # fmt: skip
    assert message == (
        f"error: {tmp_path / 'model'} holds no tokenizer (tokenizer.json is missing): pass the folder `tinyllm "
        "tokenizer` wrote, or a model folder saved with its tokenizer (a training run's model folder holds one)."
    )
