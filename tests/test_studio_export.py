"""`tinyllm studio MODEL --export lesson.html` (issue 24, item 4; hf_tinyllm.studio.export): the studio's lesson on
one model as one self-contained HTML file. The numbers in the file at each timeline step are what `insight` computes
on the snapshot of that step; nothing in the file points outside it; and in Debian's chromium, driven by Playwright
with every request but the file's own aborted, the page makes no request, shows no error, renders every section, and
its slider moves every figure to the step's numbers.

MODEL is the loop run of `timeline_run_dir` (snapshots at steps 0, 2, 4, 6), or the folder named by
TINYLLM_STUDIO_MODEL. TINYLLM_SCREENSHOTS=folder also writes the page as `lesson_export.png` there; the README's
picture comes from

    TINYLLM_STUDIO_MODEL=outputs/demo/model TINYLLM_SCREENSHOTS=docs python -m pytest -q tests/test_studio_export.py
"""

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("plotly", reason="plotly is not installed (pip install 'hf_tinyllm[studio]')")

from hf_tinyllm.cli import main
from hf_tinyllm.explain import load_model_and_tokenizer
from hf_tinyllm.insight.geometry import analogy, word_map
from hf_tinyllm.insight.layers import attention_maps, logit_lens
from hf_tinyllm.insight.next_token import greedy_continuation, next_token_distribution
from hf_tinyllm.insight.timeline import TimelineRecorder, load_timeline, word_map_timeline
from hf_tinyllm.insight.truth import TinyWorldTruth, compare_along, compare_next_word, world_of
from hf_tinyllm.studio.export import (
    ANALOGY,
    GENERATE_TOKENS,
    LENS_TOP_K,
    export_lesson,
    lesson_data,
    quiet_single_thread,
    truth_beside,
    word_by_word,
)
from hf_tinyllm.studio.handlers import ALONG_TEXT, TOP_K_SHOWN
from hf_tinyllm.tokenization import load_tokenizer

CLOSE = 1e-5  # the page's numbers are rounded to 6 decimals
DATA_BLOCK = re.compile(r'<script type="application/json" id="lesson-data">(.*?)</script>', re.S)
PLOTS = ("be-chart", "be-along", "layers-lens", "layers-attention", "geometry-map")
WAIT_MS = 30_000
VIEWPORT = {"width": 1280, "height": 900}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def approx(value):
    return pytest.approx(value, abs=CLOSE)


def assert_close(actual, expected) -> None:
    """Nested lists of numbers equal to the page's rounding (pytest.approx takes flat ones only)."""
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=0, atol=CLOSE)


def page_data(html: str) -> dict:
    found = DATA_BLOCK.search(html)
    assert found, "no lesson-data block"
    return json.loads(found[1])


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    named = os.environ.get("TINYLLM_STUDIO_MODEL")
    return Path(named) if named else request.getfixturevalue("timeline_run_dir") / "model"


@pytest.fixture(scope="module")
def lesson(model_dir, tmp_path_factory) -> Path:
    """`tinyllm studio MODEL --export lesson.html`, through the command line."""
    path = tmp_path_factory.mktemp("lesson") / "lesson.html"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(["studio", str(model_dir), "--export", str(path)])
    assert printed.getvalue().startswith(f"Wrote {path} (") and "MiB" in printed.getvalue()
    return path


@pytest.fixture(scope="module")
def data(lesson) -> dict:
    return page_data(lesson.read_text(encoding="utf-8"))


# -- the numbers ------------------------------------------------------------------------------------------------


def check_truth(view: dict, model, tokenizer, prompts, truth: TinyWorldTruth) -> None:
    """The page's truth beside the model (each prompt) and word by word (`ALONG_TEXT`) against `insight.truth`."""
    for prompt in prompts:
        expected, beside = compare_next_word(model, tokenizer, prompt, truth), view["truth"][prompt]
        assert beside["words"] == expected.truth.words[:TOP_K_SHOWN]
        assert beside["true_words"] == len(expected.truth.words)
        assert beside["truth"] == approx(expected.truth.probabilities[:TOP_K_SHOWN])
        assert beside["model"] == approx(expected.model_probabilities[:TOP_K_SHOWN])
        assert beside["entropy_bits"] == approx(expected.truth.entropy_bits)
        assert beside["gap_bits"] == approx(expected.gap_bits)
    along = compare_along(model, tokenizer, ALONG_TEXT, truth)
    assert view["along"]["word"] == [position.word for position in along]
    for field in ("entropy_bits", "true_surprise_bits", "model_surprise_bits", "gap_bits"):
        assert view["along"][field] == approx([getattr(position, field) for position in along]), field


