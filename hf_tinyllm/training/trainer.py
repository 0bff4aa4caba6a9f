"""The same model and data through `transformers.Trainer`: training from scratch, fine-tuning a saved TinyLLM, and
LoRA with PEFT. Evaluation adds token-weighted perplexity, bits per byte and next-token accuracy (the project's
`evaluate` modules) to the Trainer's `eval_loss`."""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import EvalPrediction, PreTrainedTokenizerBase, Trainer, TrainingArguments, set_seed

from ..data.packing import check_block_size
from ..insight.learning import plot_learning_curves, probe_records
from ..metrics import load_metric
from ..model_card import LEARNING_CURVES_FILE, SUMMARY_FILE, TIMELINE_DIR, TRAINING_LOG_FILE, write_model_card
from ..tokenization import write_tokenizer_files
from .arguments import DataArguments, ModelArguments, ProbeArguments
from .artifacts import plot_loss_curve
from .data import prepare_training_data, training_collator
from .model import build_training_model
from .probes import ProbeCallback, build_probe


@dataclass
class LoraArguments:
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains all weights."})
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.0)
    lora_target_modules: str = field(default="all-linear", metadata={"help": "'all-linear' or comma-separated names."})


def token_byte_lengths(tokenizer: PreTrainedTokenizerBase) -> np.ndarray:
    """UTF-8 bytes each token id stands for: its decoded length; 1 for end-of-text (the separator convention of
    `tokenize_dataset` and the TinyWorld floor), 0 for the other special tokens."""
    lengths = np.zeros(len(tokenizer), dtype=np.int64)
    special = set(tokenizer.all_special_ids)
    for token_id in range(len(tokenizer)):
        if token_id not in special:
            lengths[token_id] = len(
                tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(token_id)]).encode()
            )
    lengths[tokenizer.eos_token_id] = 1
    return lengths


def keep_argmax_and_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reduce (B, T, V) logits to what the metrics need, so evaluation never gathers the full logits: per position,
    the argmax of the next-token prediction and the NLL of the actual next token, as (B, T-1, 2)."""
    logits, targets = logits[:, :-1].float(), labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets.clamp(min=0), reduction="none")
    return torch.stack([logits.argmax(-1).to(nll.dtype), nll], dim=-1)


class CausalLMMetrics:
    """`compute_metrics` for the Trainer: token-weighted perplexity, bits per byte and next-token accuracy."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.byte_lengths = token_byte_lengths(tokenizer)

    def __call__(self, prediction: EvalPrediction) -> dict:
        argmax, nll = prediction.predictions[..., 0], prediction.predictions[..., 1]
        targets = prediction.label_ids[:, 1:]
        valid = targets != -100
        nll_sum = [float(nll[valid].sum())]
        tokens = [int(valid.sum())]
        num_bytes = [int(self.byte_lengths[targets[valid]].sum())]
        return {
            "perplexity": load_metric("perplexity").compute(nll_sum=nll_sum, num_tokens=tokens)["perplexity"],
            "bits_per_byte": load_metric("bits_per_byte").compute(nll_sum=nll_sum, num_bytes=num_bytes)[
                "bits_per_byte"
            ],
            "accuracy": load_metric("next_token_accuracy").compute(
                num_correct=[int((argmax[valid] == targets[valid]).sum())], num_tokens=tokens
            )["accuracy"],
        }


class TinyLLMTrainer(Trainer):
    """A Trainer whose model card is hf_tinyllm's. transformers' own card says "fine-tuned version of []" for a model
    trained from scratch, has no pipeline_tag and an empty model-index for perplexity; `push_to_hub` calls this after
    `save_model`, so the tokenizer config is also re-written to name `PreTrainedTokenizerFast` here."""

    def create_model_card(self, **kwargs) -> None:
        if not self.is_world_process_zero():
            return
        output_dir = Path(self.args.output_dir)
        if self.processing_class is not None:
            write_tokenizer_files(self.processing_class, output_dir)
        write_model_card(output_dir, self.hub_model_id or self.args.hub_model_id or output_dir.name)


