"""Training data at scale on this machine: today's Arrow path (`datasets.map` tokenisation, then packing in memory),
token shards (`tinyllm tokenize`, memory-mapped), and streaming (tokenised and packed online), side by side.

For each size (tokens) and path, in a fresh process each: disk bytes per token, time to the first batch and peak
RSS; for shards and streaming the loader's tokens/s in one process (one worker's worth); for shards and the Arrow path
the time to the first batch after a resume at the start, middle and end of an epoch (shards: `EpochSampler`
positioned in O(1); Arrow: Accelerate's `skip_first_batches`, as the loop resumes it). Beside them, the tokens/s the
nano, micro and small presets train at on this machine (what a loader must keep up with).

The corpus is TinyWorld's default text repeated to the size (the pipelines' costs depend on text and token counts,
not on novelty). The 1B point runs for shards only, as the 100M shards listed ten times in a manifest (the same
files read again): the Arrow path would hold 16 bytes a token in memory (about 16 GB) and streaming reads its source
as it goes, so their costs at 1B follow from the measured per-token figures; the table says so.

    python benchmarks/bench_data_scale.py [--sizes 10M,100M,1B] [--output benchmarks/results/data_scale.json]
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

BLOCK, BATCH = 1024, 16
SIZES = {"10M": 10_000_000, "100M": 100_000_000, "1B": 1_000_000_000}


def peak_rss_mb() -> float:
    """Peak resident memory of this process since its exec (VmHWM; ru_maxrss keeps the forked parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def resident_mb() -> dict:
    """Resident memory now: anonymous (the process's own allocations) and file-backed (memory-mapped pages it has
    touched, which the kernel drops under memory pressure and re-reads from disk)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {f"rss_{kind.lower()}_mb": int(fields[f"Rss{kind}"].split()[0]) / 1024 for kind in ("Anon", "File")}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure_shards(folder: str, loader_batches: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from hf_tinyllm.data.packing import DataCollatorForCausalLM
    from hf_tinyllm.data.shards import TokenBlocks, TokenShards
    from hf_tinyllm.training.sampler import EpochSampler

    imports_rss = peak_rss_mb()
    start = time.perf_counter()
    blocks = TokenBlocks(TokenShards(folder, "train"), BLOCK)
    sampler = EpochSampler(len(blocks), BATCH, seed=0)
    loader = DataLoader(blocks, BATCH, sampler=sampler, drop_last=True, collate_fn=DataCollatorForCausalLM(0))
    next(iter(loader))
    result = {"first_batch_s": time.perf_counter() - start, "blocks": len(blocks)}
    for name, batch in (("start", 0), ("middle", sampler.batches_per_epoch // 2),
                        ("end", sampler.batches_per_epoch - 1)):  # fmt: skip
        start = time.perf_counter()
        sampler.set_position(0, batch)
        next(iter(loader))
        result[f"resume_{name}_s"] = time.perf_counter() - start
    sampler.set_position(1, 0)
    start, tokens = time.perf_counter(), 0
    for i, batch in enumerate(loader):
        tokens += batch["input_ids"].numel()
        if i + 1 == loader_batches:
            break
    result["loader_tokens_per_s"] = tokens / (time.perf_counter() - start)
    result["peak_rss_mb"], result["rss_after_imports_mb"] = peak_rss_mb(), imports_rss
    result.update(resident_mb())
    del torch
    return result


def measure_arrow(corpus: str, tokenizer: str, cache: str) -> dict:
    from accelerate import skip_first_batches
    from datasets.utils.logging import disable_progress_bar
    from torch.utils.data import DataLoader

    from hf_tinyllm.data.loading import load_text_dataset
    from hf_tinyllm.data.packing import DataCollatorForCausalLM, pack_dataset, tokenize_dataset
    from hf_tinyllm.tokenization import load_tokenizer

    disable_progress_bar()
    imports_rss = peak_rss_mb()
    start = time.perf_counter()
    tok = load_tokenizer(tokenizer)
    tokens = tokenize_dataset(load_text_dataset(corpus), tok, num_proc=2)
    blocks = pack_dataset(tokens, BLOCK, document_positions=True, bos_token_id=tok.bos_token_id)
    loader = DataLoader(blocks, BATCH, shuffle=True, drop_last=True, collate_fn=DataCollatorForCausalLM(0))
    next(iter(loader))
    result = {"first_batch_s": time.perf_counter() - start, "cache_bytes": folder_bytes(Path(cache))}
    for name, batch in (("start", 0), ("middle", len(loader) // 2), ("end", len(loader) - 1)):
        start = time.perf_counter()
        next(iter(skip_first_batches(loader, batch) if batch else loader))
        result[f"resume_{name}_s"] = time.perf_counter() - start
    result["peak_rss_mb"], result["rss_after_imports_mb"] = peak_rss_mb(), imports_rss
    return result


def measure_streaming(corpus: str, tokenizer: str, loader_batches: int) -> dict:
    from torch.utils.data import DataLoader

    from hf_tinyllm.data.loading import load_text_dataset
    from hf_tinyllm.data.packing import DataCollatorForCausalLM, pack_dataset, tokenize_dataset
    from hf_tinyllm.tokenization import load_tokenizer

    imports_rss = peak_rss_mb()
    start = time.perf_counter()
    tok = load_tokenizer(tokenizer)
    stream = tokenize_dataset(load_text_dataset(corpus, streaming=True), tok)
    blocks = pack_dataset(stream, BLOCK, document_positions=True, bos_token_id=tok.bos_token_id)
    iterator = iter(DataLoader(blocks, BATCH, collate_fn=DataCollatorForCausalLM(0)))
    next(iterator)
    result = {"first_batch_s": time.perf_counter() - start}
    start, tokens = time.perf_counter(), 0
    for _ in range(loader_batches):
        tokens += next(iterator)["input_ids"].numel()
    result["loader_tokens_per_s"] = tokens / (time.perf_counter() - start)
    result["peak_rss_mb"], result["rss_after_imports_mb"] = peak_rss_mb(), imports_rss
    return result


def measure_presets(steps: int = 3) -> dict:
    """Training tokens/s of the presets in this process (fp32, AdamW, batch 4 x 256): what a loader must feed."""
    import torch

    from hf_tinyllm.presets import build_model

    torch.manual_seed(0)
    result = {}
    for preset in ("nano", "micro", "small"):
        model = build_model(preset, vocab_size=4096)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        ids = torch.randint(4096, (4, 256))
        for step in range(steps + 1):
            if step == 1:
                start = time.perf_counter()
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        result[preset] = ids.numel() * steps / (time.perf_counter() - start)
    return result


def child(kind: str, *args: str, env: dict | None = None) -> dict:
    """One measurement in a fresh interpreter (its own peak RSS)."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})}, check=False)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_corpus(path: Path, tokens: int, tokens_per_copy: int) -> None:
    """TinyWorld's default training text repeated until it holds about `tokens` tokens, as JSON Lines."""
    from hf_tinyllm.data.tinyworld import tinyworld_dataset

    lines = [json.dumps({"text": t}) + "\n" for t in tinyworld_dataset()["train"]["text"]]
    block = "".join(lines)
    with path.open("w") as f:
        for _ in range(max(1, round(tokens / tokens_per_copy))):
            f.write(block)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10M,100M,1B")
    parser.add_argument("--work", default="outputs/bench_data_scale")
    parser.add_argument("--output", default="benchmarks/results/data_scale.json")
    parser.add_argument("--loader_batches", type=int, default=200)
    parser.add_argument("--child", nargs="+")
    parser.add_argument("--remeasure_shards", action="store_true",
                        help="Measure the shards of --work again and update --output (no tokenising).")  # fmt: skip
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "shards":
            print(json.dumps(measure_shards(rest[0], args.loader_batches)))
        elif kind == "arrow":
            print(json.dumps(measure_arrow(*rest)))
        elif kind == "streaming":
            print(json.dumps(measure_streaming(*rest, args.loader_batches)))
        else:
            print(json.dumps(measure_presets()))
        return

    from machine import cpu_name

    from hf_tinyllm.data.shard_writer import write_token_shards
    from hf_tinyllm.data.shards import MANIFEST
    from hf_tinyllm.data.tinyworld import tinyworld_dataset
    from hf_tinyllm.tokenization import load_tokenizer, save_tokenizer, train_tokenizer

    work = Path(args.work)
    if args.remeasure_shards:
        results = json.loads(Path(args.output).read_text())
        for label, row in results["sizes"].items():
            row["shards"].update(child("shards", str(work / f"shards-{label}")))
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(json.dumps({label: row["shards"] for label, row in results["sizes"].items()}, indent=1))
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    tokenizer_dir = str(save_tokenizer(train_tokenizer(tinyworld_dataset()["train"], vocab_size=4096),
                                       work / "tokenizer"))  # fmt: skip
    tokenizer = load_tokenizer(tokenizer_dir)
    copy = list(tinyworld_dataset()["train"]["text"])
    tokens_per_copy = sum(len(ids) + 1 for ids in tokenizer(copy)["input_ids"])
    machine = f"{cpu_name()}, {os.cpu_count()} cores, fp32"
    results = {"machine": machine, "block_size": BLOCK, "batch_size": BATCH, "sizes": {}}
    results["presets_train_tokens_per_s"] = child("presets")
    largest_written = None
    for label in args.sizes.split(","):
        size = SIZES[label]
        row: dict = {}
        if size <= 100_000_000:
            corpus = work / f"corpus-{label}.jsonl"
            build_corpus(corpus, size, tokens_per_copy)
            shards = work / f"shards-{label}"
            start = time.perf_counter()
            manifest = write_token_shards(corpus, shards, tokenizer, tokenizer_dir, validation_fraction=0.001,
                                          num_proc=2, progress_bar=False)  # fmt: skip
            written = manifest["splits"]["train"]["tokens"] + manifest["splits"]["validation"]["tokens"]
            row["tokens"] = written
            row["source_bytes_per_token"] = corpus.stat().st_size / written
            index_bytes = sum(p.stat().st_size for p in shards.rglob("*.ds.index"))
            row["shards"] = {"tokenize_s": time.perf_counter() - start,
                             "disk_bytes_per_token": folder_bytes(shards) / written,
                             "index_bytes_per_token": index_bytes / written}  # fmt: skip
            row["shards"]["tokenize_tokens_per_s"] = written / row["shards"]["tokenize_s"]
            row["shards"].update(child("shards", str(shards)))
            cache = work / f"cache-{label}"
            arrow = child("arrow", str(corpus), tokenizer_dir, str(cache), env={"HF_DATASETS_CACHE": str(cache)})
            arrow["disk_bytes_per_token"] = arrow.pop("cache_bytes") / written
            row["arrow"] = arrow
            row["streaming"] = child("streaming", str(corpus), tokenizer_dir)
            row["streaming"]["disk_bytes_per_token"] = 0.0  # reads the source itself (source_bytes_per_token)
            shutil.rmtree(cache, ignore_errors=True)
            largest_written = (shards, label)
        else:  # the largest shards written, listed again until the size: the same files read again
            source, source_label = largest_written
            shards = work / f"shards-{label}"
            shards.mkdir()
            manifest = json.loads((source / MANIFEST).read_text())
            repeat = round(size / manifest["splits"]["train"]["tokens"])
            for split in manifest["splits"].values():
                split["shards"] = [{**s, "file": str((source / s["file"]).resolve())} for s in split["shards"]] * repeat
                split["tokens"] *= repeat
            (shards / MANIFEST).write_text(json.dumps(manifest))
            row["tokens"] = manifest["splits"]["train"]["tokens"]
            row["note"] = f"the {source_label} shards listed {repeat} times"
            row["shards"] = child("shards", str(shards))
        results["sizes"][label] = row
        print(json.dumps({label: row}, indent=1), flush=True)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
