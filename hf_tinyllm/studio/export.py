"""`tinyllm studio MODEL --export lesson.html`: the studio's lesson on one model as ONE self-contained HTML file, to
email, put on a course page or open offline: no server, no network, no CDN.

The file holds every figure of every tab (be the model with the truth beside it, through the layers, geometry, how
it learned, generate) at every step of the model's training timeline (`insight.timeline`), a slider and a play
button that move every figure to a recorded step together, and the numbers themselves as JSON (`<script
type="application/json" id="lesson-data">`). The numbers are what `insight` computes on the snapshot of each step
(rounded to `DECIMALS`); the page's plain JavaScript only lays them out with the inlined plotly.js (`Plotly.react`).

    export_lesson("outputs/demo/model", "lesson.html")

A folder without a timeline gives the final model alone; a timeline of embedding-only snapshots (a model above the
whole-weight limit) moves the word map and the analogy, and the other views show the final model (the page says
so). No gradio here: plotly, torch and `insight` only.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from ..atomic import atomic_file
from ..explain import load_model_and_tokenizer, to_jsonable
from ..insight.geometry import analogy, parallelism_score, word_map
from ..insight.layers import attention_maps, logit_lens
from ..insight.model_parts import InsightError
from ..insight.next_token import greedy_continuation, next_token_distribution
from ..insight.timeline import Timeline, load_timeline, word_map_timeline
from ..insight.truth import TinyWorldTruth, compare_along, compare_next_word, world_of
from ..model_card import SUMMARY_FILE, TIMELINE_DIR
from .handlers import ALONG_TEXT, PROMPTS, TOP_K_SHOWN, Studio
from .lesson_page import render_page

GENERATE_PROMPTS = ("the queen", "two plus three equals", "the capital of france is")
GENERATE_TOKENS = 24  # greedy tokens after each generate prompt
LENS_TOP_K = 5  # tokens per logit-lens cell (the hover); the cell shows the first
ANALOGY = ("king", "man", "woman")  # a - b + c
ANALOGY_TOP_K = 5
DECIMALS = 6  # every float of the page's data is rounded to this many decimals
MAP_PADDING = 0.1  # the word map's fixed axes: the range over every step, widened by this fraction each side
LEARNING_FIGURES = ("loss", "memory", "geometry", "updates")  # handlers.Studio.learning's figures, in its order


def rounded(value, decimals: int = DECIMALS):
    """`value` (plain JSON types) with every float rounded to `decimals` decimals."""
    if isinstance(value, float):
        return round(value, decimals)
    if isinstance(value, dict):
        return {k: rounded(v, decimals) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, decimals) for v in value]
    return value


def _problem(err: InsightError) -> dict:
    return {"problem": str(err)}


# -- the views of one model (be the model, through the layers, generate) ---------------------------------------------


def be_the_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> dict:
    """The model's top `TOP_K_SHOWN` next tokens after `prompt`, their probabilities and the entropy in bits
    (`insight.next_token.next_token_distribution`, no sampling settings)."""
    try:
        result = next_token_distribution(model, tokenizer, prompt, k=TOP_K_SHOWN)
    except InsightError as err:
        return _problem(err)
    top = to_jsonable(result.model)
    return {"prompt_tokens": result.prompt_tokens, "vocab_size": result.vocab_size, **top}


def through_the_layers(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> dict:
    """The logit lens of `prompt` (`LENS_TOP_K` tokens a cell) and every head's attention map."""
    try:
        lens = logit_lens(model, tokenizer, prompt, k=LENS_TOP_K)
        attention = attention_maps(model, tokenizer, prompt)
    except InsightError as err:
        return _problem(err)
    names = ("tokens", "layer_names", "top_tokens", "top_probabilities", "final_token", "final_token_probabilities",
             "kl_bits")  # fmt: skip
    return {**{name: to_jsonable(getattr(lens, name)) for name in names}, "attention": attention.weights}


def truth_beside(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, truth: TinyWorldTruth
) -> dict:
    """TinyWorld's exact next word after `prompt` beside the model's, as the studio's "Be the model" shows it: the
    `TOP_K_SHOWN` likeliest true words with both probabilities, how many words the truth allows, its entropy and the
    gap (KL) in bits (`insight.truth.compare_next_word`)."""
    try:
        result = compare_next_word(model, tokenizer, prompt, truth)
    except InsightError as err:
        return _problem(err)
    exact = result.truth
    return {"words": exact.words[:TOP_K_SHOWN], "truth": exact.probabilities[:TOP_K_SHOWN],
            "model": result.model_probabilities[:TOP_K_SHOWN], "true_words": len(exact.words),
            "entropy_bits": exact.entropy_bits, "gap_bits": result.gap_bits}  # fmt: skip


