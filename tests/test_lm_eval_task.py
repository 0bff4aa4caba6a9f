"""The TinyWorld lm-evaluation-harness task: lm_eval (in-process and its CLI) gives the held-out arithmetic exact match
of `evaluate_model`, answer by answer, and next-word scores that are the model's own log-probabilities."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import cli_user_error
from datasets import DatasetDict
from lm_eval import simple_evaluate
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_tinyllm.cli import main as cli_main
from hf_tinyllm.data import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.evaluation import arithmetic_exact_match, generate_answers
from hf_tinyllm.lm_eval_task import (
    ARITHMETIC_TASK,
    GROUP,
    NEXT_WORD_TASK,
    lm_eval_command,
    write_lm_eval_task,
)

NUM_DOCUMENTS = 20  # the validation documents of trained_tiny_dir's TinyWorld


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return write_lm_eval_task(tmp_path_factory.mktemp("lm_eval") / "tinyworld", num_documents=NUM_DOCUMENTS)


@pytest.fixture(scope="module")
def model_and_tokenizer(trained_tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir).eval()
    return model, AutoTokenizer.from_pretrained(trained_tiny_dir)


@pytest.fixture(scope="module")
def lm_eval_run(task_dir, trained_tiny_dir) -> tuple[HFLM, dict]:
    """`simple_evaluate` in this process, with the model arguments of the printed `lm_eval` command."""
    command = lm_eval_command(task_dir, trained_tiny_dir)
    lm = HFLM.create_from_arg_string(command[command.index("--model_args") + 1], {"batch_size": 32, "device": "cpu"})
    tasks = TaskManager(include_path=str(task_dir), include_defaults=False)
    results = simple_evaluate(model=lm, tasks=[GROUP], task_manager=tasks, log_samples=True, bootstrap_iters=0)
    return lm, results


def pipeline_world() -> DatasetDict:
    """The held-out problems and validation documents the training data hand to `evaluate_model`."""
    return tinyworld_dataset(TinyWorldConfig(num_train_documents=10, num_validation_documents=NUM_DOCUMENTS))


def samples(results: dict, task: str) -> list[dict]:
    return sorted(results["samples"][task], key=lambda sample: sample["doc_id"])


def test_arithmetic_exact_match_is_evaluate_models_answer_by_answer(lm_eval_run, model_and_tokenizer, task_dir):
    _, results = lm_eval_run
    model, tokenizer = model_and_tokenizer
    problems = read_jsonl(task_dir / "arithmetic.jsonl")
    assert problems == list(pipeline_world()["heldout_arithmetic"])  # every held-out problem, as in training
    ours = arithmetic_exact_match(model, tokenizer, problems)["exact_match"]
    theirs = results["results"][ARITHMETIC_TASK]["exact_match,strip"]
    assert theirs == pytest.approx(ours)
    assert 0 < ours < 1, "the comparison needs both right and wrong answers"
    answers = generate_answers(model, tokenizer, [p["prompt"] for p in problems])
    assert [s["filtered_resps"][0] for s in samples(results, ARITHMETIC_TASK)] == answers
    assert len(set(answers)) > 1, "the answers vary with the prompt (without bos, 3 of 84 differ)"


def test_lm_eval_sees_the_token_ids_evaluation_uses(lm_eval_run, model_and_tokenizer, task_dir):
    lm, _ = lm_eval_run
    _, tokenizer = model_and_tokenizer
    prompts = [p["prompt"] for p in read_jsonl(task_dir / "arithmetic.jsonl")[:8]]
    ids, _ = lm.tok_batch_encode(prompts)
    ours = tokenizer.pad(tokenizer(prompts), padding_side="left", return_tensors="pt")["input_ids"]
    assert torch.equal(ids, ours)
    assert (ids[:, 0] == tokenizer.bos_token_id).any()


@torch.no_grad()
def test_next_word_scores_are_the_models_log_probabilities(lm_eval_run, model_and_tokenizer, task_dir):
    _, results = lm_eval_run
    model, tokenizer = model_and_tokenizer
    examples = read_jsonl(task_dir / "next_word.jsonl")
    assert [e["text"] for e in examples] == pipeline_world()["validation"]["text"]  # evaluate_model's documents
    greedy = []
    for example, sample in zip(examples, samples(results, NEXT_WORD_TASK), strict=True):
        assert example["context"] + example["target"] + "." == example["text"]
        ids = tokenizer(example["context"] + example["target"])["input_ids"]  # bos first, as evaluate_model scores
        start = len(tokenizer(example["context"])["input_ids"])
        logits = model(torch.tensor([ids])).logits[0, start - 1 : -1].log_softmax(-1)  # (target tokens, V)
        target = torch.tensor(ids[start:])
        loglikelihood, is_greedy = sample["resps"][0][0]
        assert float(loglikelihood) == pytest.approx(logits.gather(1, target[:, None]).sum().item(), abs=1e-4)
        greedy.append(bool(torch.equal(logits.argmax(-1), target)))
        assert is_greedy == greedy[-1]
    accuracy = results["results"][NEXT_WORD_TASK]["acc,none"]
    assert accuracy == pytest.approx(sum(greedy) / len(greedy))
    assert 0 < accuracy < 1


def test_cli_writes_the_task_and_prints_a_command_that_runs(trained_tiny_dir, task_dir, lm_eval_run, tmp_path, capsys):
    recipe = tmp_path / "run.yaml"  # a run on the default TinyWorld, evaluated on NUM_DOCUMENTS documents
    recipe.write_text(yaml.safe_dump({"dataset": "tinyworld", "eval_documents": NUM_DOCUMENTS}))
    cli_main(["lm-eval-task", str(tmp_path / "task"), "--recipe", str(recipe), "--model", str(trained_tiny_dir)])
    command = shlex.split(capsys.readouterr().out.strip().splitlines()[-1])
    assert command[0] == "lm_eval"
    for name in ("arithmetic.jsonl", "next_word.jsonl"):
        assert (tmp_path / "task" / name).read_text() == (task_dir / name).read_text()
    executable = str(Path(sys.executable).with_name("lm_eval"))
    subprocess.run([executable, *command[1:], "--output_path", str(tmp_path / "out")], check=True, timeout=300)
    (results_file,) = (tmp_path / "out").rglob("results_*.json")
    figures = json.loads(results_file.read_text())["results"]
    _, in_process = lm_eval_run
    assert figures[ARITHMETIC_TASK]["exact_match,strip"] == in_process["results"][ARITHMETIC_TASK]["exact_match,strip"]
    assert figures[NEXT_WORD_TASK]["acc,none"] == in_process["results"][NEXT_WORD_TASK]["acc,none"]


def test_bad_counts_and_folders_are_refused_with_the_fix(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"num_problems=85, but this TinyWorld holds out 84 .* from 1 to 84"):
        write_lm_eval_task(tmp_path / "task", num_problems=85)
    with pytest.raises(ValueError, match=r"num_documents=0, but this TinyWorld has 2000 validation documents"):
        write_lm_eval_task(tmp_path / "task", num_documents=0)
    with pytest.raises(ValueError, match=r"holds out no arithmetic problems .* heldout_fraction > 0"):
        write_lm_eval_task(tmp_path / "task", TinyWorldConfig(heldout_fraction=0.0))
    assert not (tmp_path / "task").exists()
    keep = tmp_path / "notes"
    keep.mkdir()
    (keep / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"other contents .* choose a new or empty folder"):
        write_lm_eval_task(keep, num_documents=1)
    assert (keep / "mine.txt").read_text() == "keep me"
    first = write_lm_eval_task(tmp_path / "task", num_problems=3, num_documents=2)
    assert len(read_jsonl(write_lm_eval_task(first, num_problems=5, num_documents=2) / "arithmetic.jsonl")) == 5
    recipe = tmp_path / "text.yaml"
    recipe.write_text(yaml.safe_dump({"dataset": "corpus.txt"}))
    other = str(tmp_path / "other")
    message = cli_user_error(["lm-eval-task", other, "--recipe", str(recipe)], capsys)
    assert re.search(r"trains on 'corpus\.txt'; the task needs a TinyWorld recipe", message)
    message = cli_user_error(["lm-eval-task", other, "--recipe", str(recipe.with_name("missing.yaml"))], capsys)
    assert re.search(r"missing\.yaml does not exist", message)
    assert re.search(
        r"num_problems=0, .* from 1 to 84", cli_user_error(["lm-eval-task", other, "--num_problems", "0"], capsys)
    )
    assert not (tmp_path / "other").exists()
