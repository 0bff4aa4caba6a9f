"""Where a training step's time goes: the share spent in matrix multiplies, for TinyLLM eager, TinyLLM compiled and
transformers' Llama eager (same sizes, same weights), from torch.profiler's self CPU time per operator.

    python benchmarks/profile_train_step.py --preset nano
    python benchmarks/profile_train_step.py --preset micro --top 12

Prints, per model, the matmul share and the operators that took the most self time. A step is forward, backward
and AdamW on one (batch, seq_len) batch of random tokens; `--warmup` steps (compilation included) run first,
then `--steps` are profiled. No timing here is a test: name the CPU with the figures.
"""

import json
from collections import defaultdict
from dataclasses import dataclass, field

import torch
from machine import cpu_name
from torch.profiler import ProfilerActivity, profile
from transformers import HfArgumentParser
from transformers.utils import logging as hf_logging

from hf_tinyllm.convert import to_llama
from hf_tinyllm.presets import build_model

# Operators that are matrix multiplies, eager (aten) or as inductor calls them (mkldnn); attention's fused kernels
# (scaled_dot_product_*) are listed apart, in the top operators.
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")


@dataclass
class ProfileArguments:
    preset: str = field(default="nano", metadata={"help": "TinyLLM preset (hf_tinyllm.presets)."})
    batch_size: int = field(default=16)
    seq_len: int = field(default=128)
    warmup: int = field(default=3, metadata={"help": "Unprofiled steps first (compilation happens here)."})
    steps: int = field(default=5, metadata={"help": "Profiled steps."})
    top: int = field(default=8, metadata={"help": "Operators listed per model."})
    seed: int = field(default=0)
    output_json: str | None = field(default=None)


def train_step(model, batch, optimizer) -> None:
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def profile_model(model, batch, args: ProfileArguments) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(args.warmup):
        train_step(model, batch, optimizer)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            train_step(model, batch, optimizer)
    self_us: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        self_us[event.key] += event.self_cpu_time_total
    total = sum(self_us.values())
    matmul = sum(us for name, us in self_us.items() if name in MATMUL_OPS)
    top = sorted(self_us.items(), key=lambda item: -item[1])[: args.top]
    return {
        "ms_per_step": total / 1e3 / args.steps,
        "matmul_share": matmul / total,
        "top": [(name, us / total) for name, us in top],
    }


def main(args: ProfileArguments) -> dict:
    hf_logging.set_verbosity_error()
    torch.manual_seed(args.seed)
    tiny = build_model(args.preset, max_position_embeddings=max(args.seq_len, 128)).train()
    llama = to_llama(tiny).train()
    batch = torch.randint(3, tiny.config.vocab_size, (args.batch_size, args.seq_len))
    results = {
        "tinyllm eager": profile_model(tiny, batch, args),
        "llama eager": profile_model(llama, batch, args),
        "tinyllm compiled": profile_model(torch.compile(tiny), batch, args),
    }
    print(
        f"\nTraining-step profile | preset {args.preset}, batch {args.batch_size}x{args.seq_len}, fp32 | "
        f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    for name, result in results.items():
        print(f"\n{name}: {result['ms_per_step']:.1f} ms of operator self time per step, "
              f"{result['matmul_share']:.1%} in matrix multiplies")  # fmt: skip
        for op, share in result["top"]:
            print(f"  {share:6.1%}  {op}")
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump({"args": vars(args), "cpu": cpu_name(), "results": results}, f, indent=2)
    return results


if __name__ == "__main__":
    (profile_args,) = HfArgumentParser(ProfileArguments).parse_args_into_dataclasses()
    main(profile_args)
