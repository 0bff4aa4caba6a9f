"""Time to quality: training recipes given the same wall-clock budget on this machine, and how far each gets on
held-out arithmetic (problems never seen in training: generalisation), on trained problems (memorisation), and in
bits per byte against TinyWorld's exact entropy floor.

Each recipe is the demo's (configs/runs/demo.yaml) with some flags changed. A short calibration run first measures
the recipe's training throughput on this machine; its step count is then set so that training fills the budget, so
every recipe runs a complete learning-rate schedule (warm-up included) in about the same time. The learning probes
record both exact matches along the way; their wall time is rebuilt from the logged throughput windows (each window
also holds the probes and evaluations run inside it). Setup (corpus, tokenizer, tokenisation) is outside the budget.

    python benchmarks/bench_time_to_quality.py --budget_s 150 --recipes demo,muon,weight_decay_0.5
    python benchmarks/bench_time_to_quality.py --list        # the recipes

Writes a markdown table (stdout, and `--output_md`), a PNG of held-out exact match against wall time
(`--output_png`) and every figure as JSON (`--output_json`). No timing here is a test: name the CPU with the figures.
"""

import json
import platform
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from accelerate.state import AcceleratorState
from machine import cpu_name
from transformers import HfArgumentParser

from hf_tinyllm.demo import RECIPE
from hf_tinyllm.training import parse_train_arguments, train

DEMO_MIX = {"royalty": 0.25, "arithmetic": 0.5, "facts": 0.15, "sayings": 0.1}

# Name -> flags changed from the demo recipe (batch 16, learning rate 6e-3, cosine to 0.1, weight decay 0.1, half
# arithmetic, nano, 512 tokens with a prefix space). Kept in the table even when they lose.
RECIPES: dict[str, list[str]] = {
    "demo": [],
    "muon": ["--optimizer", "muon"],
    "learning_rate_3e-3": ["--learning_rate", "3e-3"],
    "learning_rate_8e-3": ["--learning_rate", "8e-3"],
    "learning_rate_1e-2": ["--learning_rate", "1e-2"],
    "batch_32_learning_rate_3e-3": ["--per_device_batch_size", "32", "--learning_rate", "3e-3"],  # the old demo
    "batch_8": ["--per_device_batch_size", "8"],
    "batch_8_learning_rate_4e-3": ["--per_device_batch_size", "8", "--learning_rate", "4e-3"],
    "batch_32": ["--per_device_batch_size", "32"],
    "block_64": ["--block_size", "64", "--per_device_batch_size", "32"],
    "weight_decay_0": ["--weight_decay", "0.0"],
    "weight_decay_0.3": ["--weight_decay", "0.3"],
    "weight_decay_1.0": ["--weight_decay", "1.0"],
    "min_lr_0": ["--min_lr_ratio", "0.0"],
    "warmup_stable_decay": ["--lr_scheduler_type", "warmup_stable_decay"],
    "constant_lr": ["--lr_scheduler_type", "constant_with_warmup"],
    "arithmetic_0.65": [
        "--tinyworld_weights",
        json.dumps({"royalty": 0.15, "arithmetic": 0.65, "facts": 0.12, "sayings": 0.08}),
    ],
    "arithmetic_0.8": [
        "--tinyworld_weights",
        json.dumps({**DEMO_MIX, "arithmetic": 0.8, "royalty": 0.1, "facts": 0.06, "sayings": 0.04}),
    ],
    "arithmetic_0.3": ["--tinyworld_weights", json.dumps({**DEMO_MIX, "arithmetic": 0.3, "royalty": 0.45})],
    "no_prefix_space": ["--tokenizer_add_prefix_space", "false"],  # a first word split unlike inside a sentence
    "vocab_1024": ["--vocab_size", "1024"],
    "vocab_256": ["--vocab_size", "256"],
    "micro": ["--preset", "micro"],
    "deeper_nano": ["--model_overrides", '{"num_hidden_layers": 6}'],
    "wider_shallower_nano": [
        "--model_overrides",
        '{"num_hidden_layers": 2, "hidden_size": 192, "num_attention_heads": 6}',
    ],
    "torch_compile": ["--torch_compile"],  # inductor; its compilation is counted in the budget
}


