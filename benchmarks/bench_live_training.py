"""The studio's live "Train" tab against `scripts/train.py` (issue 24, item 6: within 10%): the same run, the demo's
recipe with the tab's settings (the very arguments `LiveSettings.train_arguments` gives), trained by `LiveTraining`
while it is polled as the page polls it (the progress and the word map every `--poll_seconds`), and by
`python scripts/train.py`, alternately (live, script, script, live, ...) so that drift in machine load hits both.

    python benchmarks/bench_live_training.py                                  # nano, 300 steps, 2 runs of each
    python benchmarks/bench_live_training.py --steps 1400 --repeats 3 --output_json benchmarks/results/live.json

Throughput is the loop's, read from each run's `logs/metrics.jsonl`: the tokens trained over the seconds of the
logged windows (each training-loss row's `tokens_per_s` covers the steps since the row before, probes included);
and, whole, the training summary's tokens over its wall time (the steps, probes and final evaluation). The corpus
and tokenizer setup before step 0 is in neither. The ratio is live / script: 1.0 is no cost.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from hf_tinyllm.model_card import SUMMARY_FILE
from hf_tinyllm.studio.live_training import LOG_FILE, METRICS_FILE, LiveSettings, LiveTraining

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: machine.py
from machine import cpu_name

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "train.py"


@dataclass
class LiveBenchArguments:
    size: str = field(default="nano", metadata={"help": "debug or nano, as the tab offers."})
    steps: int = field(default=300, metadata={"help": "Training steps of every run."})
    repeats: int = field(default=2, metadata={"help": "Runs of each kind, alternating."})
    poll_seconds: float = field(default=1.0, metadata={"help": "How often the page polls the live run."})
    workdir: str | None = field(default=None, metadata={"help": "Where the runs go (default: a temporary folder)."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results here."})


def loop_throughput(run_dir: Path) -> dict:
    """Tokens per second of a finished run: over its logged windows, and over its summary's wall time."""
    rows = [json.loads(line) for line in (run_dir / METRICS_FILE).read_text().splitlines() if line.strip()]
    logged = [row for row in rows if "tokens_per_s" in row]
    seconds, tokens_before = 0.0, 0
    for row in logged:
        seconds += (row["tokens_seen"] - tokens_before) / row["tokens_per_s"]
        tokens_before = row["tokens_seen"]
    summary = json.loads((run_dir / "model" / SUMMARY_FILE).read_text())
    return {
        "tokens_per_s": tokens_before / seconds,
        "loop_seconds": seconds,
        "whole_tokens_per_s": summary["tokens_seen"] / summary["wall_time_s"],
        "wall_time_s": summary["wall_time_s"],
        "tokens_seen": summary["tokens_seen"],
    }


def live_run(workdir: Path, settings: LiveSettings, poll_seconds: float) -> dict:
    """One run through `LiveTraining`, polled like the page: progress and word map every `poll_seconds`."""
    started, cpu_started = time.perf_counter(), time.process_time()
    with LiveTraining(workdir) as live:
        progress = live.start(settings)
        poll_ms = []
        while progress.active:
            time.sleep(poll_seconds)
            polled = time.perf_counter()
            progress = live.poll()
            live.word_map()
            poll_ms.append(1000 * (time.perf_counter() - polled))
    if progress.state != "finished":
        raise RuntimeError(f"the live run ended {progress.state}: {progress.message}\n{progress.log_tail}")
    # The page's own CPU time (this process, all threads: starting, polling, word maps), taken from the run's cores.
    page_cpu_s = time.process_time() - cpu_started
    return {**loop_throughput(progress.run_dir), "elapsed_s": time.perf_counter() - started, "polls": len(poll_ms),
            "poll_ms_median": statistics.median(poll_ms), "poll_ms_max": max(poll_ms),
            "page_cpu_s": page_cpu_s}  # fmt: skip


def script_run(run_dir: Path, settings: LiveSettings) -> dict:
    """One run of `python scripts/train.py` with the live run's arguments, its output into a log as the tab's."""
    started = time.perf_counter()
    run_dir.mkdir(parents=True)
    with (run_dir / LOG_FILE).open("wb") as log:
        subprocess.run([sys.executable, str(TRAIN_SCRIPT), *settings.train_arguments(run_dir)], stdout=log,
                       stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, check=True)  # fmt: skip
    return {**loop_throughput(run_dir), "elapsed_s": time.perf_counter() - started}


def run(args: LiveBenchArguments) -> dict:
    settings = LiveSettings(size=args.size, steps=args.steps)
    settings.validate()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-live-"))
    runs: dict[str, list[dict]] = {"live": [], "script": []}
    for repeat in range(args.repeats):
        for kind in ("live", "script") if repeat % 2 == 0 else ("script", "live"):
            load_before = os.getloadavg()[0]
            if kind == "live":
                result = live_run(workdir / f"live-{repeat}", settings, args.poll_seconds)
            else:
                result = script_run(workdir / f"script-{repeat}", settings)
            # The machine's 1-minute load average around the run (this run's own process counts about 2 on a CPU):
            # well above that, something else competed for the cores.
            result["load_average"] = [load_before, os.getloadavg()[0]]
            runs[kind].append(result)
            print(f"{kind:>6} run {repeat}: {result['tokens_per_s']:,.0f} tokens/s in the loop, "
                  f"{result['whole_tokens_per_s']:,.0f} whole ({result['elapsed_s']:.0f} s)", flush=True)  # fmt: skip
    medians = {kind: statistics.median(r["tokens_per_s"] for r in rows) for kind, rows in runs.items()}
    wholes = {kind: statistics.median(r["whole_tokens_per_s"] for r in rows) for kind, rows in runs.items()}
    # Each repeat's live / script, and each kind's range: the spread against the gap says whose the gap is.
    pairs = [live["tokens_per_s"] / script["tokens_per_s"] for live, script in zip(*runs.values(), strict=True)]
    spread = {kind: [min(r["tokens_per_s"] for r in rows), max(r["tokens_per_s"] for r in rows)]
              for kind, rows in runs.items()}  # fmt: skip
    return {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, fp32",
        "settings": {**asdict(settings), "probe_steps": settings.probe_steps, "logging_steps": settings.logging_steps},
        "poll_seconds": args.poll_seconds,
        "repeats": args.repeats,
        "live_tokens_per_s": medians["live"],
        "script_tokens_per_s": medians["script"],
        "ratio": medians["live"] / medians["script"],
        "live_whole_tokens_per_s": wholes["live"],
        "script_whole_tokens_per_s": wholes["script"],
        "ratio_whole": wholes["live"] / wholes["script"],
        "ratios_by_repeat": pairs,
        "spread": spread,
        "runs": runs,
    }


def main() -> None:
    (args,) = HfArgumentParser(LiveBenchArguments).parse_args_into_dataclasses()
    results = run(args)
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=2))
    print(f"live tab / scripts/train.py: {results['ratio']:.3f} in the loop, {results['ratio_whole']:.3f} whole, on "
          f"{results['machine']}")  # fmt: skip
    if args.output_json:
        Path(args.output_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
