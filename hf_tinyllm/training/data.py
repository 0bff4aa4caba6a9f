"""Everything a training run reads: the tokenizer, packed training and validation blocks, validation documents for
`evaluate_model`, and, on TinyWorld, the held-out arithmetic problems and the exact entropy floor."""

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path

from datasets import Dataset, IterableDataset
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from ..data.holdout import held_out
from ..data.loading import load_text_dataset
from ..data.packing import (
    DataCollatorForCausalLM,
    documents_per_block,
    pack_dataset,
    split_train_validation,
    tokenize_dataset,
)
from ..data.shards import TokenBlocks, TokenShards, check_tokenizer, is_token_shards, read_manifest
from ..data.tinyworld import TinyWorld, TinyWorldConfig, tinyworld_dataset
from ..evaluation import evaluate_model
from ..tokenization import load_tokenizer, save_tokenizer, train_tokenizer
from .arguments import DataArguments
from .streaming import PackedStream, packed_stream

# Validation documents kept in memory from token shards or a stream, for `evaluate_model` and the probes (which take
# fewer): TinyWorld's default validation set, four times `--eval_documents`' default.
SHARD_VALIDATION_DOCUMENTS = 2_000


@dataclass
class TrainingData:
    tokenizer: PreTrainedTokenizerFast
    train_blocks: Dataset | TokenBlocks | PackedStream  # packed in memory, memory-mapped shards, or a stream
    validation_blocks: Dataset | TokenBlocks
    validation_documents: Dataset
    heldout_arithmetic: Dataset | None = None
    floor_bits_per_byte: float | None = None
    trained_arithmetic: Dataset | None = None  # as many problems seen in training as are held out (probes)
    tinyworld: TinyWorldConfig | None = None  # the generator of the documents, when TinyWorld (the truth probe)

    def evaluate(self, model: PreTrainedModel, max_documents: int) -> dict:
        """`evaluate_model` on the validation documents, with the held-out arithmetic and floor when there are."""
        return evaluate_model(
            model, self.tokenizer, self.validation_documents, heldout_arithmetic=self.heldout_arithmetic,
            floor_bits_per_byte=self.floor_bits_per_byte, max_documents=max_documents,
        )  # fmt: skip


