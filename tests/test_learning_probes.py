"""The learning probes: what they measure equals the direct computation, they leave the model as found, and the
Accelerate loop and the Trainer record the same numbers for the same model."""

import json
from dataclasses import asdict

import pytest
import torch
from accelerate.state import AcceleratorState
from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser, TrainingArguments

from hf_tinyllm.data import TinyWorldConfig
from hf_tinyllm.data.tinyworld import TinyWorld, tinyworld_dataset
from hf_tinyllm.evaluation import arithmetic_exact_match, evaluate_model
from hf_tinyllm.insight.geometry import analogy
from hf_tinyllm.insight.learning import LearningProbe, probe_records
from hf_tinyllm.training import DataArguments, ModelArguments, ProbeArguments, parse_train_arguments, train
from hf_tinyllm.training.trainer import LoraArguments, run_trainer


@pytest.fixture(scope="module")
def world():
    config = TinyWorldConfig(num_train_documents=600, num_validation_documents=20)
    return tinyworld_dataset(config), TinyWorld(config)


def test_trained_problems_occur_in_training_and_never_overlap_the_heldout_ones(world):
    dataset, generator = world
    trained = generator.trained_problems()
    text = " ".join(dataset["train"]["text"])
    assert trained and all(p.text in text for p in trained)
    heldout = {(p["op"], p["a"], p["b"]) for p in dataset["heldout_arithmetic"]}
    assert not heldout & {(p.op, p.a, p.b) for p in trained}
    sample = generator.trained_problems(5, seed=1)
    assert len(sample) == 5 and set(sample) <= set(trained) and sample == generator.trained_problems(5, seed=1)


def test_probe_matches_evaluate_model_and_leaves_the_model_as_found(trained_tiny_dir, world):
    dataset, generator = world
    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir).train()
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    heldout = list(dataset["heldout_arithmetic"])
    documents = list(dataset["validation"])
    probe = LearningProbe(
        tokenizer, probe_batch=tokenizer("the king walked to the palace. two plus three equals five.",
                                         return_tensors="pt")["input_ids"],  # its last token "." also occurs earlier
        trained_problems=[asdict(p) for p in generator.trained_problems(len(heldout))], heldout_problems=heldout,
        validation_documents=documents, floor_bits_per_byte=generator.floor_bits_per_byte(),
    )  # fmt: skip
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = probe.measure(model)
    assert model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in model.parameters())
    direct = evaluate_model(model.eval(), tokenizer, documents, heldout_arithmetic=heldout,
                            floor_bits_per_byte=generator.floor_bits_per_byte())  # fmt: skip
    assert record["probe/heldout_exact_match"] == direct["arithmetic_exact_match"]
    assert record["probe/validation_bits_per_byte"] == pytest.approx(direct["bits_per_byte"], rel=1e-6)
    trained = [asdict(p) for p in generator.trained_problems(len(heldout))]
    assert record["probe/trained_exact_match"] == arithmetic_exact_match(model, tokenizer, trained)["exact_match"]
    rank = analogy(model, tokenizer, *probe.analogy_words[:3], expected=probe.analogy_words[3]).expected_rank
    assert record[f"probe/analogy_rank_{probe.analogy_words[3]}"] == rank >= 1
    blame = [v for k, v in record.items() if k.startswith("probe/blame_")]
    assert len(blame) == 5 and sum(blame) == pytest.approx(1.0, abs=1e-6)
    # the input side touches exactly the batch's tokens; the tied head gives every row a gradient
    assert record["probe/rows_with_input_gradient"] == record["probe/batch_distinct_tokens"]
    assert record["probe/rows_with_gradient"] == record["probe/vocab_size"]


def probe_flags(init_from) -> list[str]:
    """lr 0: both hosts keep the saved weights, so their probes must agree number for number."""
    return ["--init_from", str(init_from), "--tokenizer", str(init_from), "--tinyworld_documents", "600",
            "--block_size", "32", "--max_steps", "2", "--warmup_steps", "0", "--learning_rate", "0",
            "--probe_steps", "2", "--probe_documents", "5", "--probe_problems", "12", "--seed", "0"]  # fmt: skip


def test_the_loop_and_the_trainer_record_the_same_probe(tmp_path, trained_tiny_dir):
    AcceleratorState._reset_state(reset_partial_state=True)
    loop_dir = tmp_path / "loop"
    train(*parse_train_arguments([*probe_flags(trained_tiny_dir), "--per_device_batch_size", "4",
                                  "--warmup_steps", "0", "--eval_documents", "5", "--report_to", "none",
                                  "--output_dir", str(loop_dir)]))  # fmt: skip
    loop_log = [json.loads(line) for line in (loop_dir / "model" / "training_log.jsonl").read_text().splitlines()]
    loop_records = probe_records(loop_log)
    assert [r["step"] for r in loop_records] == [0, 2]
    assert (loop_dir / "model" / "learning_curves.png").stat().st_size > 10_000

    trainer_dir = tmp_path / "trainer"
    parser = HfArgumentParser((ModelArguments, DataArguments, LoraArguments, TrainingArguments, ProbeArguments))
    run_trainer(*parser.parse_args_into_dataclasses(args=[
        *probe_flags(trained_tiny_dir), "--per_device_train_batch_size", "4", "--use_cpu",
        "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no", "--disable_tqdm", "true",
        "--output_dir", str(trainer_dir)]))  # fmt: skip
    trainer_log = [json.loads(line) for line in (trainer_dir / "training_log.jsonl").read_text().splitlines()]
    trainer_records = probe_records(trainer_log)
    assert [r["step"] for r in trainer_records] == [2]
    assert (trainer_dir / "learning_curves.png").stat().st_size > 10_000
    ours, theirs = loop_records[-1], trainer_records[-1]
    assert theirs.keys() == ours.keys() and len(ours) > 15
    for key in ours.keys() - {"seconds"}:  # the probe's own run time differs, its measurements must not
        assert theirs[key] == pytest.approx(ours[key], rel=1e-5), key
    assert ours["rows_changed_by_adamw"] == 0  # lr 0: AdamW's replayed step moves nothing
