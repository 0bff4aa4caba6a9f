"""Bits per byte: total NLL in bits over total UTF-8 bytes; comparable across tokenizers and with an entropy floor."""

import math

import datasets
import evaluate

_DESCRIPTION = "Bits per byte = sum of token NLLs / ln 2 / sum of bytes, from per-sequence sums."
_INPUTS = """
Args:
    nll_sum: per sequence, the summed negative log-likelihood (natural log) of its predicted tokens.
    num_bytes: per sequence, the UTF-8 bytes those tokens cover (hf_tinyllm counts each end-of-text as one byte).
Returns:
    bits_per_byte, num_bytes.
"""


class BitsPerByte(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"nll_sum": datasets.Value("float64"), "num_bytes": datasets.Value("int64")}),
        )

    def _compute(self, nll_sum: list[float], num_bytes: list[int]) -> dict:
        total = sum(num_bytes)
        if total <= 0:
            raise ValueError("No bytes: bits per byte needs text.")
        return {"bits_per_byte": math.fsum(nll_sum) / math.log(2) / total, "num_bytes": total}
