"""The training script's arguments: typed dataclasses for `HfArgumentParser`, from the command line or a YAML file
(`python scripts/train.py --config run.yaml --max_steps 100`: the file sets defaults, flags override them)."""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from transformers import HfArgumentParser, SchedulerType

from ..insight.timeline import DEFAULT_MAX_PARAMETERS, TimelineRecorder
from ..insight.timeline import KINDS as TIMELINE_KINDS

OPTIMIZERS = ("adamw", "muon")
MIXED_PRECISIONS = ("no", "bf16", "fp16")
PARAM_DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flex_attention", "flash_attention_2", "torch_varlen")
# The kernels that take packed documents' boundaries only from a flattened batch (cu_seq_lens), never from a mask.
FLASH_IMPLEMENTATIONS = ("flash_attention_2", "torch_varlen")


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
        default="sdpa",
        metadata={
            "help": "eager, sdpa, flex_attention, flash_attention_2, or torch_varlen (PyTorch's own flash "
            "varlen kernel, CUDA)."
        },
    )

    param_dtype: str = field(
        default="float32",
        metadata={"help": "float32, or bfloat16: weights and AdamW state in bf16 (half the memory), next to "
                  "--mixed_precision bf16's autocast."},
    )  # fmt: skip
    cross_entropy_chunk_size: int = field(
        default=0,
        metadata={"help": "Compute the training loss in chunks of N tokens, never holding fp32 logits over the whole "
                  "vocabulary (the model's chunked linear cross-entropy); 0: the plain loss."},
    )  # fmt: skip

    def __post_init__(self) -> None:
        from ..presets import PRESETS

        if self.init_from is None and self.preset not in PRESETS:
            raise ValueError(f"--preset {self.preset!r} is unknown; choose one of {sorted(PRESETS)}.")
        _check_choice("attn_implementation", self.attn_implementation, ATTENTION_IMPLEMENTATIONS)
        _check_choice("param_dtype", self.param_dtype, PARAM_DTYPES)
        _check_at_least("cross_entropy_chunk_size", self.cross_entropy_chunk_size, 0)
        if self.model_overrides is not None:
            try:
                overrides = json.loads(self.model_overrides)
            except json.JSONDecodeError as err:
                example = '{"num_hidden_layers": 2}'
                raise ValueError(f"--model_overrides is not valid JSON ({err}); e.g. '{example}'.") from None
            if not isinstance(overrides, dict):
                raise ValueError("--model_overrides must be a JSON object of TinyLLMConfig fields.")

    def model_config(self):
        """The config of the model the run will build (without the tokenizer's vocabulary and special ids)."""
        if self.init_from is not None:
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(self.init_from)
        from ..presets import preset_config

        return preset_config(self.preset, **json.loads(self.model_overrides or "{}"))


