"""The jobs of the repository's scripts as functions of their command-line arguments, so that an installed package
runs them as `tinyllm` subcommands (convert, tokenizer, generate-tinyworld, train-trainer, train-sft) and
`scripts/*.py` stay thin wrappers of the same functions. Each takes the argument list (default: `sys.argv[1:]`) that
its script takes, and prints what its script prints.
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class ConvertArguments:
    source: str = field(metadata={"help": "Folder or Hub id of a Llama, GPT-2 or TinyLLM checkpoint."})
    output_dir: str = field(metadata={"help": "Where the converted folder is written (atomically)."})
    to_llama: bool = field(default=False, metadata={"help": "Write a plain LlamaForCausalLM instead of TinyLLM."})


def convert(argv: list[str] | None = None) -> None:
    """Convert a saved Llama or GPT-2 checkpoint into TinyLLM, or a TinyLLM into a plain Llama folder."""
    from .convert import convert_folder

    (args,) = HfArgumentParser(ConvertArguments).parse_args_into_dataclasses(args=argv)
    path = convert_folder(args.source, args.output_dir, to_llama=args.to_llama)
    print(f"Wrote {path}: {', '.join(sorted(p.name for p in path.iterdir()))}")


@dataclass
class TinyWorldArguments:
    output_dir: str = field(metadata={"help": "Folder for train/validation/heldout_arithmetic files."})
    format: str = field(default="jsonl", metadata={"help": "jsonl or parquet."})
    seed: int = field(default=0, metadata={"help": "Corpus seed (the held-out problems do not depend on it)."})
    num_train_documents: int = field(default=40_000)
    num_validation_documents: int = field(default=2_000)
    max_operand: int = field(default=20, metadata={"help": "Largest operand of plus/minus problems."})
    max_factor: int = field(default=12, metadata={"help": "Largest factor of times problems."})
    heldout_fraction: float = field(default=0.1, metadata={"help": "Share of arithmetic problems held out."})


def generate_tinyworld(argv: list[str] | None = None) -> None:
    """Generate the TinyWorld corpus and write it to disk (one file per split), printing its exact entropy floor."""
    from .data.tinyworld import TinyWorld, TinyWorldConfig, save_tinyworld, tinyworld_dataset

    (args,) = HfArgumentParser(TinyWorldArguments).parse_args_into_dataclasses(args=argv)
    fields = {k: v for k, v in vars(args).items() if k not in ("output_dir", "format")}
    config = TinyWorldConfig(**fields)
    path = save_tinyworld(tinyworld_dataset(config), args.output_dir, format=args.format)
    summary = {k: v for k, v in TinyWorld(config).summary().items() if k != "config"}
    print(f"Wrote TinyWorld to {path}:\n{json.dumps(summary, indent=2)}")


@dataclass
class TokenizerArguments:
    output_dir: str = field(metadata={"help": "Folder to write the tokenizer to (atomically)."})
    dataset: str = field(
        default="tinyworld",
        metadata={
            "help": "'tinyworld', a file or folder of txt/json/jsonl/csv/parquet, a save_to_disk folder, or a "
            "Hub dataset name."
        },
    )
    dataset_config: str | None = field(default=None, metadata={"help": "A Hub dataset's configuration (subset)."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of txt/json/jsonl/csv files."})
    split: str = field(default="train", metadata={"help": "Split to train on."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a merge."})
    model_max_length: int = field(default=1024, metadata={"help": "Longest sequence the tokenizer will announce."})
    streaming: bool = field(default=False, metadata={"help": "Read the corpus lazily (larger than RAM)."})
    max_documents: int | None = field(
        default=None, metadata={"help": "Train on the first N documents only (a sample of a large corpus)."}
    )
    add_prefix_space: bool = field(
        default=False, metadata={"help": "Encode a text's first word as inside a sentence (see train_tokenizer)."}
    )


def tokenizer(argv: list[str] | None = None) -> None:
    """Train a byte-level BPE tokenizer and save it as a folder that `AutoTokenizer.from_pretrained` loads."""
    from .data.loading import load_text_dataset
    from .tokenization import save_tokenizer, train_tokenizer

    (args,) = HfArgumentParser(TokenizerArguments).parse_args_into_dataclasses(args=argv)
    options = dict(text_column=args.text_column, split=args.split, encoding=args.encoding, config=args.dataset_config)
    dataset = load_text_dataset(args.dataset, streaming=args.streaming, **options)
    if args.max_documents is not None:
        dataset = dataset.take(args.max_documents)
    trained = train_tokenizer(
        dataset,
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        text_column=args.text_column,
        model_max_length=args.model_max_length,
        add_prefix_space=args.add_prefix_space,
    )
    path = save_tokenizer(trained, args.output_dir)
    print(f"Trained a {len(trained)}-token byte-level BPE on {args.dataset!r}; saved to {path}")


def train_trainer(argv: list[str] | None = None) -> None:
    """Train or fine-tune a TinyLLM through `transformers.Trainer` (all the usual TrainingArguments flags work)."""
    from transformers import TrainingArguments

    from .training import DataArguments, ModelArguments, ProbeArguments
    from .training.trainer import LoraArguments, run_trainer

    parser = HfArgumentParser((ModelArguments, DataArguments, LoraArguments, TrainingArguments, ProbeArguments))
    metrics = run_trainer(*parser.parse_args_into_dataclasses(args=argv))
    print(json.dumps(metrics, indent=2, default=str))


def train_sft(argv: list[str] | None = None) -> None:
    """Supervised fine-tuning of a saved TinyLLM with TRL on TinyWorld questions and answers (the `sft` extra)."""
    from .training.sft import parse_sft_arguments, run_sft

    print(json.dumps(run_sft(*parse_sft_arguments(argv)), indent=2))


__all__ = ["convert", "generate_tinyworld", "tokenizer", "train_sft", "train_trainer"]
