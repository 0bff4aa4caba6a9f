"""`tinyllm` runs every script's job (hf_tinyllm.commands), for users with an installed package and no checkout:
the subcommand and its script write the same files and print the same report."""

import json

import pytest
from conftest import script_output
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from hf_tinyllm.cli import COMMANDS, main


def cli_output(argv: list[str], capsys) -> str:
    capsys.readouterr()
    main(argv)
    return capsys.readouterr().out


def test_generate_tinyworld_and_tokenizer_subcommands_match_their_scripts(tmp_path, capsys):
    corpus = ["--num_train_documents", "60", "--num_validation_documents", "10"]
    by_cli = cli_output(["generate-tinyworld", "--output_dir", str(tmp_path / "cli"), *corpus], capsys)
    by_script = script_output("scripts/generate_tinyworld.py", ["--output_dir", str(tmp_path / "script"), *corpus],
                              capsys)  # fmt: skip
    assert by_cli.replace(str(tmp_path / "cli"), "X") == by_script.replace(str(tmp_path / "script"), "X")
    assert json.loads(by_cli.split(":", 1)[1])["num_train_documents"] == 60
    for split in ("train", "validation"):
        assert (tmp_path / "cli" / f"{split}.jsonl").read_bytes() == (
            tmp_path / "script" / f"{split}.jsonl"
        ).read_bytes()

    tokenizer = [
        "--dataset",
        str(tmp_path / "cli" / "train.jsonl"),
        "--vocab_size",
        "300",
        "--add_prefix_space",
        "true",
    ]
    assert "Trained a 300-token byte-level BPE" in cli_output(["tokenizer", *tokenizer, "--output_dir",
                                                               str(tmp_path / "tok")], capsys)  # fmt: skip
    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.tokenize("seven") == loaded.tokenize(" seven")  # the prefix-space flag reached train_tokenizer


def test_convert_and_train_trainer_subcommands(trained_tiny_dir, tokenizer_dir, tmp_path, capsys):
    printed = cli_output(["convert", "--source", str(trained_tiny_dir), "--output_dir", str(tmp_path / "llama"),
                          "--to_llama"], capsys)  # fmt: skip
    assert printed.startswith(f"Wrote {tmp_path / 'llama'}: ")
    assert type(AutoModelForCausalLM.from_pretrained(tmp_path / "llama")) is LlamaForCausalLM

    printed = cli_output(["train-trainer", "--preset", "debug", "--tokenizer", tokenizer_dir,
                          "--tinyworld_documents", "200", "--block_size", "32", "--per_device_train_batch_size", "4",
                          "--max_steps", "2", "--report_to", "none", "--use_cpu", "--disable_tqdm", "true",
                          "--save_strategy", "no", "--output_dir", str(tmp_path / "trained")], capsys)  # fmt: skip
    metrics = json.loads(printed[printed.rindex("\n{\n") :])  # the final report, after the Trainer's log lines
    assert "eval_loss" in metrics
    assert (tmp_path / "trained" / "model.safetensors").is_file()


def test_an_unknown_subcommand_lists_them_all(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["nope"])
    assert exit_info.value.code == 2
    usage = capsys.readouterr().err
    assert all(name in usage for name in ("train-trainer", "train-sft", "tokenizer", "generate-tinyworld", "convert"))


def test_train_sft_subcommand_is_the_sft_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train-sft", "--help"])
    assert exit_info.value.code == 0
    assert "--model" in capsys.readouterr().out  # the saved model to fine-tune: SFTArguments, not another parser


@pytest.mark.parametrize("command", ["", *sorted(COMMANDS)])
def test_every_subcommand_prints_its_help(command, capsys):
    """`tinyllm [COMMAND] --help` prints usage and exits 0 (a stray % in a help text made argparse crash)."""
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"] if command else ["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out