def check_model_views(view: dict, model, tokenizer, prompts, generate_prompts, truth: TinyWorldTruth) -> None:
    """The page's be-the-model, truth, layers and generate numbers of one step against `insight` on `model`."""
    check_truth(view, model, tokenizer, prompts, truth)
    for prompt in prompts:
        expected = next_token_distribution(model, tokenizer, prompt, k=TOP_K_SHOWN).model
        be = view["be"][prompt]
        assert be["tokens"] == expected.tokens and be["token_ids"] == expected.token_ids
        assert be["probabilities"] == approx(expected.probabilities)
        assert be["entropy_bits"] == approx(expected.entropy_bits)
        lens, attention = logit_lens(model, tokenizer, prompt, k=LENS_TOP_K), attention_maps(model, tokenizer, prompt)
        layers = view["layers"][prompt]
        assert layers["tokens"] == lens.tokens and layers["layer_names"] == lens.layer_names
        assert layers["top_tokens"] == lens.top_tokens
        assert_close(layers["top_probabilities"], lens.top_probabilities)
        assert_close(layers["attention"], attention.weights)
    for prompt in generate_prompts:
        assert view["generate"][prompt] == greedy_continuation(model, tokenizer, prompt, GENERATE_TOKENS)


def test_the_numbers_at_each_step_are_what_insight_computes_on_its_snapshot(model_dir, data):
    timeline, tokenizer = load_timeline(model_dir), load_tokenizer(model_dir)
    assert data["steps"] == timeline.steps and data["timeline"]["kind"] == "weights"
    assert len(data["model_views"]) == len(timeline.steps)
    world, source = world_of(model_dir)
    assert data["truth_source"] == source and data["along_text"] == ALONG_TEXT
    truth = TinyWorldTruth(world)
    with quiet_single_thread():  # as the export ran: the same sums in the same order
        aligned = word_map_timeline(timeline, tokenizer)
        for step, view, geometry, moved, score in zip(timeline.steps, data["model_views"], data["geometry"]["steps"],
                                                      aligned.maps, aligned.parallelism, strict=True):  # fmt: skip
            model = timeline.model_at(step)
            check_model_views(view, model, tokenizer, data["prompts"], data["generate_prompts"], truth)
            own = word_map(model, tokenizer)
            assert data["geometry"]["words"] == own.words
            assert_close(geometry["pca_coords"], own.coords)
            assert_close(geometry["coords"], moved.coords)
            assert geometry["parallelism"] == approx(score)
            top = analogy(model, tokenizer, *ANALOGY, k=5).top
            assert [w for w, _ in geometry["analogy"]] == [w for w, _ in top]
            assert [c for _, c in geometry["analogy"]] == approx([c for _, c in top])
    # The word map's axes hold every step's points.
    (x_low, x_high), (y_low, y_high) = data["geometry"]["x_range"], data["geometry"]["y_range"]
    points = [xy for step in data["geometry"]["steps"] for xy in step["coords"]]
    assert all(x_low < x < x_high and y_low < y < y_high for x, y in points)


def test_nothing_in_the_file_points_outside_it(lesson):
    from plotly.offline import get_plotlyjs

    html = lesson.read_text(encoding="utf-8")
    plotly_js = get_plotlyjs()
    assert plotly_js in html  # inlined, not fetched from a CDN
    ours = html.replace(plotly_js, "")
    assert re.findall(r"https?://", ours) == []
    assert re.findall(r"\bsrc\s*=", ours) == []
    assert re.findall(r"url\(|@import", ours) == []
    assert {href for href in re.findall(r'href="([^"]*)"', ours)} <= {"#be", "#layers", "#geometry", "#learning",
                                                                       "#generate"}  # fmt: skip
    assert len(re.findall(r'<script type="application/json" id="lesson-data">', html)) == 1


