"""Peak memory of the streaming data path on a corpus larger than it should ever hold in RAM.

A text file of >= `--gigabytes` (TinyWorld's training documents, one per line, repeated) is written to a temporary
folder and streamed, in a fresh process, through the library's streaming path: `load_text_dataset(streaming=True)`
-> `tokenize_dataset` -> `pack_dataset` (`_stream_blocks`) -> `DataLoader` with `DataCollatorForCausalLM` -> a few
AdamW steps of a debug-size TinyLLM, then to the last block of the file. That process reports its resident memory
and its peak (the kernel's VmHWM, Linux) at doubling token counts, so the curve shows whether memory follows the
file. For contrast, the map-style path (the same code with `streaming=False`) runs on small slices of the corpus.
The temporary folder (corpus, tokenizer, datasets cache) is deleted afterwards.

    python benchmarks/bench_streaming_memory.py [--gigabytes 1.0] [--map_style_megabytes 25,100]
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from machine import cpu_name
from transformers import HfArgumentParser

FIRST_REPORT_TOKENS = 1 << 20  # progress lines at 1M, 2M, 4M ... tokens


@dataclass
class StreamingBenchArguments:
    gigabytes: float = field(default=1.0, metadata={"help": "Size of the streamed corpus on disk."})
    map_style_megabytes: str = field(
        default="25,100", metadata={"help": "Comma-separated corpus sizes for the map-style contrast; '' skips it."}
    )
    train_steps: int = field(default=5, metadata={"help": "AdamW steps on the first batches of the stream."})
    block_size: int = field(default=128, metadata={"help": "Tokens per packed block."})
    batch_size: int = field(default=8, metadata={"help": "Blocks per batch."})
    vocab_size: int = field(default=2048, metadata={"help": "Vocabulary of the tokenizer trained on TinyWorld."})
    work_dir: str | None = field(default=None, metadata={"help": "Parent of the temporary folder (default: $TMPDIR)."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results here."})
    measure: str | None = field(default=None, metadata={"help": "Internal: measure this corpus in this process."})
    tokenizer: str | None = field(default=None, metadata={"help": "Internal: the tokenizer folder to measure with."})
    streaming: bool = field(default=True, metadata={"help": "Internal: stream (or load map-style) the corpus."})


def memory_mb() -> dict[str, float]:
    """This process's resident memory now and its peak so far, from /proc (the peak is exact, not sampled)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {"rss_mb": int(status["VmRSS"].split()[0]) / 1024, "peak_rss_mb": int(status["VmHWM"].split()[0]) / 1024}


