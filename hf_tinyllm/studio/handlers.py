"""What each control of the studio page does, as plain Python over `hf_tinyllm.insight`: every handler calls an
insight function and only lays its numbers out (plotly figures, tables, a line of Markdown, and the numbers as JSON
for the API). A bad input (`InsightError`) becomes a readable status line, never an exception, so the server keeps
serving. The Gradio wiring is in `app.py`."""

import copy
import json
import math
import random
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from threading import Thread

import plotly.graph_objects as go
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TextIteratorStreamer

from ..explain import to_jsonable
from ..insight.figures import FLOOR_LABEL, SOURCE_LABEL
from ..insight.geometry import WordMap, analogy, nearest_neighbours, word_map
from ..insight.layers import LogitLensResult, attention_maps, logit_lens
from ..insight.model_parts import InsightError, encode_prompt
from ..insight.next_token import next_token_distribution, rank_guess
from ..insight.timeline import Timeline, WordMapTimeline, word_map_timeline
from ..insight.truth import TinyWorldTruth, WordComparison, compare_along, compare_next_word, world_of
from ..model_card import SUMMARY_FILE, TIMELINE_DIR, TRAINING_LOG_FILE

PROMPTS = (
    "two plus three equals",
    "seven times six equals",
    "twelve minus four equals",
    "the capital of france is",
    "the queen walked to the",
    "the king",
    "every cloud has a silver",
)
# The default text of the word-by-word strip.
ALONG_TEXT = "the king fed his dog. he walked to the palace with the queen."
CANDIDATES = 6  # words offered per round: the model's top choices, shuffled
TOP_K_SHOWN = 10
LABEL_POSITIONS = ("top center", "bottom center", "middle right", "middle left")  # neighbours' labels apart
MODEL_CACHE_BYTES = 1 << 30  # the models of recent timeline steps kept in memory, at least two of them


def problem(err: Exception) -> str:
    """A user error as the page shows it: one readable line."""
    return f"**Problem:** {err}"


def _word(token: str) -> str:
    return token.strip() or repr(token)


def word_map_figure(result: WordMap, ranges: tuple[list[float], list[float]] | None = None) -> go.Figure:
    """The word map as a plotly scatter: a trace per word set, arrows from male to female words; `ranges` fixes the
    axes (a timeline's maps share them)."""
    figure = go.Figure()
    for group in dict.fromkeys(result.groups):
        members = [(w, xy) for w, g, xy in zip(result.words, result.groups, result.coords, strict=True) if g == group]
        figure.add_trace(
            go.Scatter(
                x=[xy[0] for _, xy in members],
                y=[xy[1] for _, xy in members],
                text=[w for w, _ in members],
                mode="markers+text",
                textposition=[LABEL_POSITIONS[i % len(LABEL_POSITIONS)] for i in range(len(members))],
                name=group,
            )
        )
    where = dict(zip(result.words, result.coords, strict=True))
    for male, female in result.pairs:
        figure.add_annotation(
            x=where[female][0],
            y=where[female][1],
            ax=where[male][0],
            ay=where[male][1],
            xref="x",
            yref="y",
            axref="x",
            ayref="y",
            showarrow=True,
            arrowhead=2,
            arrowcolor="grey",
            opacity=0.6,
            text="",
        )
    variance = " + ".join(f"{100 * v:.0f}%" for v in result.explained_variance)
    figure.update_layout(
        title=f"input embeddings, 2-D PCA ({variance} of the variance); arrows male -> female",
        height=620,
        margin=dict(l=10, r=10, t=40, b=10),
    )
    if ranges is not None:
        figure.update_xaxes(range=ranges[0], autorange=False)
        figure.update_yaxes(range=ranges[1], autorange=False)
    return figure


