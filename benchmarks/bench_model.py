"""TinyLLM vs transformers' LlamaForCausalLM: same sizes, same (converted) weights, same precision, one run.

    python benchmarks/bench_model.py                      # micro preset, fp32, CPU
    python benchmarks/bench_model.py --dtype bfloat16     # bf16 autocast for training, bf16 weights for generation

Measures training-step tokens/s (forward + backward + AdamW), generation tokens/s (greedy; batch 1 and batched;
dynamic and static cache), peak accelerator memory (CUDA only), and achieved FLOP/s as a fraction of this machine's
measured matmul peak. The two models run alternately, `--repeats` times, and the median is reported, so drift in
machine load hits both sides alike. Both models must produce the same tokens: the run stops if they do not.

With `--compiled` (the default) two more lines put TinyLLM's fast paths against the peer's plain eager ones:
`train compiled` (the TinyLLM step under `torch.compile`, inductor, vs Llama eager) and `generate ... fast_decode`
(`generate(fast_decode=True)`, the static-cache compiled decode loop, vs Llama's `generate`). Their one-off
warm-up (compilation; inductor's on-disk cache shortens it in a second process) is printed, not averaged in.
Generation lines also give milliseconds per decode step and the weight bytes read per second: at batch 1 a step
reads every weight once, so on a CPU it is bound by memory bandwidth long before the matmul peak.
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
    compiled: bool = field(
        default=True, metadata={"help": "Also measure TinyLLM's compiled training step and fast_decode generation."}
    )
    compile_backend: str = field(default="inductor", metadata={"help": "torch.compile backend of the training step."})
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
    if cache == "fast_decode":
        kwargs["fast_decode"] = True
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
    task: str,
    seconds: dict[str, list[float]],
    work: float,
    flops_per_unit: float | None,
    peak: float,
    warmup_s: float | None = None,
    step_bytes: int | None = None,
    steps: int | None = None,
) -> list[dict]:
    """Median throughput of each model, and the median (and range) of the per-repeat ratio ours/peer: adjacent runs
    share the machine's state, so paired ratios are steadier than a ratio of medians on a noisy host. For
    generation, `steps` decode steps that each read `step_bytes` of weights give ms per step and weight GB/s."""
    ratios = [peer / ours for ours, peer in zip(seconds["tinyllm"], seconds["llama"], strict=True)]
    rows = []
    for name, s in seconds.items():
        tps = work / statistics.median(s)
        mfu = tps * flops_per_unit / peak if flops_per_unit else None
        row = dict(
            task=task,
            model=name,
            tokens_per_s=tps,
            mfu=mfu,
            ratio=statistics.median(ratios),
            ratio_min=min(ratios),
            ratio_max=max(ratios),
        )
        if warmup_s is not None and name == "tinyllm":
            row["warmup_s"] = warmup_s
        if steps:
            step_s = statistics.median(s) / steps
            row["ms_per_step"] = 1e3 * step_s
            row["weight_gb_per_s"] = step_bytes / step_s / 1e9
        rows.append(row)
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
    initial_weights = {name: tensor.clone() for name, tensor in tiny.state_dict().items()}
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
    if args.compiled:
        compiled = torch.compile(models["tinyllm"], backend=args.compile_backend)
        steps["tinyllm"] = make_train_step(compiled, batch, autocast)
        train_fns["tinyllm"] = lambda s=steps["tinyllm"]: [s() for _ in range(args.train_steps)]
        warmup = timed(steps["tinyllm"], device)  # the first call: compilation included
        seconds = alternate(train_fns, args.repeats, device)
        rows += summarise("train compiled", seconds, tokens, flops_per_token, peak, warmup_s=warmup)
    del steps, train_fns

    # Generation: the untrained weights again (the training runs updated each model its own way, and the compiled
    # step one warm-up step more), in the benchmark dtype, eval mode; the two must agree token for token.
    tiny.load_state_dict(initial_weights)
    models["llama"] = to_llama(tiny).to(device)
    for model in models.values():
        model.eval().to(dtype)
    weight_bytes = sum(p.numel() * p.element_size() for p in tiny.parameters())  # read once per decode step
    for gen_batch in sorted({1, args.gen_batch}):
        prompt = torch.randint(3, vocab, (gen_batch, args.prompt_len), generator=gen).to(device)
        for cache in ("dynamic", "static", "fast_decode")[: 3 if args.compiled else 2]:
            fns = {name: make_generate(m, prompt, args.new_tokens, cache) for name, m in models.items()}
            if cache == "fast_decode":  # against the peer's regular generate
                fns["llama"] = make_generate(models["llama"], prompt, args.new_tokens, "dynamic")
            warmup = timed(fns["tinyllm"], device) if cache == "fast_decode" else None  # compiles the decode step
            outputs = {name: fn() for name, fn in fns.items()}
            if not torch.equal(outputs["tinyllm"], outputs["llama"]):
                raise RuntimeError(f"TinyLLM and Llama generated different tokens (batch {gen_batch}, {cache})")
            seconds = alternate(fns, args.repeats, device, warmup=0)
            rows += summarise(
                f"generate b={gen_batch} {cache}", seconds, gen_batch * args.new_tokens, None, peak,
                warmup_s=warmup,
                step_bytes=weight_bytes, steps=args.new_tokens,
            )  # fmt: skip
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
        f"{'task':<30}{'tinyllm tok/s':>15}{'llama tok/s':>15}{'ratio [range]':>22}{'tinyllm MFU':>13}{'llama MFU':>11}"
        f"{'ms/step (GB/s)':>22}{'warm-up':>10}"
    )
    by_task: dict[str, dict[str, dict]] = {}
    for row in rows:
        by_task.setdefault(row["task"], {})[row["model"]] = row
    for task, pair in by_task.items():
        if "both" in pair:
            print(f"{task:<30}{pair['both']['tokens_per_s']:>15.2f}")
            continue
        ours, peer = pair["tinyllm"], pair["llama"]
        mfu = "".join(f"{r['mfu']:>12.1%} " if r["mfu"] is not None else f"{'':>13}" for r in (ours, peer))
        ratio = f"{ours['ratio']:.3f} [{ours['ratio_min']:.2f}-{ours['ratio_max']:.2f}]"
        step = f"{ours['ms_per_step']:.2f} ({ours['weight_gb_per_s']:.1f})" if "ms_per_step" in ours else ""
        warmup = f"{ours['warmup_s']:.1f} s" if "warmup_s" in ours else ""
        print(
            f"{task:<30}{ours['tokens_per_s']:>15.1f}{peer['tokens_per_s']:>15.1f}{ratio:>22}{mfu}{step:>22}{warmup:>10}"
        )


if __name__ == "__main__":
    (bench_args,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses()
    run(bench_args)