def test_a_timeline_of_embeddings_moves_the_map_and_no_timeline_shows_the_final_model(timeline_run_dir, tmp_path):
    source = timeline_run_dir / "model"
    timeline, tokenizer = load_timeline(source), load_tokenizer(source)
    embeddings = tmp_path / "embeddings"
    shutil.copytree(source, embeddings, ignore=shutil.ignore_patterns("timeline"))
    for step in timeline.steps:
        TimelineRecorder(embeddings / "timeline", kind="embeddings").record(timeline.model_at(step), step)
    prompts, generate_prompts = ("two plus three equals",), ("the queen",)
    options = dict(prompts=prompts, generate_prompts=generate_prompts)
    page = export_lesson(embeddings, tmp_path / "embeddings.html", **options).read_text(encoding="utf-8")
    data = page_data(page)
    assert data["steps"] == timeline.steps and data["timeline"]["kind"] == "embeddings"
    assert "the word map and the analogy move with the slider; the other views show the final model" in page
    final, _ = load_model_and_tokenizer(str(embeddings))
    with quiet_single_thread():
        truth = TinyWorldTruth(world_of(embeddings)[0])
        check_model_views(data["model_views"][0], final, tokenizer, prompts, generate_prompts, truth)
        assert len(data["model_views"]) == 1
        for step, geometry in zip(timeline.steps, data["geometry"]["steps"], strict=True):
            own = word_map(timeline.model_at(step), tokenizer)
            assert_close(geometry["pca_coords"], own.coords)

    bare = tmp_path / "bare"
    shutil.copytree(source, bare, ignore=shutil.ignore_patterns("timeline"))
    data = lesson_data(bare, **options)
    summary = json.loads((bare / "training_summary.json").read_text())
    assert data["steps"] == [summary["steps"]] and data["timeline"]["kind"] is None
    assert "no training timeline" in data["timeline"]["note"]
    assert len(data["model_views"]) == len(data["geometry"]["steps"]) == 1


def test_a_text_the_truth_cannot_write_is_a_problem_line_not_a_failed_export(timeline_run_dir):
    model, tokenizer = load_model_and_tokenizer(str(timeline_run_dir / "model"))
    truth = TinyWorldTruth()
    beside = truth_beside(model, tokenizer, "zebra quantum", truth)
    assert beside.keys() == {"problem"} and "cannot begin a TinyWorld document" in beside["problem"]
    along = word_by_word(model, tokenizer, "the king fed his zebra.", truth)
    assert along.keys() == {"problem"} and "'zebra.' cannot follow 'the king fed his'" in along["problem"]


