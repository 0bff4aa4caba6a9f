"""The studio's "One step" tab: `insight.microscope` on the model of the timeline's step. The learner writes a batch
(one text per line) and a held-out text, and sees what ONE AdamW step on a copy of the model changes: each text's
loss, the held-out text's next-token distribution, the arrows on the word map, each stage's blame beside how far the
step moved it, and the embedding rows that moved farthest."""

import plotly.graph_objects as go

from ..explain import to_jsonable
from ..explain.gradients import default_batch_texts
from ..insight.microscope import MicroscopeResult, arrow_scale, optimizer_step_microscope, step_settings
from ..insight.model_parts import InsightError
from .handlers import Studio, problem, word_map_figure

ROWS_LISTED = 12
SETTINGS = ("run", "fresh")


def default_batch() -> str:
    """The default batch as the page's text box holds it: one text per line."""
    return "\n".join(default_batch_texts())


def _bars(title: str, labels: list[str], before: list[float], after: list[float], axis: str) -> go.Figure:
    figure = go.Figure([
        go.Bar(y=labels, x=before, orientation="h", name="before the step", marker_color="#bbbbbb"),
        go.Bar(y=labels, x=after, orientation="h", name="after", marker_color="#3b75af"),
    ])  # fmt: skip
    figure.update_layout(title=title, barmode="group", height=120 + 48 * len(labels), xaxis_title=axis,
                         yaxis_autorange="reversed", margin=dict(l=10, r=10, t=40, b=10))  # fmt: skip
    return figure


def losses_figure(result: MicroscopeResult) -> go.Figure:
    """Each batch text's loss alone and the held-out text's, before and after the step (nats per token)."""
    steps = [*result.batch, result.heldout]
    labels = [*(t.text for t in result.batch), f"held out: {result.heldout.text}"]
    return _bars("loss of each text (nats per token)", labels, [t.loss_before for t in steps],
                 [t.loss_after for t in steps], "next-token loss (nats per token)")  # fmt: skip


def heldout_figure(result: MicroscopeResult) -> go.Figure:
    """The held-out text's top next tokens at its last word, before and after (%)."""
    labels = [f"{t!r}" + (" (actual)" if i == result.focus_id else "")
              for t, i in zip(result.top_tokens, result.top_ids, strict=True)]  # fmt: skip
    before, after = [100 * p for p in result.top_before], [100 * p for p in result.top_after]
    return _bars(f"held out: the next token after '{result.focus_context}'", labels, before, after, "probability (%)")


def blame_figure(result: MicroscopeResult) -> go.Figure:
    """Each stage's share of the squared gradient norm beside the L2 norm of its change."""
    stages = result.blame.stages
    figure = go.Figure([
        go.Bar(y=stages, x=[100 * s for s in result.blame.shares], orientation="h", name="blame: share of the "
               "gradient norm² (%)", marker_color="#d62728"),
        go.Bar(y=stages, x=result.update_norms, orientation="h", name="how far the step moved it (L2)",
               marker_color="#2ca02c", xaxis="x2"),
    ])  # fmt: skip
    figure.update_layout(
        title="blame flows back: each stage's share, and how far the step moved it", barmode="group",
        height=160 + 34 * len(stages), yaxis_autorange="reversed", margin=dict(l=10, r=10, t=70, b=10),
        xaxis=dict(title="blame (%)"), xaxis2=dict(title="change (L2)", overlaying="x", side="top"),
        legend=dict(orientation="h", y=-0.08),
    )  # fmt: skip
    return figure


def arrows_figure(result: MicroscopeResult) -> go.Figure | None:
    """The word map before the step, an arrow per word to where the step moved it (scaled by `arrow_scale`, named in
    the title); black arrows for the batch's words, grey for words moved by the head's gradient alone."""
    if result.word_map is None:
        return None
    figure = word_map_figure(result.word_map)
    figure.layout.annotations = ()  # the gender arrows of the plain map would hide the step's arrows
    scale = arrow_scale(result)
    for (x, y), (u, v), in_batch in zip(result.word_map.coords, result.map_after, result.words_in_batch, strict=True):
        figure.add_annotation(x=x + scale * (u - x), y=y + scale * (v - y), ax=x, ay=y, xref="x", yref="y",
                              axref="x", ayref="y", showarrow=True, arrowhead=2, text="",
                              arrowcolor="black" if in_batch else "#999999")  # fmt: skip
    figure.update_layout(title=f"one step on the word map: before -> after, arrows x{scale:g} (black: words of the "
                         "batch; grey: moved through the tied head alone)")  # fmt: skip
    return figure


class MicroscopeTab:
    """The tab's handler over the studio's model (at the timeline's step) and its run folder."""

    def __init__(self, studio: Studio) -> None:
        self.studio = studio

    def run(
        self, batch: str, heldout: str, settings: str, learning_rate: float | None, step: float | None = None
    ) -> tuple:
        """One AdamW step on a copy of the model at `step`: (losses, held-out, arrows, blame figures, the rows that
        moved farthest, a status line, the numbers). `learning_rate` 0 or empty: the settings' own."""
        texts = [line.strip() for line in (batch or "").splitlines() if line.strip()]
        try:
            chosen = step_settings(self.studio.run_dir, settings, learning_rate=float(learning_rate or 0) or None)
            result = optimizer_step_microscope(self.studio.model_at(step), self.studio.tokenizer, texts,
                                               heldout or "", settings=chosen)  # fmt: skip
        except InsightError as err:
            return None, None, None, None, [], problem(err), {}
        rows = [[token, f"{distance:.4f}", "yes" if row in result.input_rows else "head only"]
                for row, token, distance in result.rows_moved[:ROWS_LISTED]]  # fmt: skip
        status = (
            f"One AdamW step (lr {chosen.learning_rate:g}, {chosen.source} settings) on {len(texts)} text(s), "
            f"{result.num_tokens} tokens: the batch's loss **{result.batch_loss_before:.3f} -> "
            f"{result.batch_loss_after:.3f}** nats per token; held out {result.heldout.loss_before:.3f} -> "
            f"{result.heldout.loss_after:.3f}. {result.rows_changed} of {result.vocab_size} embedding rows moved "
            f"({len(result.input_rows)} are the batch's own tokens"
            + ("; the tied head's softmax reaches every row" if result.tied else "")
            + f"); {100 * result.sign_like_fraction:.0f}% of the changed weights moved by about the learning rate "
            "(a fresh AdamW's first step is sign-like). The model itself is unchanged: the step was on a copy."
        )
        figures = losses_figure(result), heldout_figure(result), arrows_figure(result), blame_figure(result)
        return *figures, rows, status, to_jsonable(result)


__all__ = ["SETTINGS", "MicroscopeTab", "default_batch"]