def word_by_word(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, truth: TinyWorldTruth) -> dict:
    """Per word of a TinyWorld text (`insight.truth.compare_along`): the true entropy, the text's true surprise, the
    model's surprise (null where the model gives the word 0) and the gap (KL), each a list in the text's order."""
    try:
        along = compare_along(model, tokenizer, text, truth)
    except InsightError as err:
        return _problem(err)
    fields = ("word", "entropy_bits", "true_surprise_bits", "model_surprise_bits", "gap_bits")
    return {field: [getattr(position, field) for position in along] for field in fields}


def model_views(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    truth: TinyWorldTruth,
    prompts: tuple[str, ...] = PROMPTS,
    generate_prompts: tuple[str, ...] = GENERATE_PROMPTS,
    max_new_tokens: int = GENERATE_TOKENS,
    along_text: str = ALONG_TEXT,
) -> dict:
    """What the page shows of one model: the next-token distribution, the truth beside it and the layers of each
    prompt, the word-by-word comparison with the truth along `along_text`, and the greedy continuation of each
    generate prompt."""
    return {
        "be": {prompt: be_the_model(model, tokenizer, prompt) for prompt in prompts},
        "truth": {prompt: truth_beside(model, tokenizer, prompt, truth) for prompt in prompts},
        "along": word_by_word(model, tokenizer, along_text, truth),
        "layers": {prompt: through_the_layers(model, tokenizer, prompt) for prompt in prompts},
        "generate": {p: greedy_continuation(model, tokenizer, p, max_new_tokens) for p in generate_prompts},
    }


# -- geometry -----------------------------------------------------------------------------------------------------


def _analogy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list | dict:
    try:
        return to_jsonable(analogy(model, tokenizer, *ANALOGY, k=ANALOGY_TOP_K).top)
    except InsightError as err:
        return _problem(err)


def _axis_range(values: list[float]) -> list[float]:
    low, high = min(values), max(values)
    pad = MAP_PADDING * ((high - low) or 1.0)
    return [low - pad, high + pad]


def _geometry_of_maps(maps: list, raw: list, parallelism: list[float], baseline: float, analogies: list) -> dict:
    """The word maps of every step as the page's data: the words once, each step's aligned and own PCA
    coordinates, and the fixed axes that hold every step."""
    first = maps[-1]
    everything = [xy for m in maps for xy in m.coords]
    return {
        "words": first.words,
        "groups": first.groups,
        "pairs": to_jsonable(first.pairs),
        "num_tokens": first.num_tokens,
        "missing": first.missing,
        "x_range": _axis_range([x for x, _ in everything]),
        "y_range": _axis_range([y for _, y in everything]),
        "parallelism_baseline": baseline,
        "steps": [
            {
                "coords": to_jsonable(m.coords),
                "pca_coords": to_jsonable(r.coords),
                "explained_variance": m.explained_variance,
                "parallelism": p,
                "analogy": a,
            }
            for m, r, p, a in zip(maps, raw, parallelism, analogies, strict=True)
        ],
    }


def timeline_geometry(timeline: Timeline, tokenizer: PreTrainedTokenizerBase) -> dict:
    """The word map at every step aligned to the last (`insight.timeline.word_map_timeline`), each step's own PCA,
    the parallelism score and the analogy, all read off the step's input embedding."""
    try:
        moving = word_map_timeline(timeline, tokenizer)
    except InsightError as err:
        return _problem(err)
    model = AutoModelForCausalLM.from_pretrained(timeline.model_folder).eval()
    raw, analogies = [], []
    for step in timeline.steps:
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(timeline.embeddings(step))
        raw.append(word_map(model, tokenizer))
        analogies.append(_analogy(model, tokenizer))
    return _geometry_of_maps(moving.maps, raw, moving.parallelism, moving.parallelism_baseline, analogies)


