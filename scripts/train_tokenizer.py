"""Train a byte-level BPE tokenizer and save it as a folder that `AutoTokenizer.from_pretrained` loads.

python scripts/train_tokenizer.py --dataset tinyworld --vocab_size 2048 --output_dir outputs/tokenizer
python scripts/train_tokenizer.py --dataset path/to/texts/ --text_column text --output_dir my-tokenizer
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_tinyllm.data.loading import load_text_dataset
from hf_tinyllm.errors import entry_point
from hf_tinyllm.tokenization import save_tokenizer, train_tokenizer


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
    text_column: str = field(default="text", metadata={"help": "Column holding the text."})
    encoding: str = field(default="utf-8", metadata={"help": "Text encoding of txt/json/jsonl/csv files."})
    split: str = field(default="train", metadata={"help": "Split to train on."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Minimum pair frequency for a merge."})
    model_max_length: int = field(default=1024, metadata={"help": "Longest sequence the tokenizer will announce."})
    streaming: bool = field(default=False, metadata={"help": "Read the corpus lazily (larger than RAM)."})
    add_prefix_space: bool = field(
        default=False, metadata={"help": "Encode a text's first word as inside a sentence (see train_tokenizer)."}
    )


def main(args: TokenizerArguments) -> None:
    dataset = load_text_dataset(
        args.dataset, text_column=args.text_column, split=args.split, streaming=args.streaming, encoding=args.encoding
    )
    tokenizer = train_tokenizer(
        dataset,
        vocab_size=args.vocab_size,
        min_frequency=args.min_frequency,
        text_column=args.text_column,
        model_max_length=args.model_max_length,
        add_prefix_space=args.add_prefix_space,
    )
    path = save_tokenizer(tokenizer, args.output_dir)
    print(f"Trained a {len(tokenizer)}-token byte-level BPE on {args.dataset!r}; saved to {path}")


@entry_point
def run() -> None:
    (parsed,) = HfArgumentParser(TokenizerArguments).parse_args_into_dataclasses()
    main(parsed)


if __name__ == "__main__":
    run()
