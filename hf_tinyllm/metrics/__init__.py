"""The project's own `evaluate` metric modules, loaded by path (the Hub-hosted ones cannot load offline).

from hf_tinyllm.metrics import load_metric
bpb = load_metric("bits_per_byte")
bpb.add_batch(nll_sum=[...], num_bytes=[...]); bpb.compute()
"""

from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).parent
METRIC_NAMES = ("perplexity", "bits_per_byte", "next_token_accuracy", "exact_match")


def load_metric(name: str) -> evaluate.EvaluationModule:
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; choose one of {list(METRIC_NAMES)}.")
    return evaluate.load(str(METRICS_DIR / f"{name}.py"))


__all__ = ["METRICS_DIR", "METRIC_NAMES", "load_metric"]
