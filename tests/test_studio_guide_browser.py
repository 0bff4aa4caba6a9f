"""The studio's guided path and the views it leads to, in a real browser (Playwright with Debian's `chromium`): the
page opens on the numbered steps of `studio/guide/en.yaml`; each step's button opens its view and, where the view
needs a click, runs it; what the views draw (read back from the page's plotly figures and tables) is what
`hf_tinyllm.insight` computes on the same model: the word-by-word truth strip, one AdamW step under the microscope,
steering by a direction.

MODEL is the small trained TinyLLM of `trained_tiny_dir`, or the folder named by TINYLLM_STUDIO_MODEL; the README's
pictures come from

    TINYLLM_STUDIO_MODEL=outputs/demo/model TINYLLM_SCREENSHOTS=docs \
        python -m pytest -q tests/test_studio_guide_browser.py
"""

import os
from pathlib import Path

import pytest
from studio_server import studio
from test_studio_browser import CHROMIUM, VIEWPORT, WAIT_MS, WATCH_PROBLEMS, chromium, expect, screenshot
from test_studio_timeline_browser import plotted
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_tinyllm.insight.context import STUDY_NAMES, context_separation, interpretation
from hf_tinyllm.insight.microscope import optimizer_step_microscope, step_settings
from hf_tinyllm.insight.steering import DIFFERENCE_OF_MEANS, steer_prompt, steering_report
from hf_tinyllm.insight.truth import TinyWorldTruth, compare_along, world_of

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH for Playwright to drive")


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    named = os.environ.get("TINYLLM_STUDIO_MODEL")
    return Path(named) if named else request.getfixturevalue("trained_tiny_dir")


@pytest.fixture(scope="module")
def model(model_dir):
    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def page(model_dir):
    """The studio as a learner first sees it: not yet on any tab but the guide."""
    with studio(model_dir) as url, chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(WAIT_MS)
        expect.set_options(timeout=WAIT_MS)
        page.add_init_script(WATCH_PROBLEMS)
        page.goto(url)
        yield page
        assert page.evaluate("window.__studioProblems") == []


def selected_tab(page) -> str:
    return page.locator("button[role=tab][aria-selected=true]").get_attribute("data-tab-id")


def follow(page, button: str, view: str) -> None:
    """Back to the guide, click one of its buttons, and land on `view`."""
    page.click("button[role=tab][data-tab-id=guide]")
    page.click(f"#{button}")
    expect(page.locator(f"button[role=tab][data-tab-id={view}]")).to_have_attribute("aria-selected", "true")


def test_the_studio_opens_on_the_guided_path(page, tmp_path):
    from hf_tinyllm.studio.guide import load_guide

    guide = load_guide()
    expect(page.locator("#guide-intro")).to_contain_text(guide.title)
    assert selected_tab(page) == "guide"
    for number, step in enumerate(guide.steps, start=1):
        expect(page.locator(f"#guide-step-{number}")).to_contain_text(f"{number}. {step.title}")
    assert len(guide.steps) == 8
    screenshot(page, tmp_path, "guide", page.locator(f"#guide-step-{len(guide.steps)}"))


def test_loss_as_surprise_word_by_word(page, model, model_dir, tmp_path):
    follow(page, "guide-2-0", "be")  # step 2 scores the text along the truth
    text = page.input_value("#be-along-text textarea")
    expect(page.locator("#be-along-status")).to_contain_text("the gap to the truth (KL, summed)")
    along = compare_along(*model, text, TinyWorldTruth(world_of(model_dir)[0]))
    bars = plotted(page, "be-along")
    assert bars[0]["y"] == pytest.approx([r.model_surprise_bits for r in along], rel=1e-6)
    assert bars[2]["y"] == pytest.approx([r.entropy_bits for r in along], abs=1e-9)
    expect(page.locator("#be-along-status")).to_contain_text(f"{sum(r.gap_bits for r in along):.3f} bits")
    screenshot(page, tmp_path, "along", page.locator("#be-along-status"), top=page.locator("#be-along-text"))


