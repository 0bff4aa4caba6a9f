"""TinyLLM vs transformers' LlamaForCausalLM: same sizes, same (converted) weights, same precision, one run.

    python benchmarks/bench_model.py                      # micro preset, fp32, CPU
    python benchmarks/bench_model.py --dtype bfloat16     # bf16 autocast for training, bf16 weights for generation

Measures training-step tokens/s (forward + backward + AdamW), generation tokens/s (greedy; batch 1 and batched;
dynamic and static cache), peak accelerator memory (CUDA only), and achieved FLOP/s as a fraction of this machine's
measured matmul peak. The two models run alternately, `--repeats` times, and the median is reported, so drift in
machine load hits both sides alike. Both models must produce the same tokens: the run stops if they do not.
"""

import json
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from hf_tinyllm.convert import to_llama
from hf_tinyllm.presets import build_model
from hf_tinyllm.training.throughput import matmul_parameters, matmul_peak_flops, training_flops_per_token


@dataclass
class BenchArguments:
    preset: str = field(default="micro", metadata={"help": "TinyLLM preset (hf_tinyllm.presets)."})
    dtype: str = field(default="float32", metadata={"help": "float32 or bfloat16."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto."})
    attn_implementation: str = field(default="sdpa", metadata={"help": "Attention backend for both models."})
    batch_size: int = field(default=8, metadata={"help": "Training batch size."})
    seq_len: int = field(default=256, metadata={"help": "Training sequence length."})
    train_steps: int = field(default=3, metadata={"help": "Timed training steps per repeat."})
    prompt_len: int = field(default=32, metadata={"help": "Generation prompt length."})
    new_tokens: int = field(default=64, metadata={"help": "Generated tokens per sequence."})
    gen_batch: int = field(default=8, metadata={"help": "Batch size of the batched generation runs."})
    repeats: int = field(default=3, metadata={"help": "Alternating repeats per measurement; the median is kept."})
    seed: int = field(default=0)
    output_json: str | None = field(default=None, metadata={"help": "Also write the results here."})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def make_train_step(model, batch, autocast) -> Callable[[], None]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=batch.device.type == "cuda")

    def step() -> None:
        with autocast():
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def make_generate(model, prompt, new_tokens: int, cache: str) -> Callable[[], torch.Tensor]:
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    if cache == "static":
        kwargs["cache_implementation"] = "static"
    return lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **kwargs)


def alternate(fns: dict[str, Callable[[], object]], repeats: int, device: torch.device, warmup: int = 1) -> dict:
    """Seconds of each function per repeat, run in alternating order so that load drift hits both sides alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    seconds = {name: [] for name in fns}
    order = list(fns)
    for _ in range(repeats):
        for name in order:
            seconds[name].append(timed(fns[name], device))
        order.reverse()  # A B, B A, ...: neither model always runs first
    return seconds


def summarise(
    task: str, seconds: dict[str, list[float]], work: float, flops_per_unit: float | None, peak: float
) -> list[dict]:
    """Median throughput of each model, and the median (and range) of the per-repeat ratio ours/peer: adjacent runs
    share the machine's state, so paired ratios are steadier than a ratio of medians on a noisy host."""
    ratios = [peer / ours for ours, peer in zip(seconds["tinyllm"], seconds["llama"], strict=True)]
    rows = []
    for name, s in seconds.items():
        tps = work / statistics.median(s)
        mfu = tps * flops_per_unit / peak if flops_per_unit else None
        rows.append(
            dict(
                task=task,
                model=name,
                tokens_per_s=tps,
                mfu=mfu,
                ratio=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
            )
        )
    return rows