@dataclass
class TimeToQualityArguments:
    budget_s: float = field(default=150.0, metadata={"help": "Training seconds per recipe (setup excluded)."})
    recipes: str = field(default="demo", metadata={"help": "Comma-separated recipe names (see --list), or 'all'."})
    base_flags: str = field(
        default="", metadata={"help": "Flags added to every run after the recipe's, e.g. '--preset debug'."}
    )
    calibration_steps: int = field(default=30, metadata={"help": "Steps of the throughput calibration run."})
    seeds: str = field(default="0", metadata={"help": "Comma-separated seeds: each recipe runs once per seed."})
    probes: int = field(default=8, metadata={"help": "Learning-probe records per run (the curve's points)."})
    work_dir: str | None = field(default=None, metadata={"help": "Where the runs are written (default: a temp dir)."})
    output_json: str | None = field(default=None)
    output_md: str | None = field(default=None)
    output_png: str | None = field(default=None)
    list: bool = field(default=False, metadata={"help": "Print the recipes and exit."})


def _metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "logs" / "metrics.jsonl").read_text().splitlines()]


def _run(flags: list[str]) -> dict:
    AcceleratorState._reset_state(reset_partial_state=True)  # a fresh Accelerator per run in this process
    return train(*parse_train_arguments(["--config", str(RECIPE), *flags]))


def steps_per_second(records: list[dict], tokens_per_step: int) -> float:
    """Training steps per second from the logged throughput windows, the first (warm-up) left out."""
    rates = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][1:]
    if not rates:
        raise ValueError("the calibration run logged fewer than 2 throughput windows; raise --calibration_steps")
    return statistics.median(rates) / tokens_per_step


def probe_curve(records: list[dict]) -> list[dict]:
    """(wall seconds, held-out and trained exact match) at each probe record. A record's wall time is the sum of the
    throughput windows up to its step: window = tokens since the previous log / its tokens per second."""
    elapsed, tokens, points = 0.0, 0, []
    for record in records:
        if "tokens_per_s" in record:
            elapsed += (record["tokens_seen"] - tokens) / record["tokens_per_s"]
            tokens = record["tokens_seen"]
        if "probe/heldout_exact_match" in record:
            points.append({"step": record["step"], "wall_s": elapsed,
                           "heldout_exact_match": record["probe/heldout_exact_match"],
                           "trained_exact_match": record.get("probe/trained_exact_match")})  # fmt: skip
    return points