def test_one_step_under_the_microscope(page, model, model_dir, tmp_path):
    follow(page, "guide-4-0", "step")  # step 4 takes the step
    status = page.locator("#step-status")
    expect(status).to_contain_text("The model itself is unchanged")
    batch = [line for line in page.input_value("#step-batch textarea").splitlines() if line.strip()]
    heldout = page.input_value("#step-heldout textarea")
    step = optimizer_step_microscope(*model, batch, heldout, settings=step_settings(model_dir, "run"))
    expect(status).to_contain_text(f"{step.batch_loss_before:.3f} -> {step.batch_loss_after:.3f}")
    losses = plotted(page, "step-losses")
    assert losses[1]["x"] == pytest.approx([t.loss_after for t in [*step.batch, step.heldout]], rel=1e-5)
    arrows = page.evaluate("() => document.querySelector('#step-arrows .js-plotly-plot').layout.annotations.length")
    assert arrows == len(step.word_map.words)
    expect(page.locator("#step-rows [data-testid=cell-0-0]")).to_have_text(step.rows_moved[0][1])
    # Another batch: the page computes it anew.
    page.fill("#step-batch textarea", "the king fed his dog.")
    page.click("#step-run")
    single = optimizer_step_microscope(*model, ["the king fed his dog."], heldout, settings=step_settings(model_dir))
    expect(status).to_contain_text(f"on 1 text(s), {single.num_tokens} tokens")
    screenshot(page, tmp_path, "step", page.locator("#step-arrows"), top=page.locator("#step-status"))


def test_a_guide_button_without_an_action_only_opens_its_view(page):
    follow(page, "guide-7-0", "learning")
    follow(page, "guide-6-0", "layers")  # step 6 runs the logit lens
    expect(page.locator("#layers-status")).to_contain_text("the final answer")


def test_context_moves_the_vector(page, model, tmp_path):
    follow(page, "guide-6-1", "layers")  # step 6's second button compares the contexts of the default study
    result = context_separation(*model, STUDY_NAMES[0])
    status = page.locator("#context-status")
    expect(status).to_contain_text(interpretation(result))
    table = page.locator("#context-table")
    for row, (name, accuracy) in enumerate(zip(result.layer_names, result.accuracy, strict=True)):
        expect(table.locator(f"[data-testid=cell-{row}-0]")).to_have_text(name)
        expect(table.locator(f"[data-testid=cell-{row}-1]")).to_have_text(f"{100 * accuracy:.1f}%")
    panels = plotted(page, "context-plot")
    assert len(panels) == 2 * len(result.layer_names)  # two contexts per layer
    last = [xy[0] for xy, label in zip(result.points[-1], result.labels, strict=True) if label == 0]
    assert panels[-2]["x"] == pytest.approx(last, abs=1e-6)
    screenshot(page, tmp_path, "context", page.locator("#context-table"), top=page.locator("#context-study"))


def test_steer_with_a_direction_and_the_honest_measure(page, model, tmp_path):
    follow(page, "guide-5-1", "steer")  # step 5's second button steers the default prompt
    prompt = page.input_value("#steer-prompt textarea")
    layer = int(page.input_value("#steer-layer input[type=number]"))
    steered = steer_prompt(*model, prompt, DIFFERENCE_OF_MEANS, layer, 1.0, k=6)
    status = page.locator("#steer-status")
    expect(status).to_contain_text(f"p(he) {steered.words_before[0]:.3f} -> {steered.words_after[0]:.3f}")
    expect(status).to_contain_text(f"p(she) {steered.words_before[1]:.3f} -> {steered.words_after[1]:.3f}")
    bars = plotted(page, "steer-plot")
    tokens = list(dict.fromkeys([t for t, _ in steered.top_before + steered.top_after]))
    assert bars[1]["y"] == [repr(t) for t in tokens]
    assert bars[1]["x"] == pytest.approx([100 * dict(steered.top_after).get(t, 0.0) for t in tokens], abs=1e-4)
    page.click("#steer-flips-run")
    report = steering_report(*model, alphas=(1.0,), num_random=5)
    table = page.locator("#steer-flips-table")
    expect(table.locator("[role=grid]")).to_have_attribute("aria-rowcount", str(len(report.layers) + 1))
    for column, kind in enumerate(report.kinds, start=2):
        for row in range(len(report.layers)):
            rate = report.flip_rates[kind][0][row]
            text = "n/a" if rate != rate else f"{100 * rate:.0f}% ({report.flips[kind][0][row]}/{report.trials[kind]})"
            expect(table.locator(f"[data-testid=cell-{row}-{column}]")).to_have_text(text)
    expect(page.locator("#steer-flips-status")).to_contain_text("Embedding offset E(queen) - E(king): flips")
    screenshot(page, tmp_path, "steer", table, top=page.locator("#steer-status"))
