"""The studio's "Steer" tab: `insight.steering` on the model of the timeline's step. Add alpha times a direction to
the residual stream after layer L and watch the next word move; then the honest measure, the flip rate he -> she on
held-out prompts for each kind of direction against random directions of the same norm."""

import math

import plotly.graph_objects as go

from ..explain import to_jsonable
from ..explain.steer import findings
from ..insight.model_parts import InsightError
from ..insight.steering import (
    DEFAULT_PROMPT,
    DIRECTION_KINDS,
    FEMALE_WORD,
    MALE_WORD,
    POSITIONS,
    SteeredPrompt,
    SteeringResult,
    steer_prompt,
    steering_report,
)
from .handlers import Studio, problem

KIND_COLORS = ("#ff7f0e", "#9467bd", "#1f77b4", "#888888")  # in DIRECTION_KINDS' order, as plot_flip_rates draws
NUM_RANDOM = 5


def steered_figure(result: SteeredPrompt) -> go.Figure:
    """The next tokens' probabilities before and after steering (the union of both top lists)."""
    before, after = dict(result.top_before), dict(result.top_after)
    tokens = list(dict.fromkeys([t for t, _ in result.top_before] + [t for t, _ in result.top_after]))
    labels = [repr(t) for t in tokens]
    figure = go.Figure([
        go.Bar(y=labels, x=[100 * before.get(t, 0.0) for t in tokens], orientation="h", name="unsteered",
               marker_color="#bbbbbb"),
        go.Bar(y=labels, x=[100 * after.get(t, 0.0) for t in tokens], orientation="h",
               name=f"+ {result.alpha:g} x {result.kind} at layer {result.layer}", marker_color="#1f77b4"),
    ])  # fmt: skip
    figure.update_layout(title=f"the next token after '{result.prompt}' (top tokens before and after; other tokens "
                         "may hold less than shown)", barmode="group", height=140 + 40 * len(tokens),
                         xaxis_title="probability (%)", yaxis_autorange="reversed",
                         margin=dict(l=10, r=10, t=40, b=10))  # fmt: skip
    return figure


def flip_figure(result: SteeringResult) -> go.Figure:
    """Flip rate he -> she per layer (x) and kind of direction (bars), at the first alpha."""
    figure = go.Figure()
    for kind, color in zip(result.kinds, KIND_COLORS, strict=True):
        rates = result.flip_rates[kind][0]
        figure.add_trace(go.Bar(x=[str(layer) for layer in result.layers],
                                y=[None if math.isnan(r) else 100 * r for r in rates], name=kind, marker_color=color,
                                text=["n/a" if math.isnan(r) else f"{100 * r:.0f}%" for r in rates],
                                textposition="outside"))  # fmt: skip
    figure.update_layout(title=f"flip rate {MALE_WORD} -> {FEMALE_WORD} on {result.num_eligible} held-out prompts, "
                         f"alpha {result.alphas[0]:g} (random: {result.num_random} directions of the same norm)",
                         barmode="group", height=380, yaxis=dict(title="flip rate (%)", range=[0, 115]),
                         xaxis_title="layer L: steered after L decoder layers (0: entering the first)",
                         margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))  # fmt: skip
    return figure


class SteerTab:
    """The tab's handlers over the studio's model at the timeline's step."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def steer(self, prompt: str, kind: str, layer: float, alpha: float, positions: str, step: float | None = None):
        """(before/after bars, a status line, the numbers) for one prompt and one direction."""
        try:
            result = steer_prompt(self.studio.model_at(step), self.studio.tokenizer, prompt, kind, int(layer),
                                  float(alpha), k=6, positions=positions)  # fmt: skip
        except InsightError as err:
            return None, problem(err), {}
        (he_before, she_before), (he_after, she_after) = result.words_before, result.words_after
        verdict = "**she now leads**" if she_after > he_after else "he still leads"
        status = (f"p({MALE_WORD}) {he_before:.3f} -> **{he_after:.3f}**, p({FEMALE_WORD}) {she_before:.3f} -> "
                  f"**{she_after:.3f}**: {verdict}. The direction's norm is {result.direction_norm:.3g} (the "
                  "difference of means' at this layer, or the embedding offset's at layer 0).")  # fmt: skip
        return steered_figure(result), status, to_jsonable(result)

    def flip_rates(self, alpha: float, positions: str, step: float | None = None):
        """(the flip-rate chart, a table, the findings, the numbers) over every layer at one alpha."""
        try:
            result = steering_report(self.studio.model_at(step), self.studio.tokenizer, alphas=(float(alpha),),
                                     num_random=NUM_RANDOM, positions=positions)  # fmt: skip
        except InsightError as err:
            return None, [], problem(err), {}
        rows = [[layer, f"{norm:.3g}", *("n/a" if math.isnan(r := result.flip_rates[kind][0][column])
                                         else f"{100 * r:.0f}% ({result.flips[kind][0][column]}/{result.trials[kind]})"
                                         for kind in result.kinds)]
                for column, (layer, norm) in enumerate(zip(result.layers, result.norms, strict=True))]  # fmt: skip
        return flip_figure(result), rows, " ".join(findings(result, 0)), to_jsonable(result)


__all__ = ["DEFAULT_PROMPT", "DIRECTION_KINDS", "POSITIONS", "SteerTab"]