def run_recipe(name: str, flags: list[str], args: TimeToQualityArguments, work_dir: Path, seed: int = 0) -> dict:
    extra = [*args.base_flags.split(), "--seed", str(seed)]
    calibration = work_dir / name / f"seed{seed}" / "calibration"
    summary = _run([*flags, *extra, "--max_steps", str(args.calibration_steps), "--warmup_steps", "0",
                    "--probe_steps", "0", "--eval_steps", "0", "--logging_steps", "5",
                    "--output_dir", str(calibration)])  # fmt: skip
    hyper = summary["hyperparameters"]
    tokens_per_step = hyper["per_device_batch_size"] * hyper["block_size"] * hyper["gradient_accumulation_steps"]
    rate = steps_per_second(_metrics(calibration), tokens_per_step)
    # What the calibration spent beyond its steady-state steps (compilation, above all) is paid again by the run:
    # it comes out of the budget, so a compiled recipe is charged for its warm-up.
    overhead_s = max(0.0, summary["wall_time_s"] - args.calibration_steps / rate)
    steps = max(8, round((args.budget_s - overhead_s) * rate))
    output = work_dir / name / f"seed{seed}" / "run"
    warmup = min(30, steps // 10)
    tokenizer = ["--tokenizer", str(calibration / "tokenizer")] if (calibration / "tokenizer").is_dir() else []
    summary = _run([*flags, *tokenizer, *extra, "--max_steps", str(steps), "--warmup_steps", str(warmup),
                    "--probe_steps", str(max(1, steps // args.probes)), "--output_dir", str(output)])  # fmt: skip
    final = summary["final_metrics"]
    curve = probe_curve(_metrics(output))
    return {
        "recipe": name,
        "seed": seed,
        "flags": flags,
        "steps": steps,
        "calibrated_steps_per_s": rate,
        "overhead_s": overhead_s,
        "wall_s": summary["wall_time_s"],
        "parameters": summary["parameters"],
        "heldout_exact_match": final.get("arithmetic_exact_match"),
        "trained_exact_match": curve[-1]["trained_exact_match"] if curve else None,
        "bits_per_byte": final.get("bits_per_byte"),
        "floor_bits_per_byte": final.get("floor_bits_per_byte"),
        "gap_to_floor": final.get("gap_to_floor"),
        "curve": curve,
    }


def markdown(rows: list[dict], budget_s: float) -> str:
    lines = [
        f"Training budget {budget_s:.0f} s per recipe; {cpu_name()}, {platform.platform()}.",
        "",
        "| recipe | seed | steps | wall s | held-out EM | trained EM | bits/byte | gap to floor | params |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(rows, key=lambda r: -(r["heldout_exact_match"] or 0)):
        trained = "-" if r["trained_exact_match"] is None else f"{r['trained_exact_match']:.1%}"
        lines.append(f"| {r['recipe']} | {r['seed']} | {r['steps']} | {r['wall_s']:.0f} | "
                     f"{r['heldout_exact_match']:.1%} | {trained} | {r['bits_per_byte']:.4f} | "
                     f"{r['gap_to_floor']:+.2%} | {r['parameters'] / 1e6:.2f}M |")  # fmt: skip
    by_recipe: dict[str, list[float]] = {}
    for r in rows:
        by_recipe.setdefault(r["recipe"], []).append(r["heldout_exact_match"])
    if any(len(v) > 1 for v in by_recipe.values()):
        lines += ["", "| recipe | seeds | held-out EM mean | min | max |", "|---|---|---|---|---|"]
        for name, values in sorted(by_recipe.items(), key=lambda item: -statistics.mean(item[1])):
            lines.append(f"| {name} | {len(values)} | {statistics.mean(values):.1%} | {min(values):.1%} | "
                         f"{max(values):.1%} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for r in rows:
        curve = r["curve"]
        wall, exact = [p["wall_s"] for p in curve], [p["heldout_exact_match"] for p in curve]
        axis.plot(wall, exact, marker="o", label=f"{r['recipe']} (seed {r['seed']})")
    axis.set_xlabel("training wall time (s)")
    axis.set_ylabel("held-out arithmetic exact match")
    axis.set_ylim(0, 1)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_outputs(rows: list[dict], args: TimeToQualityArguments) -> None:
    if args.output_md:
        Path(args.output_md).write_text(markdown(rows, args.budget_s) + "\n")
    if args.output_json:
        payload = {"budget_s": args.budget_s, "cpu": cpu_name(), "rows": rows}
        Path(args.output_json).write_text(json.dumps(payload, indent=2) + "\n")
    if args.output_png:
        plot(rows, Path(args.output_png))


def main(args: TimeToQualityArguments) -> list[dict]:
    if args.list:
        for name, flags in RECIPES.items():
            print(f"{name:22s} {' '.join(flags) or '(the demo recipe)'}")
        return []
    names = list(RECIPES) if args.recipes == "all" else [n.strip() for n in args.recipes.split(",") if n.strip()]
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"error: unknown recipes {unknown}; choose from {', '.join(RECIPES)} (or 'all').")
    with tempfile.TemporaryDirectory(prefix="time_to_quality_") as tmp:
        work_dir = Path(args.work_dir or tmp)
        rows = []
        for name in names:
            for seed in [int(s) for s in args.seeds.split(",")]:
                rows.append(run_recipe(name, RECIPES[name], args, work_dir, seed))
                print(f"{name} (seed {seed}): held-out exact match {rows[-1]['heldout_exact_match']:.1%} in "
                      f"{rows[-1]['wall_s']:.0f} s", flush=True)  # fmt: skip
                write_outputs(rows, args)  # after every run: a long sweep stopped midway keeps what it measured
    print(markdown(rows, args.budget_s))
    return rows


if __name__ == "__main__":
    (bench_args,) = HfArgumentParser(TimeToQualityArguments).parse_args_into_dataclasses()
    main(bench_args)