def run(args: BenchArguments) -> list[dict]:
    hf_logging.set_verbosity_error()
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    positions = max(args.seq_len, args.prompt_len + args.new_tokens)
    tiny = build_model(args.preset, max_position_embeddings=positions)
    tiny.set_attn_implementation(args.attn_implementation)
    models = {"tinyllm": tiny, "llama": to_llama(tiny)}
    for model in models.values():
        model.to(device)
    vocab = tiny.config.vocab_size
    gen = torch.Generator().manual_seed(args.seed)
    batch = torch.randint(3, vocab, (args.batch_size, args.seq_len), generator=gen).to(device)

    rows = []
    peak = matmul_peak_flops(device.type, dtype)
    flops_per_token = training_flops_per_token(tiny.config, matmul_parameters(tiny), args.seq_len)

    # Training: fp32 master weights; bf16 through autocast (the usual mixed-precision recipe).
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else nullcontext
    steps = {name: make_train_step(m.train(), batch, autocast) for name, m in models.items()}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train_fns = {name: (lambda s=s: [s() for _ in range(args.train_steps)]) for name, s in steps.items()}
    seconds = alternate(train_fns, args.repeats, device)
    tokens = args.batch_size * args.seq_len * args.train_steps
    rows += summarise("train", seconds, tokens, flops_per_token, peak)
    del steps, train_fns

    # Generation: weights in the benchmark dtype, eval mode; the two models must agree token for token.
    for model in models.values():
        model.eval().to(dtype)
    for gen_batch in sorted({1, args.gen_batch}):
        prompt = torch.randint(3, vocab, (gen_batch, args.prompt_len), generator=gen).to(device)
        for cache in ("dynamic", "static"):
            fns = {name: make_generate(m, prompt, args.new_tokens, cache) for name, m in models.items()}
            outputs = {name: fn() for name, fn in fns.items()}
            if not torch.equal(outputs["tinyllm"], outputs["llama"]):
                raise RuntimeError(f"TinyLLM and Llama generated different tokens (batch {gen_batch}, {cache} cache)")
            seconds = alternate(fns, args.repeats, device, warmup=0)
            rows += summarise(f"generate b={gen_batch} {cache}", seconds, gen_batch * args.new_tokens, None, peak)
    if device.type == "cuda":
        rows.append(
            dict(
                task="peak memory (GiB, whole run)",
                model="both",
                tokens_per_s=torch.cuda.max_memory_allocated() / 2**30,
                mfu=None,
            )
        )
    print_table(rows, args, device, peak)
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(
                {"args": asdict(args), "device": str(device), "matmul_peak_flops": peak, "rows": rows}, f, indent=2
            )
    return rows


def print_table(rows: list[dict], args: BenchArguments, device: torch.device, peak: float) -> None:
    print(
        f"\nTinyLLM vs LlamaForCausalLM | preset {args.preset}, {args.dtype}, {device}, attention "
        f"{args.attn_implementation}, train batch {args.batch_size}x{args.seq_len}, generate {args.prompt_len}+"
        f"{args.new_tokens} tokens | torch {torch.__version__}, {torch.get_num_threads()} threads | "
        f"measured matmul peak {peak / 1e9:.0f} GFLOP/s"
    )
    print(
        f"{'task':<24}{'tinyllm tok/s':>15}{'llama tok/s':>15}{'ratio [range]':>22}{'tinyllm MFU':>13}{'llama MFU':>11}"
    )
    by_task: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], {})[row["model"]] = row
    for task, pair in by_task.items():
        if "both" in pair:
            print(f"{task:<24}{pair['both']['tokens_per_s']:>15.2f}")
            continue
        ours, peer = pair["tinyllm"], pair["llama"]
        mfu = "".join(f"{r['mfu']:>12.1%} " if r["mfu"] is not None else f"{'':>13}" for r in (ours, peer))
        ratio = f"{ours['ratio']:.3f} [{ours['ratio_min']:.2f}-{ours['ratio_max']:.2f}]"
        print(f"{task:<24}{ours['tokens_per_s']:>15.1f}{peer['tokens_per_s']:>15.1f}{ratio:>22}{mfu}")


if __name__ == "__main__":
    (bench_args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses()
    run(bench_args)
