"""benchmarks/bench_gpu_train.py end to end on the CPU at the smallest size (no timing is asserted): every arm runs
one cell, on the same tokens, and reports a throughput."""

import json
import math
import os
import subprocess
import sys

from conftest import REPO_ROOT

ARMS = ("tinyllm-loop", "tinyllm-trainer", "llama-trainer", "nanogpt-raw")


def test_every_arm_trains_on_the_same_tokens_and_reports_its_throughput(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--preset", "debug", "--arms", ",".join(ARMS), "--attn_implementations", "sdpa", "--compile", "off",
            "--precision", "fp32", "--batch_size", "2", "--seq_len", "32", "--warmup_steps", "1", "--steps", "1",
            "--sync_steps", "1", "--work_dir", str(tmp_path / "work"), "--output_json", str(out)]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_gpu_train.py"), *args],
        capture_output=True, text=True, timeout=300, cwd=REPO_ROOT, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )  # fmt: skip
    assert result.returncode == 0, f"benchmark failed:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}"
    assert "CPU smoke test" in result.stdout and "| llama-trainer | sdpa | off |" in result.stdout
    report = json.loads(out.read_text())
    rows = {row["arm"]: row for row in report["rows"]}
    assert sorted(rows) == sorted(ARMS) and len(report["rows"]) == len(ARMS)
    assert all(row["status"] == "ok" for row in rows.values()), rows
    assert all(math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0 for row in rows.values())
    assert {row["tokens"] for row in rows.values()} == {1 * 2 * 32}  # one timed step of 2 x 32 tokens each
    # The same blocks in the same order: the loop's seeded sampler, reproduced for the others, digests compared.
    assert report["same_tokens"] and not report["cells_without_digests"]
    assert len({row["token_fingerprint"] for row in rows.values()}) == 1
    assert None not in {row["token_fingerprint"] for row in rows.values()}
    assert all(row["mfu"] > 0 and row["syncs_per_step"] is not None for row in rows.values())
    assert rows["llama-trainer"]["ratio_to_llama_trainer"] == 1.0
    assert rows["nanogpt-raw"]["ratio_to_llama_trainer"] > 0
