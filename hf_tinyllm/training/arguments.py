"""The training script's arguments: typed dataclasses for `HfArgumentParser`, from the command line or a YAML file
(`python scripts/train.py --config run.yaml --max_steps 100`: the file sets defaults, flags override them)."""

import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser


@dataclass
class ModelArguments:
    preset: str = field(
        default="nano", metadata={"help": "Model size from hf_tinyllm.presets (ignored with --init_from)."}
    )
    model_overrides: str | None = field(
        default=None,
        metadata={"help": "JSON of TinyLLMConfig fields over the preset, e.g. '{\"num_hidden_layers\": 2}'."},
    )
    init_from: str | None = field(default=None, metadata={"help": "Start from a saved model folder or Hub id."})
    attn_implementation: str = field(
        default="sdpa", metadata={"help": "eager, sdpa, flex_attention, flash_attention_2."}
    )


@dataclass
class DataArguments:
    dataset: str = field(
        default="tinyworld", metadata={"help": "'tinyworld', files/folder, save_to_disk folder or Hub name."}
    )
    text_column: str = field(default="text")
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer folder; default: train one on the data."})
    vocab_size: int = field(default=2048, metadata={"help": "Vocabulary of the tokenizer trained when none is given."})
    block_size: int = field(default=128, metadata={"help": "Tokens per packed training block."})
    document_positions: bool = field(default=True, metadata={"help": "Restart positions (and attention) per document."})
    validation_fraction: float = field(
        default=0.02, metadata={"help": "Held out when the data has no validation split."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    tinyworld_documents: int = field(default=40_000, metadata={"help": "TinyWorld training documents."})
    tinyworld_weights: str | None = field(
        default=None, metadata={"help": "TinyWorld family mix as JSON, e.g. '{\"arithmetic\": 1}' for arithmetic only."}
    )


@dataclass
class OptimArguments:
    learning_rate: float = field(default=3e-3)
    min_lr_ratio: float = field(default=0.1, metadata={"help": "Final learning rate / peak (cosine_with_min_lr)."})
    weight_decay: float = field(
        default=0.1, metadata={"help": "On 2-D weights only; never on norms, biases, embeddings."}
    )
    adam_beta1: float = field(default=0.9)
    adam_beta2: float = field(default=0.95)
    adam_epsilon: float = field(default=1e-8)
    optimizer: str = field(default="adamw", metadata={"help": "adamw, or muon (Muon on 2-D hidden weights + AdamW)."})
    muon_learning_rate: float = field(default=0.02)
    lr_scheduler_type: str = field(default="cosine_with_min_lr", metadata={"help": "Any transformers scheduler."})
    warmup_steps: int = field(default=20)
    max_steps: int = field(default=500)
    per_device_batch_size: int = field(default=32, metadata={"help": "Blocks per micro-batch per process."})
    gradient_accumulation_steps: int = field(default=1)
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm; 0 disables."})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (with loss scaling)."})


@dataclass
class RunArguments:
    output_dir: str = field(default="outputs/run", metadata={"help": "Checkpoints, logs and the final model."})
    seed: int = field(default=0)
    eval_steps: int = field(
        default=100, metadata={"help": "Evaluate every N steps (and at the end); 0: only at the end."}
    )
    eval_documents: int = field(default=500, metadata={"help": "Validation documents per evaluation."})
    logging_steps: int = field(default=10)
    save_steps: int = field(
        default=0, metadata={"help": "Checkpoint every N steps (and at the end); 0: only at the end."}
    )
    save_total_limit: int = field(default=2, metadata={"help": "Keep the last K checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder, or 'latest'."})
    skip_nonfinite_steps: int = field(
        default=0, metadata={"help": "Non-finite losses to skip (no update) before stopping; 0 stops at the first."}
    )
    torch_compile: bool = field(default=False)
    gradient_checkpointing: bool = field(default=False)
    allow_tf32: bool = field(default=True, metadata={"help": "TF32 matmuls on Ampere+ GPUs."})
    report_to: str = field(default="tensorboard", metadata={"help": "Comma-separated trackers; 'none' for jsonl only."})
    push_to_hub: bool = field(default=False)
    hub_model_id: str | None = field(default=None)
    stop_after_steps: int | None = field(
        default=None, metadata={"help": "Stop (with a checkpoint) after N steps: tests."}
    )


@dataclass
class ProbeArguments:
    probe_steps: int = field(
        default=0,
        metadata={"help": "Every N steps record the learning probes (memorisation vs generalisation, geometry, "
                  "sparsity, blame, validation bits per byte); 0: off."},
    )  # fmt: skip
    probe_documents: int = field(default=100, metadata={"help": "Validation documents per probe."})
    probe_batch_size: int = field(default=8, metadata={"help": "Training blocks in the probe's fixed batch."})
    probe_problems: int = field(
        default=0,
        metadata={"help": "Held-out and as many trained arithmetic problems per probe (a seeded sample); 0: all."},
    )


TrainArguments = tuple[ModelArguments, DataArguments, OptimArguments, RunArguments, ProbeArguments]
ARGUMENT_CLASSES = (ModelArguments, DataArguments, OptimArguments, RunArguments, ProbeArguments)


def parse_train_arguments(argv: list[str] | None = None) -> TrainArguments:
    """Parse flags, optionally on top of a YAML file given as `--config FILE` or as the first argument."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARGUMENT_CLASSES)
    config_file = None
    if argv and argv[0].endswith((".yaml", ".yml")):
        config_file, argv = argv[0], argv[1:]
    elif "--config" in argv:
        index = argv.index("--config")
        if index + 1 >= len(argv):
            raise ValueError("--config needs a YAML file path.")
        config_file = argv[index + 1]
        argv = argv[:index] + argv[index + 2 :]
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise FileNotFoundError(f"Config file {path} does not exist.")
        values = yaml.safe_load(path.read_text()) or {}
        known = {f for cls in ARGUMENT_CLASSES for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{path} has unknown fields {unknown}; see `python scripts/train.py --help`.")
        parser.set_defaults(**values)
    return parser.parse_args_into_dataclasses(args=argv)
