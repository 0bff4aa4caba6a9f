"""What the training timeline costs: the demo's run (configs/runs/demo.yaml, learning probes every 175 steps) with
its snapshots (`--timeline auto`: the whole weights at each probe step) against the same run with `--timeline off`,
in turn, `--repeats` times each. Each figure is the run's own training wall time (`wall_time_s` of its summary: the
training loop, probes included, corpus and tokenizer preparation excluded); the goal is at most 10% more with the
snapshots. Also the timeline's size on disk, and the seconds the recorder itself spent writing the snapshots (in
`timeline.json`): the direct cost, free of the run-to-run noise of the wall-time comparison.

    python benchmarks/bench_timeline_cost.py                       # 1 run each, about 8 minutes on 2 cores
    python benchmarks/bench_timeline_cost.py --repeats 2 --output_json benchmarks/results/timeline_cost.json
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from machine import cpu_name
from transformers import HfArgumentParser

from hf_tinyllm.demo import RECIPE
from hf_tinyllm.model_card import SUMMARY_FILE, TIMELINE_DIR

VARIANTS = {"with snapshots": "auto", "without": "off"}


@dataclass
class TimelineCostArguments:
    repeats: int = field(default=1, metadata={"help": "Runs of each variant, in turn."})
    max_steps: int | None = field(default=None, metadata={"help": "Override the recipe's 1400 steps (quicker)."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results here."})


def train(output_dir: Path, timeline: str, max_steps: int | None) -> dict:
    argv = [sys.executable, "-m", "hf_tinyllm.cli", "train", "--config", str(RECIPE), "--timeline", timeline,
            "--output_dir", str(output_dir)]  # fmt: skip
    if max_steps is not None:
        argv += ["--max_steps", str(max_steps)]
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    summary = json.loads((output_dir / "model" / SUMMARY_FILE).read_text())
    index = output_dir / TIMELINE_DIR / "timeline.json"
    snapshots = json.loads(index.read_text())["snapshots"] if index.is_file() else []
    return {"seconds": summary["wall_time_s"], "snapshots": len(snapshots),
            "timeline_bytes": sum(s["bytes"] for s in snapshots),
            "snapshot_seconds": sum(s.get("seconds", 0.0) for s in snapshots)}  # fmt: skip


def main() -> None:
    (args,) = HfArgumentParser(TimelineCostArguments).parse_args_into_dataclasses()
    runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="timeline-cost-") as scratch:
        for repeat in range(args.repeats):
            for name, timeline in VARIANTS.items():
                runs[name].append(train(Path(scratch) / f"{timeline}-{repeat}", timeline, args.max_steps))
                print(f"{name}: {runs[name][-1]}", flush=True)
    median = {name: statistics.median(r["seconds"] for r in rows) for name, rows in runs.items()}
    ratio = median["with snapshots"] / median["without"]
    machine = f"{cpu_name()}, {os.cpu_count()} cores, fp32"
    with_snapshots = runs["with snapshots"][0]
    share = with_snapshots["snapshot_seconds"] / with_snapshots["seconds"]
    print(f"demo training time on {machine} (median of {args.repeats}): with snapshots {median['with snapshots']:.1f} "
          f"s, without {median['without']:.1f} s: x{ratio:.3f} ({100 * (ratio - 1):+.1f}%); "
          f"{with_snapshots['snapshots']} snapshots, {with_snapshots['timeline_bytes'] / 1e6:.1f} MB, written in "
          f"{with_snapshots['snapshot_seconds']:.2f} s ({100 * share:.2f}% of the run)")  # fmt: skip
    if args.output_json:
        result = {"machine": machine, "repeats": args.repeats, "max_steps": args.max_steps, "runs": runs,
                  "median_seconds": median, "ratio": ratio}  # fmt: skip
        Path(args.output_json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
