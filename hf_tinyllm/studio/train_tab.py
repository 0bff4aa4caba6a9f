"""What the studio's "Train" tab does, as plain Python over `live_training.LiveTraining`: start, pause, resume and
stop one real training run per server, and lay out what it has written so far (the loss against the corpus floor,
memorised against held-out arithmetic, the word map at the newest snapshot). A bad setting or a busy server is a
status line, never an exception. The Gradio wiring is in `app.py`."""

from pathlib import Path

import plotly.graph_objects as go

from ..insight.figures import FLOOR_LABEL
from .handlers import problem, word_map_figure
from .live_training import LiveProgress, LiveSettings, LiveTraining, LiveTrainingError

FAMILY_CONTROLS = ("royalty", "arithmetic", "facts", "sayings")  # the mix's sliders, in the page's order
STATES = {
    "idle": "No run yet: choose a mix, a size and the steps, then Start.",
    "running": "Training",
    "paused": "Paused",
    "stopping": "Stopping: finishing the step and writing a checkpoint",
    "finished": "Finished",
    "stopped": "Stopped",
    "failed": "Failed",
}


class TrainTab:
    """The Train tab's handlers for one server: one run at a time, owned by the page session that started it (the
    run ends when that page goes away, `close_for`)."""

    def __init__(self, workdir: str | Path) -> None:
        self.live = LiveTraining(workdir)
        self.owner: str | None = None
        self.opened: Path | None = None  # the finished model last handed to the other tabs

    def start(self, owner: str, size: str, steps: float, *weights: float) -> str:
        settings = LiveSettings(
            mix=dict(zip(FAMILY_CONTROLS, weights, strict=True)), size=size, steps=_integer_if_whole(steps)
        )
        try:
            progress = self.live.start(settings)
        except LiveTrainingError as err:
            return problem(err)
        self.owner = owner
        return status_line(progress)

    def pause(self) -> str:
        return self._act(self.live.pause)

    def resume(self) -> str:
        return self._act(self.live.resume)

    def stop(self) -> str:
        return self._act(lambda: self.live.stop(wait=0))

    def _act(self, action) -> str:
        try:
            return status_line(action())
        except LiveTrainingError as err:
            return problem(err)

    def close_for(self, owner: str | None) -> None:
        """The page `owner` went away: end its run (another page's run goes on)."""
        if owner is not None and owner == self.owner:
            self.live.close()
            self.owner = None

    def poll(self) -> tuple[str, go.Figure, go.Figure, go.Figure | None, bool, str | None]:
        """Status, the loss figure, the arithmetic figure, the word map, whether the run is still active, and the model
        folder of a run that has just finished (once: the page then opens it in every tab)."""
        progress = self.live.poll()
        live_map = self.live.word_map() if progress.snapshot_step is not None else None
        map_figure = None
        if live_map is not None:
            map_figure = word_map_figure(live_map.word_map)
            map_figure.update_layout(title=f"the word map at step {live_map.step} (input embeddings, 2-D PCA)")
        finished = None
        if progress.state == "finished" and progress.model_dir is not None and progress.model_dir != self.opened:
            self.opened = finished = progress.model_dir
        return (status_line(progress), loss_figure(progress), arithmetic_figure(progress), map_figure,
                progress.active, str(finished) if finished else None)  # fmt: skip


def status_line(progress: LiveProgress) -> str:
    text = STATES.get(progress.state, progress.state)
    if progress.max_steps:
        text += f": step {progress.step} of {progress.max_steps}"
    speeds = [row["tokens_per_s"] for row in progress.loss_rows if "tokens_per_s" in row]
    if speeds and progress.state == "running":
        text += f", {speeds[-1]:,.0f} tokens/s"
    if progress.message:
        text += f". {progress.message}"
    if progress.state == "failed" and progress.log_tail:
        text += f"\n\n```\n{progress.log_tail}\n```"
    return text


def _integer_if_whole(value: float) -> int | float:
    """40.0 (what a Gradio number box sends) as 40; anything else as it came, for LiveSettings.validate to judge."""
    return int(value) if value is not None and float(value).is_integer() else value


def _layout(figure: go.Figure, title: str) -> go.Figure:
    figure.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="step")
    return figure


def loss_figure(progress: LiveProgress) -> go.Figure:
    """Validation bits per byte at each probe against TinyWorld's exact floor for this mix; the training loss (nats per
    token) on the right axis."""
    figure = go.Figure()
    losses = progress.loss_rows
    figure.add_trace(go.Scatter(x=[r["step"] for r in losses], y=[r["loss"] for r in losses], yaxis="y2",
                                name="training loss (nats/token, right)", mode="lines",
                                line=dict(color="#9ab")))  # fmt: skip
    probes = [r for r in progress.probe_rows if "probe/validation_bits_per_byte" in r]
    figure.add_trace(go.Scatter(x=[r["step"] for r in probes], y=[r["probe/validation_bits_per_byte"] for r in probes],
                                name="validation bits per byte", mode="lines+markers"))  # fmt: skip
    if progress.floor_bits_per_byte is not None:
        figure.add_hline(y=progress.floor_bits_per_byte, line_dash="dash",
                         annotation_text=f"{FLOOR_LABEL} {progress.floor_bits_per_byte:.4f}")  # fmt: skip
    figure.update_layout(yaxis=dict(title="bits per byte", rangemode="tozero"),
                         yaxis2=dict(overlaying="y", side="right", showgrid=False, rangemode="tozero"),
                         legend=dict(orientation="h", y=-0.25))  # fmt: skip
    return _layout(figure, "loss against the floor")


def arithmetic_figure(progress: LiveProgress) -> go.Figure:
    """Greedy exact match on arithmetic problems seen in training against held-out ones, at each probe."""
    figure = go.Figure()
    for key, label in (("probe/trained_exact_match", "trained problems"), ("probe/heldout_exact_match", "held-out")):
        points = [(r["step"], 100 * r[key]) for r in progress.probe_rows if key in r]
        figure.add_trace(go.Scatter(x=[s for s, _ in points], y=[v for _, v in points], name=label,
                                    mode="lines+markers"))  # fmt: skip
    figure.update_yaxes(range=[-2, 102], title="exact match (%)")
    return _layout(figure, "arithmetic: memorised vs generalised")


__all__ = ["FAMILY_CONTROLS", "TrainTab", "arithmetic_figure", "loss_figure", "status_line"]
