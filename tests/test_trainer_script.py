"""The Trainer path: from scratch with evaluation and resume, fine-tuning a saved TinyLLM, and LoRA."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, HfArgumentParser, TrainingArguments

from hf_tinyllm.training import DataArguments, ModelArguments
from hf_tinyllm.training.trainer import LoraArguments, run_trainer, token_byte_lengths


def trainer_run(output_dir, tokenizer_dir, *extra: str) -> dict:
    argv = [
        "--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "600", "--block_size", "32",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--max_steps", "6",
        "--learning_rate", "3e-3", "--eval_strategy", "steps", "--eval_steps", "3", "--save_strategy", "steps",
        "--save_steps", "3", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "--seed", "0",
        "--disable_tqdm", "true", "--output_dir", str(output_dir), *extra,
    ]  # fmt: skip
    parser = HfArgumentParser((ModelArguments, DataArguments, LoraArguments, TrainingArguments))
    return run_trainer(*parser.parse_args_into_dataclasses(args=argv))


def test_trainer_trains_evaluates_saves_and_resumes(tmp_path, tokenizer_dir):
    metrics = trainer_run(tmp_path / "run", tokenizer_dir, "--gradient_accumulation_steps", "2")
    assert metrics["eval_perplexity"] == pytest.approx(torch.tensor(metrics["eval_loss"]).exp().item(), rel=1e-4)
    assert metrics["eval_bits_per_byte"] > 0 and 0 <= metrics["eval_accuracy"] <= 1
    assert "documents/gap_bits_per_byte" in metrics and "documents/arithmetic_exact_match" in metrics
    assert {"checkpoint-3", "checkpoint-6"} <= {p.name for p in (tmp_path / "run").iterdir()}
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "run")
    assert model.config.use_cache and (tmp_path / "run" / "tokenizer.json").exists()
    config = json.loads((tmp_path / "run" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    resumed = trainer_run(tmp_path / "run", tokenizer_dir, "--gradient_accumulation_steps", "2", "--max_steps", "8",
                          "--resume_from_checkpoint", str(tmp_path / "run" / "checkpoint-6"))  # fmt: skip
    assert resumed["epoch"] > metrics["epoch"]


def test_fine_tune_a_saved_model_on_arithmetic_with_and_without_lora(tmp_path, tokenizer_dir):
    trainer_run(tmp_path / "base", tokenizer_dir, "--save_strategy", "no", "--eval_strategy", "no")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    arithmetic = ["--init_from", str(tmp_path / "base"), "--tinyworld_weights", '{"arithmetic": 1}', "--save_strategy",
                  "no", "--eval_strategy", "no", "--max_steps", "4"]  # fmt: skip
    trainer_run(tmp_path / "full", tokenizer_dir, *arithmetic)
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    changed = [n for n, p in tuned.named_parameters() if not torch.equal(p, base.state_dict()[n])]
    assert "model.layers.0.self_attn.q_proj.weight" in changed

    from peft import PeftModel

    trainer_run(tmp_path / "lora", tokenizer_dir, *arithmetic, "--lora_r", "4")
    assert (tmp_path / "lora" / "adapter_model.safetensors").exists()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "lora")
    ids = torch.tensor([[1, 40, 41, 42]])
    assert not torch.allclose(adapted(ids).logits, base(ids).logits)
    lora_b = [p for n, p in adapted.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero; training moved it


def test_token_byte_lengths_count_utf8_bytes(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    lengths = token_byte_lengths(tokenizer)
    text = "the queen walked to the palace."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert lengths[ids].sum() == len(text.encode())
    assert lengths[tokenizer.eos_token_id] == 1 and lengths[tokenizer.bos_token_id] == 0