def tinyworld_validation_documents(train_documents: int) -> int:
    """Validation documents for a TinyWorld run: 5% of its training documents, at least 100 and at most TinyWorld's
    default of 2,000 (reached at 40,000 training documents, the default run), so a 600-document experiment does not
    generate, tokenise and pack three times its training set for validation."""
    return min(TinyWorldConfig.num_validation_documents, max(100, train_documents // 20))


def tinyworld_config(args: DataArguments) -> TinyWorldConfig:
    """The TinyWorld configuration a run's data arguments ask for."""
    config = TinyWorldConfig(
        num_train_documents=args.tinyworld_documents,
        num_validation_documents=tinyworld_validation_documents(args.tinyworld_documents),
    )
    if args.tinyworld_weights:
        config.family_weights = json.loads(args.tinyworld_weights)
    return config


def _documents(args: DataArguments, seed: int) -> tuple[Dataset, Dataset, Dataset | None, float | None, Dataset | None]:
    if args.dataset == "tinyworld":
        config = tinyworld_config(args)
        generator = TinyWorld(config)  # one generation of the documents, for the splits and the trained problems
        world = tinyworld_dataset(generator)
        heldout = world["heldout_arithmetic"]
        trained = [asdict(p) for p in generator.trained_problems(len(heldout), seed=seed)]
        trained = Dataset.from_list(trained) if trained else None
        return world["train"], world["validation"], heldout, generator.floor_bits_per_byte(), trained
    options = dict(text_column=args.text_column, encoding=args.encoding, config=args.dataset_config)
    train = load_text_dataset(args.dataset, split="train", **options)
    try:
        validation = load_text_dataset(args.dataset, split="validation", **options)
    except ValueError:  # no validation split: hold out a seeded fraction
        parts = split_train_validation(train, args.validation_fraction, seed=seed)
        train, validation = parts["train"], parts["validation"]
    if args.text_column != "text":
        train = train.rename_column(args.text_column, "text")
        validation = validation.rename_column(args.text_column, "text")
    return train, validation, None, None, None


def prepare_training_data(
    args: DataArguments, main_process_first: Callable[[], AbstractContextManager], output_dir: Path, seed: int
) -> TrainingData:
    """Load (or train, on the main process first, and save under `output_dir/tokenizer`) the tokenizer, then tokenise
    and pack. Every process ends with the same blocks; the dataloader shards them. `main_process_first` is
    `accelerator.main_process_first` or `TrainingArguments.main_process_first`."""
    if is_token_shards(args.dataset):
        if args.streaming:
            raise ValueError(f"--dataset {args.dataset} holds token shards, which are read by memory map; drop "
                             "--streaming (it is for text that is not tokenised yet).")  # fmt: skip
        return _token_shards_data(args)
    if args.streaming:
        train, validation = _streamed_documents(args, seed)
        heldout = floor = trained = None
    else:
        train, validation, heldout, floor, trained = _documents(args, seed)
    tokenizer_dir = output_dir / "tokenizer"
    with main_process_first():
        if args.tokenizer is not None:
            tokenizer = load_tokenizer(args.tokenizer)
        elif tokenizer_dir.is_dir():  # resumed run: the tokenizer the checkpoints were trained with
            tokenizer = load_tokenizer(tokenizer_dir)
        else:
            tokenizer = train_tokenizer(
                train, vocab_size=args.vocab_size, add_prefix_space=args.tokenizer_add_prefix_space
            )
            save_tokenizer(tokenizer, tokenizer_dir)

    def blocks(documents: Dataset) -> Dataset:
        tokens = tokenize_dataset(documents, tokenizer, num_proc=args.num_proc)
        return pack_dataset(tokens, args.block_size, document_positions=args.document_positions,
                            bos_token_id=tokenizer.bos_token_id)  # fmt: skip

    if args.streaming:
        stream = packed_stream(train, tokenizer, args.block_size, args.document_positions)
        return TrainingData(tokenizer, stream, blocks(validation), validation)
    world = tinyworld_config(args) if args.dataset == "tinyworld" else None
    return TrainingData(tokenizer, blocks(train), blocks(validation), validation, heldout, floor, trained, world)


def _streamed_documents(args: DataArguments, seed: int) -> tuple[IterableDataset, Dataset]:
    """The training stream, and validation documents in memory (at most `SHARD_VALIDATION_DOCUMENTS`): the source's
    validation split, or a seeded `--validation_fraction` of it chosen by a hash of each text (`held_out`)."""
    options = dict(text_column=args.text_column, encoding=args.encoding, config=args.dataset_config, streaming=True)
    train = load_text_dataset(args.dataset, split="train", **options)
    try:
        validation = load_text_dataset(args.dataset, split="validation", **options)
    except ValueError:  # no validation split
        column, fraction = args.text_column, args.validation_fraction
        validation = train.filter(lambda row: held_out(row[column] or "", seed, fraction))
        train = train.filter(lambda row: not held_out(row[column] or "", seed, fraction))
    if args.text_column != "text":
        train = train.rename_column(args.text_column, "text")
        validation = validation.rename_column(args.text_column, "text")
    texts = [row["text"] for row in validation.take(SHARD_VALIDATION_DOCUMENTS) if row["text"]]
    if not texts:
        raise ValueError(f"--streaming: {args.dataset} gave no validation documents; raise --validation_fraction.")
    return train, Dataset.from_dict({"text": texts})


def _token_shards_data(args: DataArguments) -> TrainingData:
    """Blocks memory-mapped from a `tinyllm tokenize` folder, checked against the tokenizer given; the validation
    documents decoded back to text (byte-level BPE round-trips exactly)."""
    manifest = read_manifest(args.dataset)
    if args.tokenizer is None:
        raise ValueError(
            f"--dataset {args.dataset} holds token shards: pass --tokenizer with the tokenizer they were written with "
            f"({manifest['tokenizer']['name']})."
        )
    tokenizer = load_tokenizer(args.tokenizer)
    check_tokenizer(manifest, tokenizer, args.dataset)
    train, validation = (TokenShards(args.dataset, split) for split in ("train", "validation"))
    count = min(SHARD_VALIDATION_DOCUMENTS, validation.num_documents)
    texts = [tokenizer.decode(validation.document(i)[1:-1]) for i in range(count)]  # without bos and eos
    return TrainingData(
        tokenizer,
        TokenBlocks(train, args.block_size, args.document_positions),
        TokenBlocks(validation, args.block_size, args.document_positions),
        Dataset.from_dict({"text": texts}),
    )


def training_collator(
    data: TrainingData, data_args: DataArguments, attn_implementation: str, batch_size: int
) -> DataCollatorForCausalLM:
    """The collator of a run: packed blocks stacked, or flattened into one row with their document boundaries (flash
    attention kernels; `--flatten_batches`), whose boundary tensors have a fixed size for the whole run. `batch_size`
    is the largest batch it will collate (the Trainer evaluates with it too: validation blocks count)."""
    if not data_args.flattens(attn_implementation):
        return DataCollatorForCausalLM(data.tokenizer.pad_token_id)
    most = max(documents_per_block(blocks) for blocks in (data.train_blocks, data.validation_blocks))
    max_documents = batch_size * most
    return DataCollatorForCausalLM(data.tokenizer.pad_token_id, flatten=True, max_documents=max_documents)


__all__ = [
    "TrainingData",
    "prepare_training_data",
    "tinyworld_config",
    "tinyworld_validation_documents",
    "training_collator",
]
