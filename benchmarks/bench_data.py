"""Data-pipeline throughput on this machine: TinyWorld generation, tokenizer training, batched tokenisation with
`datasets.map` (1 and N processes, then the cached second run), and packing.

    python benchmarks/bench_data.py [--vocab_size 4096] [--num_proc 2]
"""

import json
import os
import tempfile
import time
from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class DataBenchArguments:
    vocab_size: int = field(default=4096, metadata={"help": "Tokenizer vocabulary size."})
    num_proc: int = field(default=2, metadata={"help": "Processes for the parallel tokenisation run."})
    block_size: int = field(default=256, metadata={"help": "Packing block size."})


def clock(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(args: DataBenchArguments) -> dict:
    work = tempfile.mkdtemp(prefix="bench_data_")
    os.environ["HF_DATASETS_CACHE"] = os.path.join(work, "cache")  # before datasets is imported: a cold cache
    from datasets.utils.logging import disable_progress_bar

    from hf_tinyllm.data.loading import load_text_dataset
    from hf_tinyllm.data.packing import pack_dataset, tokenize_dataset
    from hf_tinyllm.data.tinyworld import TinyWorld, save_tinyworld, tinyworld_dataset
    from hf_tinyllm.tokenization import train_tokenizer

    disable_progress_bar()
    corpus, generate_s = clock(tinyworld_dataset)
    save_tinyworld(corpus, os.path.join(work, "tinyworld"), format="parquet")
    train = load_text_dataset(os.path.join(work, "tinyworld", "train.parquet"))  # file-backed: map can cache
    tokenizer, tokenizer_s = clock(lambda: train_tokenizer(train, vocab_size=args.vocab_size))
    results = {
        "documents": len(train),
        "megabytes": sum(len(t.encode()) + 1 for t in train["text"]) / 1e6,
        "floor_bits_per_byte": TinyWorld().floor_bits_per_byte(),
        "generate_s": generate_s,
        "train_tokenizer_s": tokenizer_s,
    }
    for num_proc in sorted({1, args.num_proc}):
        shuffled = train.shuffle(seed=num_proc).flatten_indices()  # different data per run: no cache hit
        tokenized, seconds = clock(lambda d=shuffled, n=num_proc: tokenize_dataset(d, tokenizer, num_proc=n))
        tokens = sum(len(ids) for ids in tokenized["input_ids"])
        results[f"tokenize_num_proc_{num_proc}_tokens_per_s"] = tokens / seconds
    tokenized, cold_s = clock(lambda: tokenize_dataset(train, tokenizer))
    _, warm_s = clock(lambda: tokenize_dataset(train, tokenizer))
    results["tokens"] = sum(len(ids) for ids in tokenized["input_ids"])
    results["bytes_per_token"] = results["megabytes"] * 1e6 / results["tokens"]
    results["tokenize_cold_s"], results["tokenize_cached_s"] = cold_s, warm_s
    packed, results["pack_s"] = clock(lambda: pack_dataset(tokenized, args.block_size))
    results["blocks"] = len(packed)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    (bench_args,) = HfArgumentParser(DataBenchArguments).parse_args_into_dataclasses()
    main(bench_args)
