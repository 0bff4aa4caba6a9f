"""How fast the studio page answers: the real server, called over HTTP with gradio_client, on a TinyLLM folder and,
side by side, on the same weights exported as transformers' LlamaForCausalLM (the page works on both).

    python benchmarks/bench_studio.py                                # the demo model (outputs/demo/model)
    python benchmarks/bench_studio.py --model outputs/demo/model --repeats 5

"First paint" is loading the page plus the three calls the page makes on load (a round of "be the model", the word
map, the learning curves); every other row is one interaction. Each figure is the median of `--repeats` calls after
one warm-up, the two servers called alternately so that drift in machine load hits both.

"Timeline slider" is one move of the training-timeline slider (/at_step: every view redrawn at another recorded
step), over every recorded step in a shuffled order, `--repeats` times; its median and 95th percentile are reported
(the goal: p95 <= 300 ms on the demo model). The Llama folder gets the same timeline and records (the snapshots'
tensor names are Llama's), so both scrub the same weights. Only the page's load has warmed the server up: each
step's first visit, which loads that snapshot, is counted.
"""

import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, HfArgumentParser

import hf_tinyllm  # noqa: F401  (registers tinyllm)
from hf_tinyllm.convert import export_llama
from hf_tinyllm.insight.timeline import load_timeline
from hf_tinyllm.model_card import TIMELINE_DIR, TRAINING_RECORDS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: machine.py
from machine import cpu_name

PROMPT = "two plus three equals"
ALONG = "the king fed his dog. he walked to the palace with the queen."
BATCH = "the capital of germany is berlin.\nthirteen minus eight equals five.\nevery cloud has a silver lining."
HELDOUT = "the king worked in the fields kindly."
INTERACTIONS = {
    "be the model: guess": ((PROMPT, "five"), "/guess"),
    "be the model: redraw (temperature)": ((PROMPT, 0.7, 0, 1.0), "/distribution"),
    "be the model: next": ((PROMPT,), "/next_word"),
    "through the layers": ((PROMPT, -1, 1, 1), "/layers"),
    "geometry: analogy": (("king", "man", "woman"), "/analogy"),
    "geometry: neighbours": (("queen",), "/neighbours"),
    "generate 20 tokens (greedy)": (("the queen", 20, 1.0, 0, 1.0, False), "/generate"),
    "truth: word by word": ((ALONG,), "/truth_along"),
    "one step (microscope)": ((BATCH, HELDOUT, "run", 0), "/microscope"),
    "steer one prompt": (("the king fed his dog.", "difference of means", 3, 1.0, "all"), "/steer"),
    "steer: flip rates, every layer": ((1.0, "all"), "/flip_rates"),
    "context: pronoun study": (("pronoun",), "/context"),
}
ON_LOAD = (((PROMPT,), "/new_round"), ((), "/word_map"), ((), "/learning"))
# What /at_step redraws: be, layers, the map's chosen word, the word-by-word text.
VIEWS = (PROMPT, 1.0, 0, 1.0, PROMPT, -1, 1, 1, "king", ALONG)
SLIDER = "timeline slider (one step)"


@dataclass
class StudioBenchArguments:
    model: str = field(default="outputs/demo/model", metadata={"help": "A TinyLLM folder with its tokenizer."})
    repeats: int = field(default=5, metadata={"help": "Calls per interaction after one warm-up; the median is kept."})
    output_json: str | None = field(default=None, metadata={"help": "Also write the results here."})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "hf_tinyllm.cli", "studio", str(folder), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return process, url
        except OSError:
            time.sleep(0.3)
    process.terminate()
    raise RuntimeError(f"the studio for {folder} did not start")


def first_paint(client, url: str) -> float:
    started = time.perf_counter()
    urllib.request.urlopen(url, timeout=30).read()
    for args, api in ON_LOAD:
        client.predict(*args, api_name=api)
    return time.perf_counter() - started


def timed(client, args: tuple, api: str) -> float:
    started = time.perf_counter()
    client.predict(*args, api_name=api)
    return time.perf_counter() - started


def run(args: StudioBenchArguments) -> dict:
    from gradio_client import Client

    model = AutoModelForCausalLM.from_pretrained(args.model)
    llama_dir = Path(tempfile.mkdtemp(prefix="studio-llama-")) / "model"
    export_llama(model, llama_dir, tokenizer=AutoTokenizer.from_pretrained(args.model))
    steps = copy_records(Path(args.model), llama_dir)
    servers = {"tinyllm": start(Path(args.model)), "llama": start(llama_dir)}
    try:
        clients = {name: Client(url, verbose=False) for name, (_, url) in servers.items()}
        results: dict[str, dict[str, list[float]]] = {name: {} for name in servers}
        for name, client in clients.items():  # warm-up: one of each call
            first_paint(client, servers[name][1])
            for call_args, api in INTERACTIONS.values():
                client.predict(*call_args, api_name=api)
        order = random.Random(0)
        for _ in range(args.repeats):
            for name, client in clients.items():
                results[name].setdefault("first paint", []).append(first_paint(client, servers[name][1]))
                for label, (call_args, api) in INTERACTIONS.items():
                    results[name].setdefault(label, []).append(timed(client, call_args, api))
            for step in order.sample(steps, len(steps)):
                for name, client in clients.items():
                    results[name].setdefault(SLIDER, []).append(timed(client, (step, *VIEWS), "/at_step"))
    finally:
        for process, _ in servers.values():
            process.terminate()
    medians = {
        name: {label: statistics.median(times) for label, times in rows.items()} for name, rows in results.items()
    }
    p95 = {name: percentile(rows[SLIDER], 95) for name, rows in results.items() if SLIDER in rows}
    return {"model": args.model, "machine": f"{cpu_name()}, {os.cpu_count()} cores", "repeats": args.repeats,
            "seconds": medians, "slider_p95_seconds": p95,
            "slider_moves": len(results["tinyllm"].get(SLIDER, []))}  # fmt: skip


def copy_records(model_dir: Path, llama_dir: Path) -> list[int]:
    """The training records and timeline of `model_dir` copied beside the Llama weights; the recorded steps."""
    for name in TRAINING_RECORDS:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, llama_dir / name)
    if not (model_dir / TIMELINE_DIR).is_dir():
        return []
    shutil.copytree(model_dir / TIMELINE_DIR, llama_dir / TIMELINE_DIR)
    return load_timeline(model_dir).steps


def percentile(values: list[float], q: float) -> float:
    """The `q`-th percentile, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def main() -> None:
    (args,) = HfArgumentParser(StudioBenchArguments).parse_args_into_dataclasses()
    result = run(args)
    ours, peer = result["seconds"]["tinyllm"], result["seconds"]["llama"]
    print(f"studio response times on {args.model} (median of {args.repeats}, seconds, over HTTP)")
    print(f"machine: {result['machine']}")
    print(f"{'':38s} {'TinyLLM':>9s} {'Llama':>9s} {'ours/peer':>10s}")
    for label in ours:
        print(f"{label:38s} {ours[label]:9.3f} {peer[label]:9.3f} {ours[label] / peer[label]:10.2f}")
    if result["slider_p95_seconds"]:
        ours95, peer95 = result["slider_p95_seconds"]["tinyllm"], result["slider_p95_seconds"]["llama"]
        print(f"{SLIDER + ', p95':38s} {ours95:9.3f} {peer95:9.3f} {ours95 / peer95:10.2f}"
              f"   ({result['slider_moves']} moves each)")  # fmt: skip
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