def _write_training_summary(trainer: Trainer, metrics: dict, data_args: DataArguments, floor: float | None) -> None:
    """training_summary.json, training_log.jsonl, loss_curve.png (and learning_curves.png with probes) beside the
    model, as the Accelerate loop writes them."""
    output_dir = Path(trainer.args.output_dir)
    history = [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h]
    history += [{"step": h["step"], "eval/bits_per_byte": h["eval_bits_per_byte"]}
                for h in trainer.state.log_history if "eval_bits_per_byte" in h]  # fmt: skip
    plot_loss_curve(sorted(history, key=lambda h: h["step"]), output_dir / "loss_curve.png", floor)
    if probe_records(trainer.state.log_history):
        plot_learning_curves(trainer.state.log_history, output_dir / LEARNING_CURVES_FILE, floor)
    args = trainer.args
    batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    summary = {
        "steps": trainer.state.global_step,
        "tokens_seen": trainer.state.global_step * batch * data_args.block_size,
        "wall_time_s": metrics.get("train_runtime", 0.0),
        "final_metrics": {k.removeprefix("documents/"): v for k, v in metrics.items() if k.startswith("documents/")},
        "parameters": trainer.model.num_parameters(),
        "hardware": {
            "device": str(args.device),
            "num_processes": args.world_size,
            "mixed_precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "no",
            "torch": torch.__version__,
        },
        "hyperparameters": {
            "learning_rate": args.learning_rate,
            "lr_scheduler_type": str(args.lr_scheduler_type),
            "warmup_steps": args.warmup_steps,
            "weight_decay": args.weight_decay,
            "total_train_batch_size": batch,
            "block_size": data_args.block_size,
            "max_steps": args.max_steps,
            "seed": args.seed,
            "dataset": data_args.dataset,
            "tinyworld_weights": data_args.tinyworld_weights,
            "trainer": "transformers.Trainer",
        },
    }
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    (output_dir / TRAINING_LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in trainer.state.log_history))


def run_trainer(
    model_args: ModelArguments,
    data_args: DataArguments,
    lora_args: LoraArguments,
    training_args: TrainingArguments,
    probe_args: ProbeArguments | None = None,
) -> dict:
    """Train (or fine-tune with `model_args.init_from`, optionally with LoRA) through the Trainer; save the model and
    tokenizer to `training_args.output_dir`; return the final evaluation, TinyWorld floor and arithmetic included.
    With `probe_args.probe_steps`, the learning probes are recorded into the Trainer's log (and trackers)."""
    if data_args.streaming:
        raise ValueError(
            "--streaming trains in the Accelerate loop (scripts/train.py); for the Trainer, tokenise a corpus larger "
            "than memory into token shards (`tinyllm tokenize SOURCE OUT --tokenizer TOKENIZER`) and pass "
            "--dataset OUT."
        )
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training_args.world_size == 1:
        raise ValueError(
            f"launched as {launched} processes, but the Trainer would run each as a run of its own (each training "
            "on every batch): on a machine without GPUs, pass --use_cpu, so that Accelerate joins them in one gloo "
            "group."
        )
    output_dir = Path(training_args.output_dir)
    data = prepare_training_data(data_args, training_args.main_process_first, output_dir, training_args.seed)
    set_seed(training_args.seed)  # the fresh model's weights come from the seed, not from whatever ran before
    model = build_training_model(model_args, data.tokenizer)
    check_block_size(data_args.block_size, model.config)
    if lora_args.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        targets = lora_args.lora_target_modules
        lora = LoraConfig(r=lora_args.lora_r, lora_alpha=lora_args.lora_alpha, lora_dropout=lora_args.lora_dropout,
                          target_modules=targets if targets == "all-linear" else targets.split(","),
                          task_type="CAUSAL_LM")  # fmt: skip
        model = get_peft_model(model, lora)
    largest_batch = max(training_args.per_device_train_batch_size, training_args.per_device_eval_batch_size)
    trainer = TinyLLMTrainer(
        model=model,
        args=training_args,
        train_dataset=data.train_blocks,
        eval_dataset=data.validation_blocks,
        data_collator=training_collator(data, data_args, model_args.attn_implementation, largest_batch),
        processing_class=data.tokenizer,
        compute_metrics=CausalLMMetrics(data.tokenizer),
        preprocess_logits_for_metrics=keep_argmax_and_nll,
    )
    probe_args = probe_args or ProbeArguments()
    probe = build_probe(data, probe_args)
    if probe is not None:
        timeline = probe_args.timeline_recorder(output_dir / TIMELINE_DIR)
        trainer.add_callback(ProbeCallback(probe, probe_args.probe_steps, trainer.log, timeline))
    resume = training_args.resume_from_checkpoint
    train_output = trainer.train(resume_from_checkpoint=True if resume == "latest" else resume)
    metrics = trainer.evaluate()  # as trained (use_cache off): the final figures never depend on the saved flag
    metrics.update(train_output.metrics)
    base = model.get_base_model() if lora_args.lora_r > 0 else model
    base.config.use_cache = True  # the saved model generates with a KV cache
    trainer.save_model()
    if trainer.is_world_process_zero():
        write_tokenizer_files(data.tokenizer, output_dir)
    if trainer.is_world_process_zero():
        documents = data.evaluate(model.eval(), max_documents=500)
        metrics.update({f"documents/{k}": v for k, v in documents.items() if k != "arithmetic_examples"})
        finite = {k: v for k, v in metrics.items() if not isinstance(v, float) or math.isfinite(v)}
        (output_dir / "eval_results.json").write_text(json.dumps(finite, indent=2) + "\n")
        _write_training_summary(trainer, finite, data_args, data.floor_bits_per_byte)
    if training_args.push_to_hub:
        trainer.push_to_hub(commit_message="End of training")
    return metrics


__all__ = ["CausalLMMetrics", "LoraArguments", "keep_argmax_and_nll", "run_trainer", "token_byte_lengths"]
