"""The benchmark runs end to end on tiny sizes and reports both models side by side (no timing is asserted)."""

import json
import runpy
import sys

from conftest import REPO_ROOT
from transformers.utils import logging as hf_logging


def test_benchmark_reports_tinyllm_and_llama_side_by_side(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    args = [
        "--preset",
        "debug",
        "--batch_size",
        "2",
        "--seq_len",
        "16",
        "--train_steps",
        "1",
        "--prompt_len",
        "4",
        "--new_tokens",
        "3",
        "--gen_batch",
        "2",
        "--repeats",
        "1",
        "--output_json",
        str(out),
    ]
    monkeypatch.setattr(sys, "argv", ["benchmarks/bench_model.py", *args])
    verbosity = hf_logging.get_verbosity()
    try:
        runpy.run_path(str(REPO_ROOT / "benchmarks/bench_model.py"), run_name="__main__")
    finally:
        hf_logging.set_verbosity(verbosity)  # the benchmark quiets transformers; the next tests need it
    stdout = capsys.readouterr().out
    assert "ratio" in stdout and "generate b=2 static" in stdout
    rows = json.loads(out.read_text())["rows"]
    tasks = {"train", "generate b=1 dynamic", "generate b=1 static", "generate b=2 dynamic", "generate b=2 static"}
    assert {(r["task"], r["model"]) for r in rows} == {(t, m) for t in tasks for m in ("tinyllm", "llama")}
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert all(r["mfu"] > 0 for r in rows if r["task"] == "train")