def test_a_bad_model_path_is_one_error_line(tmp_path, capsys):
    output = tmp_path / "lesson.html"
    with pytest.raises(SystemExit) as stopped:
        main(["studio", str(tmp_path / "no-such-model"), "--export", str(output)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a model folder" in err and err.count("\n") == 1
    assert not output.exists()


def test_the_export_needs_no_gradio():
    code = "import sys, hf_tinyllm.studio.export; sys.exit(int('gradio' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- the page in a real browser ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser_page(lesson):
    """The lesson opened from its file:// URL in chromium, every other request aborted and counted; yields the page,
    the requests made besides the document, and the errors seen."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("no `chromium` on PATH for Playwright to drive")
    url = lesson.resolve().as_uri()
    requests, errors = [], []

    def only_the_file(route):
        if route.request.url == url:
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(WAIT_MS)
            page.on("pageerror", lambda err: errors.append(f"page error: {err}"))
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.route("**/*", only_the_file)
            page.goto(url)
            yield page, requests, errors
        finally:
            browser.close()


def wait_for_step(page, index: int) -> None:
    page.wait_for_function("(i) => document.body.dataset.step === String(i)", arg=index)


def plotted(page, plot_id: str) -> dict:
    return page.evaluate("(id) => { const g = document.getElementById(id); return {data: g.data, layout: g.layout}; }",
                         plot_id)  # fmt: skip


def check_plots_show_step(page, data: dict, index: int) -> None:
    """Every figure of the page holds the embedded numbers of step `index`."""
    view = data["model_views"][index if len(data["model_views"]) > 1 else 0]
    prompt = page.input_value("#be-prompt")
    be = view["be"][prompt]
    chart = plotted(page, "be-chart")
    assert chart["data"][0]["x"] == approx([100 * p for p in reversed(be["probabilities"])])
    assert chart["layout"]["yaxis"]["ticktext"] == ["'" + t.replace("\n", "\\n") + "'" for t in reversed(be["tokens"])]
    beside = view["truth"][prompt]
    rows = [row.locator("td").all_inner_texts() for row in page.locator("#be-truth tr").all()[1:]]
    assert rows == [[word, f"{100 * p:.1f}%", f"{100 * q:.1f}%"]
                    for word, p, q in zip(beside["words"], beside["truth"], beside["model"], strict=True)]  # fmt: skip
    assert f"the model is {beside['gap_bits']:.3f} bits from it" in page.inner_text("#be-truth-status")
    along = plotted(page, "be-along")["data"]
    fields = ("model_surprise_bits", "true_surprise_bits", "entropy_bits")  # bars, bars, the floor's marks
    assert [trace["y"] for trace in along] == [approx(view["along"][field]) for field in fields]
    assert along[0]["x"] == [f"{i}:{word}" for i, word in enumerate(view["along"]["word"])]
    layers = view["layers"][page.input_value("#layers-prompt")]
    lens = plotted(page, "layers-lens")["data"][0]
    assert_close(lens["z"], [[cell[0] for cell in layer] for layer in layers["top_probabilities"]])
    assert lens["y"] == layers["layer_names"]
    layer, head = int(page.input_value("#layers-layer")), int(page.input_value("#layers-head"))
    assert_close(plotted(page, "layers-attention")["data"][0]["z"], layers["attention"][layer][head])
    geometry = data["geometry"]
    where = dict(zip(geometry["words"], geometry["steps"][index]["coords"], strict=True))
    for trace in plotted(page, "geometry-map")["data"]:
        assert trace["x"] == approx([where[w][0] for w in trace["text"]])
        assert trace["y"] == approx([where[w][1] for w in trace["text"]])
    for name, figure in data["learning"]["figures"].items():
        if figure is not None:
            shapes = plotted(page, f"learning-{name}")["layout"]["shapes"]
            assert shapes[-1]["x0"] == data["steps"][index]  # the cursor
    texts = page.locator("#generate-output p").all_inner_texts()
    assert texts == [view["generate"][p] for p in data["generate_prompts"]]


def test_the_page_works_offline_and_the_slider_moves_every_figure(browser_page, data, tmp_path):
    page, requests, errors = browser_page
    last = len(data["steps"]) - 1
    wait_for_step(page, last)
    for plot_id in PLOTS + tuple(f"learning-{n}" for n, f in data["learning"]["figures"].items() if f is not None):
        assert page.locator(f"#{plot_id} .js-plotly-plot, #{plot_id}.js-plotly-plot").count() == 1, plot_id
        assert page.evaluate("(id) => document.getElementById(id).data.length", plot_id) > 0, plot_id
    assert page.locator("#analogy-table tr").count() in (0, 6)  # a header and the top 5 (none: the words are missing)
    check_plots_show_step(page, data, last)
    before = plotted(page, "geometry-map")["data"][0]["x"], plotted(page, "be-chart")["data"][0]["x"]

    page.focus("#step-slider")
    page.keyboard.press("Home")  # the slider to the first step, as a user would
    wait_for_step(page, 0)
    assert page.inner_text("#step-label").startswith(f"step {data['steps'][0]}")
    after = plotted(page, "geometry-map")["data"][0]["x"], plotted(page, "be-chart")["data"][0]["x"]
    assert after[0] != approx(before[0]) and after[1] != approx(before[1])
    check_plots_show_step(page, data, 0)

    # The choosers: another prompt, another attention head; the play button moves on by itself.
    page.select_option("#be-prompt", data["prompts"][-1])
    page.select_option("#layers-prompt", data["prompts"][-1])
    heads = len(data["model_views"][0]["layers"][data["prompts"][-1]]["attention"][0])
    page.select_option("#layers-head", str(heads - 1))
    page.wait_for_timeout(200)
    check_plots_show_step(page, data, 0)
    page.click("#play")
    wait_for_step(page, 1)
    page.click("#play")  # pause
    page.wait_for_function("() => document.body.dataset.step === document.getElementById('step-slider').value")
    check_plots_show_step(page, data, int(page.evaluate("document.body.dataset.step")))

    for chooser, value in (("#be-prompt", data["prompts"][0]), ("#layers-prompt", data["prompts"][0]),
                           ("#layers-head", "0")):  # fmt: skip
        page.select_option(chooser, value)
    page.focus("#step-slider")
    page.keyboard.press("End")
    wait_for_step(page, last)
    check_plots_show_step(page, data, last)
    page.evaluate("document.activeElement.blur(); window.scrollTo(0, 0)")
    shot = tmp_path / "lesson_export.png"
    page.screenshot(path=shot, full_page=True)
    assert shot.read_bytes().startswith(PNG_SIGNATURE)
    if folder := os.environ.get("TINYLLM_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(folder) / shot.name)
    assert requests == [] and errors == []
