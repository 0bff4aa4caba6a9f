"""Next-token accuracy: the fraction of predicted tokens whose argmax is the actual next token, token-weighted."""

import datasets
import evaluate

_DESCRIPTION = "Next-token accuracy = total correct argmax predictions / total predicted tokens."
_INPUTS = """
Args:
    num_correct: per sequence, how many next-token argmax predictions equal the label.
    num_tokens: per sequence, the number of predicted tokens.
Returns:
    accuracy, num_tokens.
"""


class NextTokenAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features({"num_correct": datasets.Value("int64"), "num_tokens": datasets.Value("int64")}),
        )

    def _compute(self, num_correct: list[int], num_tokens: list[int]) -> dict:
        total = sum(num_tokens)
        if total <= 0:
            raise ValueError("No predicted tokens: accuracy needs at least one token with a label.")
        return {"accuracy": sum(num_correct) / total, "num_tokens": total}