def final_geometry(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> dict:
    """The word map, parallelism score and analogy of the final model (a folder without a timeline)."""
    try:
        wmap, score = word_map(model, tokenizer), parallelism_score(model, tokenizer)
    except InsightError as err:
        return _problem(err)
    return _geometry_of_maps([wmap], [wmap], [score.score], score.baseline, [_analogy(model, tokenizer)])


# -- how it learned -----------------------------------------------------------------------------------------------


def _figure_json(figure) -> dict | None:
    """A plotly figure as JSON without its template (the page gives every figure the same one)."""
    if figure is None:
        return None
    import plotly.io as pio

    data = json.loads(pio.to_json(figure))
    data["layout"].pop("template", None)
    return data


def learning_figures(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: Path) -> dict:
    """The studio's four learning-curve figures (`handlers.Studio.learning`, the same series) and its status line;
    the page adds a cursor at the current step."""
    *figures, status = Studio(model, tokenizer, run_dir).learning()
    return {"status": status, "figures": dict(zip(LEARNING_FIGURES, map(_figure_json, figures), strict=True))}


def plotly_template() -> dict:
    """plotly's default template (the studio's look), as JSON."""
    import plotly.graph_objects as go
    import plotly.io as pio

    return json.loads(pio.to_json(go.Figure()))["layout"]["template"]


# -- the whole lesson ---------------------------------------------------------------------------------------------


def model_folder(name_or_path: str | Path) -> Path:
    """A local model folder: `name_or_path` itself, or a Hub repository downloaded whole (weights, records and
    timeline)."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).count("/") != 1:
        raise FileNotFoundError(f"{name_or_path} is not a model folder (nor a Hub id user/name); give the folder of a "
                                "trained model, e.g. outputs/demo/model (make demo writes it).")  # fmt: skip
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path)))
    except Exception as err:  # offline, private or gone
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileNotFoundError(f"{name_or_path} is not a model folder, and downloading it as a Hub id failed "
                                f"({first_line}).") from err  # fmt: skip


def _timeline_or_none(folder: Path) -> Timeline | None:
    return load_timeline(folder) if (folder / TIMELINE_DIR).is_dir() else None


def _final_step(folder: Path) -> int | None:
    summary = folder / SUMMARY_FILE
    return json.loads(summary.read_text()).get("steps") if summary.is_file() else None


def _timeline_note(kind: str | None, steps: list) -> str:
    if kind is None:
        return ("This model has no training timeline (train with --probe_steps N to record one): every view shows the "
                "final model.")  # fmt: skip
    if kind == "embeddings":
        return (f"The {len(steps)} snapshots of this run hold the input embedding only (the model is above the "
                "whole-weight limit): the word map and the analogy move with the slider; the other views show the "
                "final model.")  # fmt: skip
    return (
        f"{len(steps)} snapshots of the whole model, steps {steps[0]} to {steps[-1]}: every view moves with the slider."
    )


def lesson_data(
    name_or_path: str | Path,
    prompts: tuple[str, ...] = PROMPTS,
    generate_prompts: tuple[str, ...] = GENERATE_PROMPTS,
    max_new_tokens: int = GENERATE_TOKENS,
) -> dict:
    """Everything the lesson page shows of a model folder (or Hub id), as plain JSON types: per recorded step the
    model views (`model_views`; once, of the final model, when the timeline has no whole weights or there is none),
    the geometry per step, the learning curves, and what the page needs to lay them out. The truth is the TinyWorld
    the run trained on (`insight.truth.world_of`)."""
    folder = model_folder(name_or_path)
    model, tokenizer = load_model_and_tokenizer(str(folder))
    world, truth_source = world_of(folder)
    truth = TinyWorldTruth(world)
    timeline = _timeline_or_none(folder)
    kinds = {s["kind"] for s in timeline.snapshots.values()} if timeline else set()
    kind = None if timeline is None else "weights" if kinds == {"weights"} else "embeddings"
    steps = timeline.steps if timeline else [_final_step(folder)]
    views = dict(truth=truth, prompts=prompts, generate_prompts=generate_prompts, max_new_tokens=max_new_tokens)
    if kind == "weights":
        per_step = [model_views(timeline.model_at(step), tokenizer, **views) for step in steps]
    else:
        per_step = [model_views(model, tokenizer, **views)]
    return rounded(to_jsonable({
        "model": str(name_or_path),
        "steps": steps,
        "timeline": {"kind": kind, "note": _timeline_note(kind, steps)},
        "prompts": list(prompts),
        "generate_prompts": list(generate_prompts),
        "truth_source": truth_source,
        "along_text": ALONG_TEXT,
        "analogy": list(ANALOGY),
        "model_views": per_step,
        "geometry": timeline_geometry(timeline, tokenizer) if timeline else final_geometry(model, tokenizer),
        "learning": learning_figures(model, tokenizer, folder),
        "template": plotly_template(),
    }))  # fmt: skip


@contextmanager
def quiet_single_thread() -> Iterator[None]:
    """torch on one intra-op thread and no weight-loading progress bars for the block, then as they were. The lesson
    runs hundreds of forward passes of a few tokens each: handing such small products to several threads costs more
    than it saves (on a busy 2-core machine, the demo's export took 51 s on two threads and 8 s on one)."""
    threads, bars = torch.get_num_threads(), hf_logging.is_progress_bar_enabled()
    torch.set_num_threads(1)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if bars:
            hf_logging.enable_progress_bar()


def export_lesson(
    name_or_path: str | Path,
    path: str | Path,
    prompts: tuple[str, ...] = PROMPTS,
    generate_prompts: tuple[str, ...] = GENERATE_PROMPTS,
    max_new_tokens: int = GENERATE_TOKENS,
) -> Path:
    """Write the lesson on a model folder (or Hub id) to `path` as one self-contained HTML file (replaced
    atomically); returns the path."""
    from plotly.offline import get_plotlyjs

    with quiet_single_thread():
        data = lesson_data(name_or_path, prompts, generate_prompts, max_new_tokens)
    page = render_page(data, get_plotlyjs())
    path = Path(path)
    with atomic_file(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


__all__ = [
    "GENERATE_PROMPTS",
    "be_the_model",
    "export_lesson",
    "final_geometry",
    "learning_figures",
    "lesson_data",
    "model_folder",
    "model_views",
    "rounded",
    "through_the_layers",
    "timeline_geometry",
    "truth_beside",
    "word_by_word",
]