@dataclass
class DataArguments:
    dataset: str = field(
        default="tinyworld", metadata={"help": "'tinyworld', files/folder, save_to_disk folder or Hub name."}
    )
    dataset_config: str | None = field(default=None, metadata={"help": "A Hub dataset's configuration (subset)."})
    text_column: str = field(default="text")
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of txt/json/jsonl/csv files."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer folder; default: train one on the data."})
    vocab_size: int = field(default=2048, metadata={"help": "Vocabulary of the tokenizer trained when none is given."})
    tokenizer_add_prefix_space: bool = field(
        default=False,
        metadata={
            "help": "The trained tokenizer encodes a text's first word as inside a sentence (see train_tokenizer)."
        },
    )
    block_size: int = field(default=128, metadata={"help": "Tokens per packed training block."})
    document_positions: bool = field(default=True, metadata={"help": "Restart positions (and attention) per document."})
    flatten_batches: bool | None = field(
        default=None,
        metadata={"help": "Feed each micro-batch as one row with its documents' boundaries (cu_seq_lens), as flash "
                  "kernels need; default: on with flash_attention_2 and torch_varlen, off otherwise.", "nargs": "?",
                  "const": True},
    )  # fmt: skip
    validation_fraction: float = field(
        default=0.02, metadata={"help": "Held out when the data has no validation split."}
    )
    num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenisation."})
    streaming: bool = field(
        default=False,
        metadata={"help": "Read, tokenise and pack the text as training goes (a corpus larger than memory that is "
                  "not tokenised yet; the Accelerate loop). Token shards (`tinyllm tokenize`) need no flag."},
    )  # fmt: skip
    tinyworld_documents: int = field(
        default=40_000, metadata={"help": "TinyWorld training documents (validation: 5%% of them, 100 to 2,000)."}
    )
    tinyworld_weights: str | None = field(
        default=None, metadata={"help": "TinyWorld family mix as JSON, e.g. '{\"arithmetic\": 1}' for arithmetic only."}
    )

    def __post_init__(self) -> None:
        _check_at_least("block_size", self.block_size, 2)
        _check_at_least("vocab_size", self.vocab_size, 8)
        _check_at_least("tinyworld_documents", self.tinyworld_documents, 1)
        if not 0 < self.validation_fraction < 1:
            raise ValueError(f"--validation_fraction={self.validation_fraction} must be in (0, 1), e.g. 0.02.")
        if self.num_proc is not None:
            _check_at_least("num_proc", self.num_proc, 1)
        if self.flatten_batches and not self.document_positions:
            raise ValueError("--flatten_batches needs --document_positions true (the boundaries come from them).")

    def flattens(self, attn_implementation: str) -> bool:
        """Whether batches go to the model flattened (`--flatten_batches`, by default with the flash kernels)."""
        if self.flatten_batches is None:
            return self.document_positions and attn_implementation in FLASH_IMPLEMENTATIONS
        return self.flatten_batches


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
    warmup_steps: int | None = field(default=None, metadata={"help": "Default: 10%% of max_steps, at most 20."})
    max_steps: int = field(default=500)
    per_device_batch_size: int = field(default=32, metadata={"help": "Blocks per micro-batch per process."})
    gradient_accumulation_steps: int = field(default=1)
    max_grad_norm: float = field(default=1.0, metadata={"help": "Clip the global gradient norm; 0 disables."})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (with loss scaling)."})

    def __post_init__(self) -> None:
        if not self.adam_epsilon > 0:
            raise ValueError(f"--adam_epsilon={self.adam_epsilon} must be > 0, e.g. 1e-8.")
        # A learning rate of 0 is allowed: it runs the loop (evaluation, probes) on frozen weights.
        for name in ("learning_rate", "muon_learning_rate", "weight_decay", "max_grad_norm", "min_lr_ratio"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"--{name}={getattr(self, name)} must be >= 0.")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"--{name}={getattr(self, name)} must be in [0, 1), e.g. 0.9 or 0.95.")
        if self.max_steps == 0:
            raise ValueError("--max_steps=0: nothing to train; pass --max_steps 1 or more.")
        _check_at_least("max_steps", self.max_steps, 1)
        if self.warmup_steps is None:  # derived from the run's length, so no length makes the default wrong
            self.warmup_steps = min(20, self.max_steps // 10)
        _check_at_least("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps >= self.max_steps:
            raise ValueError(
                f"--warmup_steps={self.warmup_steps} must be below --max_steps={self.max_steps}: the warmup would "
                "never end; lower it (e.g. to 10% of max_steps) or raise max_steps."
            )
        _check_at_least("per_device_batch_size", self.per_device_batch_size, 1)
        _check_at_least("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("lr_scheduler_type", self.lr_scheduler_type, tuple(s.value for s in SchedulerType))
        _check_choice("mixed_precision", self.mixed_precision, MIXED_PRECISIONS)


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
    torch_compile: bool | None = field(
        default=None,  # nargs/const: a bare `--torch_compile` means true, as for the other switches
        metadata={"help": "Compile the model (torch.compile); default: on CUDA, off on a CPU.", "nargs": "?",
                  "const": True},
    )  # fmt: skip
    torch_compile_backend: str = field(
        default="inductor", metadata={"help": "torch.compile backend (as TrainingArguments): inductor, aot_eager, ..."}
    )
    torch_compile_mode: str | None = field(
        default=None, metadata={"help": "torch.compile mode: default, reduce-overhead, max-autotune, ..."}
    )
    gradient_checkpointing: bool = field(default=False)
    dataloader_num_workers: int | None = field(
        default=None, metadata={"help": "Loader worker processes; default: 1 on CUDA (into pinned memory), 0 on a CPU."}
    )
    allow_tf32: bool = field(default=True, metadata={"help": "TF32 matmuls on Ampere+ GPUs."})
    report_to: str = field(default="tensorboard", metadata={"help": "Comma-separated trackers; 'none' for jsonl only."})
    push_to_hub: bool = field(default=False)
    hub_model_id: str | None = field(default=None)
    stop_after_steps: int | None = field(
        default=None, metadata={"help": "Stop (with a checkpoint) after N steps: tests."}
    )

    def compile_on(self, device) -> bool:
        """Whether this run compiles: `--torch_compile`, or by default on a CUDA device (where it pays)."""
        return device.type == "cuda" if self.torch_compile is None else self.torch_compile

    def __post_init__(self) -> None:
        for name in ("eval_steps", "logging_steps", "save_steps", "skip_nonfinite_steps"):
            _check_at_least(name, getattr(self, name), 0)
        _check_at_least("eval_documents", self.eval_documents, 1)
        if self.dataloader_num_workers is not None:
            _check_at_least("dataloader_num_workers", self.dataloader_num_workers, 0)
        _check_at_least("save_total_limit", self.save_total_limit, 1)
        if self.stop_after_steps is not None:
            _check_at_least("stop_after_steps", self.stop_after_steps, 1)
        output_dir = Path(self.output_dir)
        if output_dir.exists() and not output_dir.is_dir():
            raise ValueError(f"--output_dir {output_dir} is a file; pass a folder path (it is created if missing).")
        resume = self.resume_from_checkpoint
        if resume is not None and resume != "latest" and not Path(resume).is_dir():
            raise FileNotFoundError(
                f"--resume_from_checkpoint {resume} is not a checkpoint folder; pass one of "
                f"{output_dir}/checkpoint-* or 'latest'."
            )
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id user/name.")
        if self.torch_compile:
            import torch._dynamo

            backends = torch._dynamo.list_backends(exclude_tags=())
            if self.torch_compile_backend not in backends:
                raise ValueError(
                    f"--torch_compile_backend {self.torch_compile_backend!r} is not a torch.compile backend; choose "
                    f"one of {', '.join(backends)}."
                )


@dataclass
class ProbeArguments:
    probe_steps: int = field(
        default=0,
        metadata={"help": "Every N steps record the learning probes (memorisation vs generalisation, geometry, "
                  "sparsity, blame, validation bits per byte); 0: off."},
    )  # fmt: skip
    probe_documents: int = field(default=100, metadata={"help": "Validation documents per probe."})
    probe_truth_documents: int = field(
        default=4,
        metadata={"help": "TinyWorld validation documents (the families in turn) on which each probe measures, per "
                  "family and per kind of word, the model's gap to the exact truth (insight.truth.TruthProbe; about "
                  "0.25 s a document for the nano model on 2 CPU cores); 0: off."},
    )  # fmt: skip
    probe_batch_size: int = field(default=8, metadata={"help": "Training blocks in the probe's fixed batch."})
    probe_problems: int = field(
        default=0,
        metadata={"help": "Held-out and as many trained arithmetic problems per probe (a seeded sample); 0: all."},
    )
    timeline: str = field(
        default="auto",
        metadata={"help": "Snapshots at each probe step (timeline/): auto (whole weights up to "
                  "--timeline_max_parameters, else the embedding), weights, embeddings, or off.",
                  "choices": list(TIMELINE_KINDS)},
    )  # fmt: skip
    timeline_max_parameters: int = field(
        default=DEFAULT_MAX_PARAMETERS,
        metadata={"help": "With --timeline auto: whole weights up to this many parameters."},
    )
    timeline_every: int = field(
        default=1, metadata={"help": "Keep a snapshot at every K-th probe step only (fewer snapshots)."}
    )

    def timeline_recorder(self, folder: Path) -> TimelineRecorder:
        """The run's timeline recorder: snapshots every `timeline_every` probe steps into `folder`."""
        return TimelineRecorder(folder, self.timeline, self.timeline_max_parameters,
                                every=max(1, self.probe_steps) * self.timeline_every)  # fmt: skip

    def __post_init__(self) -> None:
        for name in ("probe_steps", "probe_problems"):
            _check_at_least(name, getattr(self, name), 0)
        for name in ("probe_documents", "probe_batch_size", "timeline_every"):
            _check_at_least(name, getattr(self, name), 1)


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
    args = parser.parse_args_into_dataclasses(args=argv)
    validate_train_arguments(*args)
    return args


def validate_train_arguments(
    model_args: ModelArguments,
    data_args: DataArguments,
    optim_args: OptimArguments,
    run_args: RunArguments,
    probe_args: ProbeArguments | None = None,
) -> None:
    """The checks that span several argument groups, before any work: the block fits the model's positions."""
    if (
        model_args.attn_implementation in FLASH_IMPLEMENTATIONS
        and data_args.document_positions
        and (not data_args.flattens(model_args.attn_implementation))
    ):
        raise ValueError(
            f"--attn_implementation {model_args.attn_implementation} with --document_positions true needs "
            "--flatten_batches true: the kernel keeps packed documents apart only through the boundaries of a "
            "flattened batch, and would otherwise let every block's documents attend to each other."
        )
    max_positions = model_args.model_config().max_position_embeddings
    if data_args.block_size > max_positions:
        source = model_args.init_from or f"the {model_args.preset!r} preset"
        raise ValueError(
            f"--block_size={data_args.block_size} is larger than the max_position_embeddings={max_positions} of "
            f"{source}; use --block_size {max_positions} or less, or a model with more positions."
        )


def _check_at_least(name: str, value: int, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"--{name}={value!r} must be an integer >= {minimum}.")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"--{name}={value!r} is not supported; choose one of {list(choices)}.")