def measure(args: StreamingBenchArguments) -> None:
    """One run in this process; prints one JSON line per report."""
    import torch
    from datasets.utils.logging import disable_progress_bar
    from torch.utils.data import DataLoader

    from hf_tinyllm.data.loading import load_text_dataset
    from hf_tinyllm.data.packing import DataCollatorForCausalLM, pack_dataset, tokenize_dataset
    from hf_tinyllm.presets import build_model
    from hf_tinyllm.tokenization import load_tokenizer, model_overrides_for

    disable_progress_bar()
    tokenizer = load_tokenizer(args.tokenizer)
    torch.manual_seed(0)
    model = build_model("debug", max_position_embeddings=args.block_size, **model_overrides_for(tokenizer)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    start = time.perf_counter()

    def report(stage: str, tokens: int, **extra: float) -> None:
        line = {"stage": stage, "tokens": tokens, "seconds": time.perf_counter() - start, **memory_mb(), **extra}
        print(json.dumps(line), flush=True)

    report("setup", 0)
    documents = load_text_dataset(args.measure, streaming=args.streaming)
    tokens = tokenize_dataset(documents, tokenizer)
    blocks = pack_dataset(tokens, args.block_size, document_positions=True, bos_token_id=tokenizer.bos_token_id)
    collate = DataCollatorForCausalLM(pad_token_id=tokenizer.pad_token_id)
    loader = DataLoader(blocks, batch_size=args.batch_size, collate_fn=collate, shuffle=not args.streaming)
    seen, next_report = 0, FIRST_REPORT_TOKENS
    for step, batch in enumerate(loader):
        if step < args.train_steps:
            loss = model(**batch, use_cache=False).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            report("train_step", seen, loss=loss.item())
        seen += batch["input_ids"].numel()
        if seen >= next_report:
            report("stream", seen)
            next_report *= 2
    report("end", seen)


def write_corpus(path: Path, documents: list[str], num_bytes: int) -> Path:
    """At least `num_bytes` of `documents`, one per line, repeated in order."""
    block = "".join(text + "\n" for text in documents).encode()
    with path.open("wb") as f:
        for _ in range(-(-num_bytes // len(block))):
            f.write(block)
    return path


def run_measurement(args: StreamingBenchArguments, corpus: Path, tokenizer: Path, streaming: bool) -> dict:
    command = [sys.executable, __file__, "--measure", str(corpus), "--tokenizer", str(tokenizer),
               "--streaming", str(streaming), "--train_steps", str(args.train_steps),
               "--block_size", str(args.block_size), "--batch_size", str(args.batch_size)]  # fmt: skip
    cache = corpus.parent / "datasets_cache"
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "TOKENIZERS_PARALLELISM": "true"}
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{result.stderr[-4000:]}")
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    end = lines[-1]
    setup = lines[0]
    return {
        "streaming": streaming,
        "file_mb": corpus.stat().st_size / 1e6,
        "tokens": end["tokens"],
        "seconds": end["seconds"],
        "tokens_per_s": end["tokens"] / end["seconds"],
        "setup_rss_mb": setup["rss_mb"],
        "peak_rss_mb": end["peak_rss_mb"],
        "peak_over_setup_mb": end["peak_rss_mb"] - setup["rss_mb"],
        "losses": [line["loss"] for line in lines if line["stage"] == "train_step"],
        "curve": [{k: line[k] for k in ("tokens", "seconds", "rss_mb", "peak_rss_mb")} for line in lines],
    }


def main(args: StreamingBenchArguments) -> dict:
    from hf_tinyllm.data.tinyworld import tinyworld_dataset
    from hf_tinyllm.tokenization import save_tokenizer, train_tokenizer

    with tempfile.TemporaryDirectory(prefix="bench_streaming_", dir=args.work_dir) as work:
        work = Path(work)
        documents = tinyworld_dataset()["train"]["text"]
        tokenizer = save_tokenizer(train_tokenizer(documents, vocab_size=args.vocab_size), work / "tokenizer")
        corpus = write_corpus(work / "corpus.txt", documents, int(args.gigabytes * 1e9))
        results = {"cpu": cpu_name(), "arguments": asdict(args)}
        results["streaming"] = run_measurement(args, corpus, tokenizer, streaming=True)
        corpus.unlink()
        results["map_style"] = []
        for megabytes in [float(mb) for mb in args.map_style_megabytes.split(",") if mb.strip()]:
            piece = write_corpus(work / f"corpus_{megabytes:g}mb.txt", documents, int(megabytes * 1e6))
            results["map_style"].append(run_measurement(args, piece, tokenizer, streaming=False))
            piece.unlink()
    print(json.dumps(results, indent=2))
    print(summary(results))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=2))
    return results


def summary(results: dict) -> str:
    rows = [results["streaming"], *results["map_style"]]
    header = f"{'path':<10} {'file MB':>9} {'tokens':>12} {'s':>8} {'tok/s':>9} {'setup MB':>9} {'peak MB':>8}"
    lines = [f"{results['cpu']}, fp32, {os.cpu_count()} cores", header]
    for row in rows:
        path = "streaming" if row["streaming"] else "map-style"
        lines.append(
            f"{path:<10} {row['file_mb']:>9.0f} {row['tokens']:>12,} {row['seconds']:>8.0f} "
            f"{row['tokens_per_s']:>9.0f} {row['setup_rss_mb']:>9.0f} {row['peak_rss_mb']:>8.0f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    (bench_args,) = HfArgumentParser(StreamingBenchArguments).parse_args_into_dataclasses()
    if bench_args.measure:
        measure(bench_args)
    else:
        main(bench_args)