def lens_figure(lens: LogitLensResult) -> go.Figure:
    """The logit lens as a heatmap (the picture of `insight.layers.plot_logit_lens`, interactive): layers (rows,
    embeddings at the bottom) by prompt positions; each cell names the layer's top next token there, coloured by its
    probability."""
    labels = [f"{i}:{t!r}" for i, t in enumerate(lens.tokens)]
    figure = go.Figure(
        go.Heatmap(
            z=[[position[0] for position in layer] for layer in lens.top_probabilities],
            x=labels,
            y=lens.layer_names,
            text=[[repr(position[0]) for position in layer] for layer in lens.top_tokens],
            texttemplate="%{text}",
            zmin=0,
            zmax=1,
            colorscale="Blues",
            colorbar=dict(title="top-token p"),
        )
    )
    figure.update_layout(title="Logit lens: the top next token after each layer",
                         height=120 + 40 * len(lens.layer_names), margin=dict(l=10, r=10, t=40, b=10))  # fmt: skip
    return figure


def along_figure(along: list[WordComparison]) -> go.Figure:
    """Per word of a text: the model's surprise and the truth's (bars), the true conditional entropy (the floor,
    markers) and the KL gap (hover)."""
    labels = [f"{i}:{r.word}" for i, r in enumerate(along)]
    model_bits = [r.model_surprise_bits if math.isfinite(r.model_surprise_bits) else None for r in along]
    figure = go.Figure()
    figure.add_trace(go.Bar(x=labels, y=model_bits, name="the model's surprise", marker_color="#3b75af",
                            customdata=[[r.gap_bits] for r in along],
                            hovertemplate="%{x}: %{y:.3f} bits (KL gap %{customdata[0]:.3f})"
                                          "<extra></extra>"))  # fmt: skip
    figure.add_trace(go.Bar(x=labels, y=[r.true_surprise_bits for r in along], name="the truth's surprise",
                            marker_color="#bbbbbb"))  # fmt: skip
    figure.add_trace(go.Scatter(x=labels, y=[r.entropy_bits for r in along], name="true entropy (the floor)",
                                mode="markers", marker=dict(symbol="line-ew-open", size=22, color="#d62728",
                                                            line=dict(width=3))))  # fmt: skip
    figure.update_layout(title="Word by word: surprise against the truth (bits)", barmode="group", height=360,
                         margin=dict(l=10, r=10, t=40, b=10), yaxis_title="bits",
                         legend=dict(orientation="h", y=-0.25))  # fmt: skip
    return figure


def _along_status(along: list[WordComparison]) -> str:
    entropy, model = sum(r.entropy_bits for r in along), sum(r.model_surprise_bits for r in along)
    gap = sum(r.gap_bits for r in along)
    worst = max(along, key=lambda r: r.gap_bits)
    return (f"{len(along)} words: **{entropy:.2f} bits** of true entropy, the model's surprise **{model:.2f} bits**; "
            f"the gap to the truth (KL, summed) is **{gap:.3f} bits**, most of it at '{worst.word}' "
            f"({worst.gap_bits:.3f}): what the model has left to learn.")  # fmt: skip


def _level_on_log_axis(figure: go.Figure, y: float, text: str, dash: str, side: str) -> None:
    """A horizontal line at `y` on a log y axis, labelled at its right end. (plotly.js places an annotation on a log
    axis at 10**y, so `add_hline`'s own label would land far from its line: it is placed at log10(y) here.)"""
    figure.add_hline(y=y, line_dash=dash)
    figure.add_annotation(x=1, xref="x domain", y=math.log10(y), yref="y", text=text, showarrow=False,
                          xanchor="right", yanchor=side)  # fmt: skip


