"""Token-weighted perplexity: exp(sum of token NLLs / number of predicted tokens), never a mean of batch means."""

import math

import datasets
import evaluate

_DESCRIPTION = "Perplexity exp(total NLL / total tokens) from per-sequence NLL sums (nats) and predicted-token counts."
_INPUTS = """
Args:
    nll_sum: per sequence, the summed negative log-likelihood (natural log) of its predicted tokens.
    num_tokens: per sequence, the number of predicted tokens.
Returns:
    perplexity, loss (mean NLL per token, nats), num_tokens.
"""


class Perplexity(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"nll_sum": datasets.Value("float64"), "num_tokens": datasets.Value("int64")}),
        )

    def _compute(self, nll_sum: list[float], num_tokens: list[int]) -> dict:
        total = sum(num_tokens)
        if total <= 0:
            raise ValueError("No predicted tokens: perplexity needs at least one token with a label.")
        loss = math.fsum(nll_sum) / total
        return {"perplexity": math.exp(loss), "loss": loss, "num_tokens": total}
