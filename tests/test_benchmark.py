"""The benchmarks run end to end on tiny sizes (no timing is asserted): bench_model reports both models side by side;
bench_time_to_quality gives every recipe the same budget."""

import json

import pytest
from conftest import REPO_ROOT, script_output, transformers_verbosity_kept


def test_benchmark_reports_tinyllm_and_llama_side_by_side(tmp_path, capsys):
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
        "1",  # one generation batch size: one fast_decode graph to compile
        "--repeats",
        "1",
        "--compile_backend",
        "aot_eager",  # the compiled training line without inductor's C++ build (fast_decode still uses inductor)
        "--output_json",
        str(out),
    ]
    stdout = script_output("benchmarks/bench_model.py", args, capsys)
    assert "ratio" in stdout and "generate b=1 fast_decode" in stdout
    rows = json.loads(out.read_text())["rows"]
    tasks = {"train", "train compiled"} | {f"generate b=1 {cache}" for cache in ("dynamic", "static", "fast_decode")}
    assert {(r["task"], r["model"]) for r in rows} == {(t, m) for t in tasks for m in ("tinyllm", "llama")}
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert all(r["mfu"] > 0 for r in rows if r["task"].startswith("train"))
    compiled = [r for r in rows if r["model"] == "tinyllm" and ("compiled" in r["task"] or "fast" in r["task"])]
    assert len(compiled) == 2 and all(r["warmup_s"] > 0 for r in compiled)
    assert all(r["ms_per_step"] > 0 and r["weight_gb_per_s"] > 0 for r in rows if r["task"].startswith("generate"))


def test_time_to_quality_fills_the_budget_from_a_calibration_and_reports_each_recipe(tmp_path, monkeypatch, capsys):
    """A recipe twice (two seeds) on a tiny budget: the step count comes from the calibration run's throughput and
    overhead, the reported exact matches are the runs' own, and the table (with the seed summary), JSON and plot are
    written (no timing is asserted)."""
    monkeypatch.syspath_prepend(str(REPO_ROOT / "benchmarks"))
    import bench_time_to_quality as ttq

    args = ttq.TimeToQualityArguments(
        budget_s=1.0, recipes="weight_decay_0", seeds="0,1", calibration_steps=10, probes=2,
        work_dir=str(tmp_path / "runs"),
        base_flags="--preset debug --tinyworld_documents 300 --block_size 32 --per_device_batch_size 8 "
        "--eval_documents 5 --probe_documents 5 --probe_problems 4",
        output_json=str(tmp_path / "ttq.json"), output_md=str(tmp_path / "ttq.md"),
        output_png=str(tmp_path / "ttq.png"),
    )  # fmt: skip
    with transformers_verbosity_kept():
        rows = ttq.main(args)
    assert [(r["recipe"], r["seed"]) for r in rows] == [("weight_decay_0", 0), ("weight_decay_0", 1)]
    for row in rows:
        run = tmp_path / "runs" / row["recipe"] / f"seed{row['seed']}"
        calibration = [json.loads(line) for line in (run / "calibration/logs/metrics.jsonl").read_text().splitlines()]
        assert row["calibrated_steps_per_s"] == ttq.steps_per_second(calibration, 8 * 32)
        assert row["steps"] == max(8, round((1.0 - row["overhead_s"]) * row["calibrated_steps_per_s"]))
        summary = json.loads((run / "run/model/training_summary.json").read_text())
        assert summary["steps"] == row["steps"]
        assert (summary["hyperparameters"]["seed"], summary["hyperparameters"]["weight_decay"]) == (row["seed"], 0.0)
        assert row["heldout_exact_match"] == summary["final_metrics"]["arithmetic_exact_match"]
        assert row["bits_per_byte"] == summary["final_metrics"]["bits_per_byte"]
        walls = [p["wall_s"] for p in row["curve"]]
        assert len(walls) >= 2 and walls == sorted(walls) and walls[0] == 0 < walls[-1]  # step 0: before training
    assert json.loads((tmp_path / "ttq.json").read_text())["rows"] == json.loads(json.dumps(rows))
    table = (tmp_path / "ttq.md").read_text()
    assert "| weight_decay_0 | 1 |" in table and "| weight_decay_0 | 2 |" in table  # a row per run, one per recipe
    assert (tmp_path / "ttq.png").read_bytes().startswith(b"\x89PNG")
    with pytest.raises(SystemExit, match="unknown recipes"):
        ttq.main(ttq.TimeToQualityArguments(recipes="demo,nope"))
