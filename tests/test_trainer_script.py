"""The Trainer path: from scratch with evaluation and resume, fine-tuning a saved TinyLLM, and LoRA."""

import contextlib
import json
import math
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, HfArgumentParser, TrainingArguments

from hf_tinyllm.data.packing import DataCollatorForCausalLM
from hf_tinyllm.evaluation import packed_loss_breakdown, score_documents
from hf_tinyllm.training import DataArguments, ModelArguments, ProbeArguments
from hf_tinyllm.training.data import prepare_training_data
from hf_tinyllm.training.trainer import LoraArguments, run_trainer, token_byte_lengths


def trainer_run(output_dir, tokenizer_dir, *extra: str) -> dict:
    argv = [
        "--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "600", "--block_size", "32",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--max_steps", "6",
        "--learning_rate", "3e-3", "--eval_strategy", "steps", "--eval_steps", "3", "--save_strategy", "steps",
        "--save_steps", "3", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "--seed", "0",
        "--disable_tqdm", "true", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip
    parser = HfArgumentParser((ModelArguments, DataArguments, LoraArguments, TrainingArguments, ProbeArguments))
    return run_trainer(*parser.parse_args_into_dataclasses(args=argv))


def logged_steps(checkpoint) -> dict[int, tuple[float, float]]:
    """(loss, grad_norm) per step from a checkpoint's trainer_state.json."""
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    return {h["step"]: (h["loss"], h["grad_norm"]) for h in history if "loss" in h}


def test_trainer_trains_evaluates_saves_and_resumes(tmp_path, tokenizer_dir):
    run = tmp_path / "run"
    metrics = trainer_run(run, tokenizer_dir, "--gradient_accumulation_steps", "2")
    assert "documents/gap_bits_per_byte" in metrics and "documents/arithmetic_exact_match" in metrics
    assert {"checkpoint-3", "checkpoint-6"} <= {p.name for p in run.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(run).eval()
    assert model.config.use_cache and (run / "tokenizer.json").exists()
    config = json.loads((run / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"

    # The evaluation metrics, recomputed from the saved model on the validation blocks.
    data_args = DataArguments(tokenizer=tokenizer_dir, tinyworld_documents=600, block_size=32)
    data = prepare_training_data(data_args, contextlib.nullcontext, run, seed=0)
    blocks = DataCollatorForCausalLM(data.tokenizer.pad_token_id)(list(data.validation_blocks))
    with torch.no_grad():
        logits = model(input_ids=blocks["input_ids"], position_ids=blocks.get("position_ids")).logits[:, :-1]
    targets = blocks["labels"][:, 1:]
    valid = targets != -100
    nll = torch.nn.functional.cross_entropy(logits[valid].double(), targets[valid], reduction="sum").item()
    num_bytes = int(token_byte_lengths(data.tokenizer)[targets[valid].numpy()].sum())
    assert metrics["eval_loss"] == pytest.approx(nll / valid.sum().item(), rel=1e-5)
    assert metrics["eval_perplexity"] == pytest.approx(math.exp(nll / valid.sum().item()), rel=1e-5)
    assert metrics["eval_bits_per_byte"] == pytest.approx(nll / math.log(2) / num_bytes, rel=1e-5)
    assert metrics["eval_accuracy"] == pytest.approx((logits.argmax(-1)[valid] == targets[valid]).float().mean())

    # Resumed from checkpoint-3 in another folder: the same losses and gradient norms at every step, the same weights.
    shutil.copytree(run / "checkpoint-3", tmp_path / "resumed" / "checkpoint-3")
    trainer_run(tmp_path / "resumed", tokenizer_dir, "--gradient_accumulation_steps", "2",
                "--resume_from_checkpoint", str(tmp_path / "resumed" / "checkpoint-3"))  # fmt: skip
    straight, resumed = logged_steps(run / "checkpoint-6"), logged_steps(tmp_path / "resumed" / "checkpoint-6")
    assert sorted(straight) == list(range(1, 7))
    assert resumed == straight  # equal floats: steps 4-6 were trained again after the restore
    a, b = (load_file(folder / "model.safetensors") for folder in (run, tmp_path / "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


ARITHMETIC_FINE_TUNE = ["--tinyworld_weights", '{"arithmetic": 1}', "--save_strategy", "no", "--eval_strategy", "no",
                        "--max_steps", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory, tokenizer_dir) -> tuple:
    """A base model trained from scratch, then fine-tuned on arithmetic from its saved folder (the README's command,
    at test size): (folder of the base, folder of the fine-tune, the fine-tune's final metrics)."""
    root = tmp_path_factory.mktemp("fine_tune")
    trainer_run(root / "base", tokenizer_dir, "--save_strategy", "no", "--eval_strategy", "no")
    metrics = trainer_run(root / "full", tokenizer_dir, "--init_from", str(root / "base"), *ARITHMETIC_FINE_TUNE)
    return root / "base", root / "full", metrics


def test_fine_tune_a_saved_model_on_arithmetic_with_and_without_lora(tmp_path, tokenizer_dir, fine_tuned):
    base_dir, full_dir, _ = fine_tuned
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    tuned = AutoModelForCausalLM.from_pretrained(full_dir)
    changed = [n for n, p in tuned.named_parameters() if not torch.equal(p, base.state_dict()[n])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed

    from peft import PeftModel

    trainer_run(tmp_path / "lora", tokenizer_dir, "--init_from", str(base_dir), *ARITHMETIC_FINE_TUNE, "--lora_r", "4")
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "lora")
    ids = torch.tensor([[1, 40, 41, 42]])
    assert not torch.allclose(adapted(ids).logits, base(ids).logits)
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero; training moved it


def test_final_metrics_agree_with_the_validation_blocks_and_the_documents(tokenizer_dir, fine_tuned):
    """The final `eval_loss` is the loss of the saved model (whose config now says `use_cache=True`) on the packed
    validation blocks, computed directly with and without a cache; and its part on documents that lie whole in a
    block equals the document-level loss of `evaluate_model`'s scoring on those documents."""
    _, full_dir, metrics = fine_tuned
    model = AutoModelForCausalLM.from_pretrained(full_dir).eval()
    assert model.config.use_cache
    data_args = DataArguments(tokenizer=tokenizer_dir, tinyworld_documents=600, block_size=32,
                              tinyworld_weights='{"arithmetic": 1}')  # fmt: skip
    data = prepare_training_data(data_args, contextlib.nullcontext, full_dir, seed=0)
    blocks = DataCollatorForCausalLM(data.tokenizer.pad_token_id)(list(data.validation_blocks))
    for use_cache in (False, True):
        with torch.no_grad():
            direct = model(**blocks, use_cache=use_cache).loss.item()
        assert metrics["eval_loss"] == pytest.approx(direct, rel=1e-5), use_cache

    tokenizer = data.tokenizer
    parts = packed_loss_breakdown(model, data.validation_blocks, tokenizer.bos_token_id, tokenizer.eos_token_id)
    assert parts["loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert parts["whole/num_tokens"] > 0 and parts["cut/num_tokens"] > 0 and parts["bos/num_tokens"] > 0
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in parts["whole_documents"]]
    assert [[tokenizer.bos_token_id, *tokenizer.encode(t, add_special_tokens=False), tokenizer.eos_token_id]
            for t in texts] == parts["whole_documents"]  # fmt: skip
    scores = score_documents(model, tokenizer, texts)
    assert sum(s["num_tokens"] for s in scores) == parts["whole/num_tokens"]
    assert math.fsum(s["nll_sum"] for s in scores) == pytest.approx(parts["whole/nll_sum"], rel=1e-5)
    assert 0 < parts["bos/loss"] < parts["whole/loss"]  # a bos after an eos is the easiest token in the corpus


def test_token_byte_lengths_count_utf8_bytes(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = token_byte_lengths(tokenizer)
    text = "the queen walked to the palace."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert lengths[ids].sum() == len(text.encode())
    assert lengths[tokenizer.eos_token_id] == 1 and lengths[tokenizer.bos_token_id] == 0


def test_trainer_torch_compile_traces_the_model_and_matches_eager(tmp_path, tokenizer_dir):
    """--torch_compile in the Trainer path (TrainingArguments' own switch): the same losses as eager, compiled for
    real. aot_eager, as the loop's test: graph capture and the joint graph, without inductor's C++ build."""
    from torch._dynamo.utils import counters

    short = ["--max_steps", "3", "--eval_strategy", "no", "--save_strategy", "no"]
    torch.manual_seed(123)  # the run seeds its model itself: the random state it starts from must not matter
    trainer_run(tmp_path / "eager", tokenizer_dir, *short)
    torch._dynamo.reset()
    counters.clear()
    trainer_run(tmp_path / "compiled", tokenizer_dir, *short, "--torch_compile", "--torch_compile_backend", "aot_eager")
    assert counters["stats"]["unique_graphs"] >= 1  # the model really ran compiled

    eager = load_file(tmp_path / "eager" / "model.safetensors")
    compiled = load_file(tmp_path / "compiled" / "model.safetensors")
    assert eager.keys() == compiled.keys()  # saved under the model's names, not the compiled wrapper's (_orig_mod.)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5)
