"""The studio's training timeline in a real browser (Playwright with Debian's `chromium`): dragging the slider to a
recorded step redraws every view, and what each view draws is what `hf_tinyllm.insight` computes on that step's
snapshot (read back from the plotly figures in the page); Play walks the steps to the end, Pause stops it.

MODEL is the loop run of `timeline_run_dir` (steps 0, 2, 4, 6), or the folder named by TINYLLM_STUDIO_MODEL; the
README's picture comes from

    TINYLLM_STUDIO_MODEL=outputs/demo/model TINYLLM_SCREENSHOTS=docs \
        python -m pytest -q tests/test_studio_timeline_browser.py
"""

import os
from pathlib import Path

import pytest
import torch
from studio_server import studio
from test_studio_browser import CHROMIUM, chromium, expect, markdown_text, open_studio, open_tab, screenshot
from transformers import AutoTokenizer

from hf_tinyllm.insight.layers import attention_maps
from hf_tinyllm.insight.next_token import next_token_distribution
from hf_tinyllm.insight.timeline import load_timeline, word_map_timeline

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH for Playwright to drive")

PLOT_DATA = "(id) => { const plot = document.querySelector(`#${id} .js-plotly-plot`); return plot && plot.data; }"
CURSORS = """() => [...document.querySelectorAll('[role=tabpanel] .js-plotly-plot')]
    .filter(plot => plot.offsetParent !== null)
    .map(plot => (plot.layout.shapes || []).filter(s => s.yref === 'y domain').map(s => s.x0))"""


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    named = os.environ.get("TINYLLM_STUDIO_MODEL")
    return Path(named) if named else request.getfixturevalue("timeline_run_dir") / "model"


@pytest.fixture(scope="module")
def page(model_dir):
    with studio(model_dir) as url, chromium() as browser:
        page = open_studio(browser, url)
        yield page
        assert page.evaluate("window.__studioProblems") == []


def drag_slider_to(page, fraction: float) -> None:
    """Drag the timeline slider's thumb from its end to `fraction` of the track and release it there."""
    track = page.locator("#timeline-step input[type=range]").bounding_box()
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + track["width"] - 2, y)
    page.mouse.down()
    page.mouse.move(track["x"] + fraction * track["width"], y, steps=6)
    page.mouse.up()


def plotted(page, element: str) -> list[dict]:
    page.wait_for_function(f"() => ({PLOT_DATA})('{element}') !== null")
    return page.evaluate(PLOT_DATA, element)


def test_the_slider_moves_every_view_to_the_snapshot(page, model_dir, tmp_path):
    timeline, tokenizer = load_timeline(model_dir), AutoTokenizer.from_pretrained(model_dir)
    first, last = timeline.steps[0], timeline.steps[-1]
    status = page.locator("#timeline-status")
    expect(status).to_contain_text(f"step {last} of {last}")
    prompt = page.input_value("#be-prompt textarea")
    page.click("#be-candidates label >> nth=0")  # a guess draws the distribution of the prompt
    expect(page.locator("#be-chart .gtitle")).to_contain_text(f"next token after '{prompt}'")
    open_tab(page, "layers")
    page.click("#layers-run")
    expect(page.locator("#layers-attention .gtitle")).to_contain_text("layer 1 head 1")
    lens_prompt = page.input_value("#layers-prompt textarea")
    open_tab(page, "geometry")
    final_map = plotted(page, "geometry-map")

    drag_slider_to(page, 0.0)
    expect(status).to_contain_text(f"step {first} of {last}")
    model = timeline.model_at(first)
    # Be the model: the bars are the snapshot's top probabilities, in percent, smallest first.
    open_tab(page, "be")
    expect(page.locator("#be-chart .gtitle")).to_contain_text(f"next token after '{prompt}'")
    bars = plotted(page, "be-chart")[0]
    expected = next_token_distribution(model, tokenizer, prompt, k=10).model
    assert torch.allclose(torch.tensor(bars["x"][::-1]), 100 * torch.tensor(expected.probabilities), atol=1e-4)
    # Through the layers: the attention map is the snapshot's (layer 1, head 1).
    open_tab(page, "layers")
    heads = attention_maps(model, tokenizer, lens_prompt).weights[0][0]
    assert torch.allclose(torch.tensor(plotted(page, "layers-attention")[0]["z"]), torch.tensor(heads), atol=1e-5)
    assert plotted(page, "layers-lens")[0]["z"]
    # Geometry: the words sit where the aligned map of the first step puts them, and they moved.
    open_tab(page, "geometry")
    maps = word_map_timeline(timeline, tokenizer)
    where = dict(zip(maps.maps[0].words, maps.maps[0].coords, strict=True))
    traces = plotted(page, "geometry-map")
    drawn = {word: (x, y) for trace in traces for word, x, y in zip(trace["text"], trace["x"], trace["y"], strict=True)}
    assert drawn.keys() == where.keys()
    assert torch.allclose(torch.tensor([drawn[w] for w in where]), torch.tensor(list(where.values())), atol=1e-5)
    assert [trace["x"] for trace in traces] != [trace["x"] for trace in final_map]
    expect(page.locator("#geometry-status")).to_contain_text(f"step {first}: parallelism")
    screenshot(page, tmp_path, "timeline", page.locator("#geometry-map"))
    # How it learned: a cursor at the step on every curve.
    open_tab(page, "learning")
    page.wait_for_function(f"() => ({CURSORS})().length === 4 && ({CURSORS})().every(c => c[0] === {first})")


def test_play_walks_to_the_end_and_pause_stops_it(page, model_dir):
    steps = load_timeline(model_dir).steps
    status = page.locator("#timeline-status")
    expect(status).to_contain_text(f"step {steps[0]} of")
    page.click("#timeline-play")
    expect(status).to_contain_text(f"step {steps[1]} of")
    page.click("#timeline-pause")
    page.wait_for_timeout(800)  # a frame already on its way may still land
    paused_at = markdown_text(status)
    page.wait_for_timeout(1500)  # more than two frames' time: a paused timeline stays where it is
    assert markdown_text(status) == paused_at and f"step {steps[-1]} of" not in paused_at
    page.click("#timeline-play")
    expect(status).to_contain_text(f"step {steps[-1]} of {steps[-1]}")
    value = float(page.input_value("#timeline-step input[type=number]"))
    assert value == steps[-1]
