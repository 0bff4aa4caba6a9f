"""The studio's "context moves the vector" view, under "Through the layers": `insight.context` on the model of the
timeline's step. The same token's hidden state in two contexts, one 2-D PCA panel per layer, and per layer how well
the two contexts are told apart."""

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..explain import to_jsonable
from ..insight.context import STUDY_NAMES, ContextResult, context_separation, interpretation
from ..insight.model_parts import InsightError
from .handlers import Studio, problem

COLORS = ("#1f77b4", "#ff7f0e")


def context_figure(result: ContextResult) -> go.Figure:
    """One panel per layer: each occurrence's hidden state on that layer's two PCA axes, coloured by context."""
    columns = len(result.layer_names)
    titles = [
        f"{name}<br>acc {100 * acc:.0f}% (chance {100 * chance:.0f}%)"
        for name, acc, chance in zip(result.layer_names, result.accuracy, result.chance_accuracy, strict=True)
    ]
    figure = make_subplots(rows=1, cols=columns, subplot_titles=titles, horizontal_spacing=0.03)
    for layer, points in enumerate(result.points, start=1):
        for label, (name, color) in enumerate(zip(result.context_names, COLORS, strict=True)):
            members = [
                (xy, text) for xy, text, own in zip(points, result.texts, result.labels, strict=True) if own == label
            ]
            figure.add_trace(
                go.Scatter(
                    x=[xy[0] for xy, _ in members],
                    y=[xy[1] for xy, _ in members],
                    text=[text for _, text in members],
                    hoverinfo="text",
                    mode="markers",
                    marker=dict(color=color, size=7, symbol="circle" if label == 0 else "triangle-up"),
                    name=name,
                    legendgroup=name,
                    showlegend=layer == 1,
                ),
                row=1,
                col=layer,
            )
    figure.update_xaxes(showticklabels=False)
    figure.update_yaxes(showticklabels=False)
    figure.update_annotations(font_size=11)
    figure.update_layout(
        title=f"the hidden state of '{result.word}' per layer: {' vs '.join(result.context_names)}",
        height=330,
        margin=dict(l=10, r=10, t=80, b=10),
        legend=dict(orientation="h", y=-0.05),
    )
    return figure


def context_view(studio: Studio, study: str, step: float | None = None) -> tuple:
    """(the panels, a table per layer, a status line, the numbers) for a built-in study on the model at `step`."""
    try:
        result = context_separation(studio.model_at(step), studio.tokenizer, study)
    except InsightError as err:
        return None, [], problem(err), {}
    rows = [
        [name, f"{100 * acc:.1f}%", f"{100 * chance:.1f}%", f"{cosine:.3f}", f"{ratio:.2f}"]
        for name, acc, chance, cosine, ratio in zip(
            result.layer_names,
            result.accuracy,
            result.chance_accuracy,
            result.cosine_distance,
            result.separation_ratio,
            strict=True,
        )
    ]
    return context_figure(result), rows, f"{result.description}. {interpretation(result)}", to_jsonable(result)


__all__ = ["STUDY_NAMES", "context_figure", "context_view"]