def _axis_ranges(points: list) -> tuple[list[float], list[float]]:
    """x and y ranges holding every point, with a margin."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    pad_x, pad_y = 0.08 * (max(xs) - min(xs) or 1.0), 0.08 * (max(ys) - min(ys) or 1.0)
    return [min(xs) - pad_x, max(xs) + pad_x], [min(ys) - pad_y, max(ys) + pad_y]


class Studio:
    """The page's handlers for one model and tokenizer; `run_dir` holds the training records (the model folder by
    default: `training_log.jsonl`, `training_summary.json`)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: str | Path | None = None):
        self._attach(model, tokenizer, run_dir)

    def open_model(self, folder: str | Path) -> None:
        """Show another model folder from now on (the Train tab's finished model), with its records and timeline."""
        from ..explain import load_model_and_tokenizer

        self._attach(*load_model_and_tokenizer(str(folder)), folder)

    def _attach(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: str | Path | None) -> None:
        self.final, self.tokenizer = model.eval(), tokenizer
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.timeline = self._open_timeline()
        self._models: OrderedDict[int, PreTrainedModel] = OrderedDict()
        model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self._models_kept = max(2, MODEL_CACHE_BYTES // max(model_bytes, 1))
        self._word_maps: WordMapTimeline | None = None
        self._truth: TinyWorldTruth | None = None  # the run's TinyWorld, built on first use
        self._truth_source = ""

    # -- the timeline: the model as it was at a recorded step -------------------------------------------------------

    def _open_timeline(self) -> Timeline | None:
        if self.run_dir is None or not (self.run_dir / TIMELINE_DIR).is_dir():
            return None
        try:
            return Timeline(self.run_dir)
        except InsightError:
            return None

    @property
    def steps(self) -> list[int]:
        """The recorded steps (empty without a timeline); the page's slider moves over them."""
        return self.timeline.steps if self.timeline is not None else []

    def recorded_step(self, step: float | None) -> int | None:
        """The recorded step nearest to `step`; None (the final model) without a timeline or a step."""
        if not self.steps or step is None:
            return None
        return min(self.steps, key=lambda s: (abs(s - float(step)), -s))

    def model_at(self, step: float | None = None) -> PreTrainedModel:
        """The model as it was at the recorded step nearest to `step`: the final model without a timeline, at the
        last step, or when the snapshots hold the embedding alone (the other views then show the final model). The
        models of recent steps are kept (`MODEL_CACHE_BYTES`), so scrubbing back and forth reloads nothing."""
        step = self.recorded_step(step)
        if step is None or step == self.steps[-1] or self.timeline.kind(step) != "weights":
            return self.final
        if step not in self._models:
            self._models[step] = self.timeline.load_into(copy.deepcopy(self.final), step).eval()
            while len(self._models) > self._models_kept:
                self._models.popitem(last=False)
        self._models.move_to_end(step)
        return self._models[step]

    def word_maps(self) -> WordMapTimeline:
        """The word map at every recorded step, aligned to the last (computed once, on first use)."""
        if self._word_maps is None:
            self._word_maps = word_map_timeline(self.timeline, self.tokenizer, model=self.final)
        return self._word_maps

    def timeline_status(self, step: float | None) -> str:
        step = self.recorded_step(step)
        if step is None:
            return "The model as it finished training (no timeline recorded: train with --probe_steps N)."
        text = f"The model as it was at **step {step}** of {self.steps[-1]} ({len(self.steps)} snapshots)."
        if self.timeline.kind(step) != "weights":
            text += (
                " This snapshot holds the embedding alone: the word map moves; the other views show the final model."
            )
        return text

    # -- 1. be the model ---------------------------------------------------------------------------------------

    def new_round(self, prompt: str, step: float | None = None) -> tuple[list[str], str, str]:
        """Candidate words for the next token of `prompt` (the model's top choices, shuffled), a status line and the
        prompt. `prompt` empty: a TinyWorld prompt. Every handler takes the timeline `step` last: the model as it
        was then (`model_at`); none: the final model."""
        prompt = prompt.strip() or random.choice(PROMPTS)
        try:
            result = next_token_distribution(self.model_at(step), self.tokenizer, prompt, k=CANDIDATES)
        except InsightError as err:
            return [], problem(err), prompt
        words = [_word(t) for t in result.model.tokens]
        random.Random(prompt).shuffle(words)
        return words, f"What comes after **{prompt}**? Click a word or type your own.", prompt

    def distribution(
        self, prompt: str, temperature: float, top_k: int, top_p: float, step: float | None = None
    ) -> tuple[go.Figure | None, str, dict]:
        """The model's top tokens after the sampling settings (top_k 0 and top_p 1 are off), as a bar chart."""
        try:
            result = next_token_distribution(
                self.model_at(step),
                self.tokenizer,
                prompt,
                k=TOP_K_SHOWN,
                temperature=temperature,
                top_k=int(top_k) or None,
                top_p=top_p if top_p < 1 else None,
            )
        except InsightError as err:
            return None, problem(err), {}
        shown = result.sampling
        figure = go.Figure(
            go.Bar(
                x=[100 * p for p in shown.probabilities][::-1],
                y=[repr(t) for t in shown.tokens][::-1],
                orientation="h",
                marker_color="#3b75af",
            )
        )
        figure.update_layout(
            title=f"next token after '{prompt}' ({shown.entropy_bits:.2f} bits)",
            height=360,
            margin=dict(l=10, r=10, t=40, b=30),
            xaxis_title="probability (%)",
        )
        status = (
            f"entropy {result.model.entropy_bits:.2f} bits before sampling, {shown.entropy_bits:.2f} after; "
            f"{shown.nonzero} of {result.vocab_size} tokens can be drawn"
        )
        return figure, status, to_jsonable(result)

    def world_truth(self) -> TinyWorldTruth:
        """The exact next-word distributions of the TinyWorld the model trained on (built on first use)."""
        if self._truth is None:
            world, self._truth_source = world_of(self.run_dir)
            self._truth = TinyWorldTruth(world)
        return self._truth

    def truth(self, prompt: str, step: float | None = None) -> tuple[list, str, dict]:
        """TinyWorld's exact next word after `prompt` beside the model's, and the gap (KL) in bits; a line saying
        why not when the prompt is not the beginning of a TinyWorld text."""
        try:
            result = compare_next_word(self.model_at(step), self.tokenizer, prompt, self.world_truth())
        except InsightError as err:
            return [], f"The truth beside the model: none here ({err})", {}
        exact = result.truth
        rows = [
            [word, f"{100 * p:.1f}%", f"{100 * q:.1f}%"]
            for word, p, q in zip(exact.words, exact.probabilities, result.model_probabilities, strict=True)
        ]
        status = (f"The truth ({self._truth_source}): {exact.entropy_bits:.2f} bits of true entropy; the model is "
                  f"**{result.gap_bits:.3f} bits** from it (KL): what it has left to learn here.")  # fmt: skip
        return rows[:TOP_K_SHOWN], status, to_jsonable(result)

    def truth_along(self, text: str, step: float | None = None) -> tuple[go.Figure | None, str, dict]:
        """Word by word along a TinyWorld text: the model's surprise beside the true conditional entropy (what no
        model can avoid) and this text's true surprise; the KL gap per word is what is left to learn there."""
        try:
            along = compare_along(self.model_at(step), self.tokenizer, text, self.world_truth())
        except InsightError as err:
            return None, f"Along the text: none here ({err})", {}
        return along_figure(along), _along_status(along), {"along": to_jsonable(along)}

    def guess(self, prompt: str, word: str, score: dict | None, step: float | None = None) -> tuple[str, dict, dict]:
        """Reveal the rank and probability of the user's guess; update the running score."""
        score = dict(score or {"rounds": 0, "top": 0, "probability": 0.0})
        try:
            result = rank_guess(self.model_at(step), self.tokenizer, prompt, word or "")
        except InsightError as err:
            return problem(err), score, {}
        score["rounds"] += 1
        score["top"] += int(result.rank == 1)
        score["probability"] += result.word_probability
        verdict = (
            "the model's top choice!"
            if result.rank == 1
            else f"the model preferred '{_word(result.top_token)}' ({result.top_probability:.0%})"
        )
        text = (
            f"'{word}' ranks **{result.rank}** of {result.vocab_size} with **{result.word_probability:.1%}**: "
            f"{verdict}  \nScore: {score['top']} of {score['rounds']} rounds matched the model; your guesses got "
            f"{score['probability'] / score['rounds']:.0%} on average."
        )
        return text, score, to_jsonable(result)

    def next_word(self, prompt: str, step: float | None = None) -> str:
        """The prompt with the model's top next token appended."""
        try:
            result = next_token_distribution(self.model_at(step), self.tokenizer, prompt, k=1)
        except InsightError:
            return prompt
        return prompt + result.model.tokens[0]

    # -- 2. through the layers ---------------------------------------------------------------------------------

    def layers(
        self, prompt: str, position: int, layer: int, head: int, step: float | None = None
    ) -> tuple[go.Figure | None, list, go.Figure | None, str, dict]:
        """The logit-lens heatmap, the per-layer top tokens at `position` (-1: the last), one attention map."""
        model = self.model_at(step)
        try:
            lens = logit_lens(model, self.tokenizer, prompt)
            attention = attention_maps(model, self.tokenizer, prompt)
        except InsightError as err:
            return None, [], None, problem(err), {}
        positions = len(lens.tokens)
        position = int(position) if 0 <= int(position) < positions else positions - 1
        layer = min(max(int(layer), 1), len(attention.weights))
        head = min(max(int(head), 1), len(attention.weights[0]))
        rows = [
            [
                name,
                f"{lens.kl_bits[i][position]:.2f}",
                ", ".join(
                    f"{t!r} {100 * p:.1f}%"
                    for t, p in zip(lens.top_tokens[i][position], lens.top_probabilities[i][position], strict=True)
                ),
            ]
            for i, name in enumerate(lens.layer_names)
        ]
        labels = [f"{i}:{t!r}" for i, t in enumerate(attention.tokens)]
        figure = go.Figure(
            go.Heatmap(
                z=attention.weights[layer - 1][head - 1], x=labels, y=labels, zmin=0, zmax=1, colorscale="Viridis"
            )
        )
        figure.update_layout(
            title=f"attention, layer {layer} head {head} (row = query, column = key)",
            height=420,
            yaxis_autorange="reversed",
            margin=dict(l=10, r=10, t=40, b=10),
        )
        status = (
            f"after '{lens.tokens[position]}' (position {position}); the final answer "
            f"'{lens.final_token}' has p = "
            + ", ".join(f"{100 * p:.1f}%" for p in lens.final_token_probabilities)
            + " after "
            + ", ".join(lens.layer_names)
        )
        return lens_figure(lens), rows, figure, status, {"logit_lens": to_jsonable(lens), "position": position}

    # -- 3. geometry --------------------------------------------------------------------------------------------

    def geometry_map(self, step: float | None = None) -> tuple[go.Figure | None, list[str], str, dict]:
        """The word map; with a timeline, the map at `step` aligned to the last step's, on axes that hold every
        step's map, so that scrubbing moves the words instead of jumping them."""
        ranges, note = None, ""
        try:
            if self.steps:
                maps = self.word_maps()
                at = maps.steps.index(self.recorded_step(step) if step is not None else maps.steps[-1])
                result = maps.maps[at]
                ranges = _axis_ranges([xy for m in maps.maps for xy in m.coords])
                note = (f"; step {maps.steps[at]}: parallelism of the gender offsets {maps.parallelism[at]:+.2f} "
                        f"(random pairs {maps.parallelism_baseline:+.2f} at the end)")  # fmt: skip
            else:
                result = word_map(self.final, self.tokenizer)
        except InsightError as err:
            return None, [], problem(err), {}
        figure = word_map_figure(result, ranges)
        return figure, result.words, f"{len(result.words)} words{note}", to_jsonable(result)

    def analogy(self, a: str, b: str, c: str, step: float | None = None) -> tuple[list, str, dict]:
        try:
            result = analogy(self.model_at(step), self.tokenizer, a, b, c, k=5)
        except InsightError as err:
            return [], problem(err), {}
        rows = [[i + 1, word, f"{cosine:+.3f}"] for i, (word, cosine) in enumerate(result.top)]
        return rows, f"{a} - {b} + {c} -> **{result.top[0][0]}**", to_jsonable(result)

    def neighbours(self, word: str, step: float | None = None) -> tuple[list, str, dict]:
        try:
            result = nearest_neighbours(self.model_at(step), self.tokenizer, word or "", k=8)
        except InsightError as err:
            return [], problem(err), {}
        rows = [[w, f"{cosine:+.3f}"] for w, cosine in result.neighbours]
        return rows, f"nearest to **{word}** by cosine", to_jsonable(result)

    # -- 4. how it learned ----------------------------------------------------------------------------------------

    def records(self) -> tuple[list[dict], dict]:
        """The run's logged rows and its summary, from `run_dir`; `InsightError` names what is missing."""
        if self.run_dir is None:
            raise InsightError("No training records: the model was given without its folder.")
        log, summary = self.run_dir / TRAINING_LOG_FILE, self.run_dir / SUMMARY_FILE
        missing = [p.name for p in (log, summary) if not p.exists()]
        if missing:
            raise InsightError(
                f"{self.run_dir} has no {' or '.join(missing)}: train with scripts/train.py (with "
                "--probe_steps N for the learning probes) to record how the model learned."
            )
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        return rows, json.loads(summary.read_text())

    def learning(
        self, step: float | None = None
    ) -> tuple[go.Figure | None, go.Figure | None, go.Figure | None, go.Figure | None, str]:
        """The learning curves, with a cursor at the timeline's `step`."""
        try:
            rows, summary = self.records()
        except InsightError as err:
            return None, None, None, None, problem(err)
        cursor = self.recorded_step(step)
        final = summary.get("final_metrics", {})
        floor, source = final.get("floor_bits_per_byte"), final.get("source_bits_per_byte")

        def lines(title: str, series: dict[str, str], scale: float = 1.0, log_y: bool = False) -> go.Figure:
            figure = go.Figure()
            for key, label in series.items():
                points = [(r["step"], scale * r[key]) for r in rows if key in r]
                if points:
                    figure.add_trace(
                        go.Scatter(x=[s for s, _ in points], y=[v for _, v in points], name=label, mode="lines+markers")
                    )
            figure.update_layout(title=title, height=320, margin=dict(l=10, r=10, t=40, b=10), xaxis_title="step")
            if log_y:
                figure.update_yaxes(type="log")
            if cursor is not None:
                figure.add_vline(x=cursor, line_color="#d62728", line_width=2, opacity=0.7)
            return figure

        loss = lines(
            "training loss and validation bits per byte",
            {
                "loss": "training loss (nats/token)",
                "eval/bits_per_byte": "validation bits per byte",
                "probe/validation_bits_per_byte": "validation bits per byte (probe)",
            },
            log_y=True,
        )
        if floor is not None:
            _level_on_log_axis(loss, floor, f"{FLOOR_LABEL} {floor:.4f}", "dash", "bottom")
        if source is not None:
            _level_on_log_axis(loss, source, f"{SOURCE_LABEL} {source:.4f}", "dot", "top")
        memory = lines(
            "arithmetic exact match (%): memorised vs generalised",
            {"probe/trained_exact_match": "trained problems", "probe/heldout_exact_match": "held-out"},
            100,
        )
        geometry = lines(
            "geometry: parallelism of gender offsets",
            {"probe/parallelism": "gender pairs", "probe/parallelism_baseline": "random pairs"},
        )
        updates = lines(
            "blame: share of the gradient norm² by stage",
            {
                "probe/blame_head": "blame: head",
                "probe/blame_attention": "blame: attention",
                "probe/blame_mlp": "blame: MLP",
                "probe/blame_embeddings": "blame: embeddings",
            },
        )
        probes = [r for r in rows if "probe/seconds" in r]
        status = (
            f"{len(rows)} logged rows, {len(probes)} probe records"
            if probes
            else f"{len(rows)} logged rows and no probe records: train with --probe_steps N to record the learning "
            "probes"
        )
        return loss, memory, geometry, updates, status

    # -- 5. generate ----------------------------------------------------------------------------------------------

    def generate(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        sample: bool,
        step: float | None = None,
    ) -> Iterator[str]:
        """Stream the continuation of `prompt` as it is generated."""
        model = self.model_at(step)
        try:
            ids = encode_prompt(model, self.tokenizer, prompt)
        except InsightError as err:
            yield problem(err)
            return
        room = model.config.max_position_embeddings - ids.shape[1]
        # The prompt is decoded with its continuation, not glued to it: a tokenizer with a prefix space drops the
        # space before a text decoded on its own, so the continuation alone would lose its first space.
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=False, skip_special_tokens=True)
        options = (
            dict(do_sample=sample, temperature=temperature, top_k=int(top_k), top_p=top_p)
            if sample
            else dict(do_sample=False)
        )
        kwargs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max(1, min(int(max_new_tokens), room)),
            streamer=streamer,
            pad_token_id=self.tokenizer.pad_token_id,
            **options,
        )
        thread = Thread(target=model.generate, kwargs=kwargs)
        thread.start()
        text = ""
        for piece in streamer:
            text += piece
            yield text
        thread.join()


__all__ = ["ALONG_TEXT", "PROMPTS", "Studio", "along_figure"]
