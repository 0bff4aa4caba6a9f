"""Exact match of generated answers (e.g. "seven" for "three plus four equals"), after trimming whitespace and
collapsing inner runs of spaces; case-sensitive."""

import datasets
import evaluate

_DESCRIPTION = "Fraction of predictions equal to their reference after whitespace normalisation."
_INPUTS = """
Args:
    predictions: generated answers (strings).
    references: expected answers (strings).
Returns:
    exact_match (fraction), num_examples.
"""


def normalise(text: str) -> str:
    return " ".join(text.split())


class ExactMatch(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict:
        if not references:
            raise ValueError("No examples: exact match needs at least one prediction and reference.")
        hits = sum(normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True))
        return {"exact_match": hits / len(references), "num_examples": len(references)}
