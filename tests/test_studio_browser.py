"""The studio page in a real browser: Playwright drives Debian's `chromium` through `tinyllm studio MODEL` served
from the test process (tests/studio_server.py). It plays two rounds of "be the model", moves the temperature slider,
visits every tab and checks what each shows, fails on any error toast or script error, and saves one screenshot per
tab.

MODEL is the small trained TinyLLM of `trained_tiny_dir` (no training records: "How it learned" must say so), or
the folder named by TINYLLM_STUDIO_MODEL. TINYLLM_SCREENSHOTS=folder also writes the screenshots there as
`studio_<tab>.png`; the README's pictures come from

    TINYLLM_STUDIO_MODEL=outputs/demo/model TINYLLM_SCREENSHOTS=docs python -m pytest -q tests/test_studio_browser.py
"""

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from studio_server import studio

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'hf_tinyllm[studio]')")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH for Playwright to drive")
expect = sync_api.expect

WAIT_MS = 30_000  # the longest any one step (a model call, a plot) may take to show
VIEWPORT = {"width": 1280, "height": 900}
MAX_SHOT_HEIGHT = 1400  # a screenshot is the page from its top to the tab's key element, at most this tall
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ENTROPY = re.compile(r"entropy ([\d.]+) bits before sampling, ([\d.]+) after")
# Records every error toast (gradio's way of showing a failed event) and script error, even one that has faded.
WATCH_PROBLEMS = """
window.__studioProblems = [];
const note = (text) => { if (!window.__studioProblems.includes(text)) window.__studioProblems.push(text); };
window.addEventListener("error", (event) => note("script error: " + event.message));
window.addEventListener("unhandledrejection", (event) => note("unhandled rejection: " + event.reason));
new MutationObserver(() => {
  for (const toast of document.querySelectorAll('[data-testid="toast-body"].error')) note(toast.innerText);
}).observe(document, {childList: true, subtree: true});
"""


@pytest.fixture(scope="module")
def model_dir(request) -> Path:
    named = os.environ.get("TINYLLM_STUDIO_MODEL")
    return Path(named) if named else request.getfixturevalue("trained_tiny_dir")


@pytest.fixture(scope="module")
def studio_url(model_dir):
    """`tinyllm studio MODEL --port N`, stopped after the module."""
    with studio(model_dir) as url:
        yield url


@contextmanager
def chromium() -> Iterator:
    """Debian's chromium, driven by Playwright."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def open_studio(browser, url: str):
    """A new page on the studio at `url`, watched for errors (`WATCH_PROBLEMS`): it opens on the guided path; then
    on "Be the model", once its first round is drawn."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    page.add_init_script(WATCH_PROBLEMS)
    page.goto(url)
    expect(page.locator("#guide-intro")).to_be_visible()
    open_tab(page, "be")
    expect(page.locator("#be-candidates input[type=radio]").first).to_be_attached()
    return page


@pytest.fixture(scope="module")
def page(studio_url):
    """One browser page on the studio, shared by the tests below in file order (the score carries over)."""
    with chromium() as browser:
        yield open_studio(browser, studio_url)


@pytest.fixture(autouse=True)
def no_error_on_the_page(request):
    yield
    if "page" in request.fixturenames:
        assert request.getfixturevalue("page").evaluate("window.__studioProblems") == []


def open_tab(page, tab: str):
    """Click the tab whose `gr.Tab(id=...)` is `tab`; returns its (now visible) panel."""
    page.click(f"button[role=tab][data-tab-id={tab}]")
    expect(page.locator(f"button[role=tab][data-tab-id={tab}]")).to_have_attribute("aria-selected", "true")
    return page.locator("[role=tabpanel]:visible")


def wait_idle(page) -> None:
    """No event still running: every component's status tracker is hidden."""
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=status-tracker]')].every(t => t.classList.contains('hide'))"
    )


def markdown_text(markdown) -> str:
    """The text a `gr.Markdown` shows, without its status tracker beside it (whose timer, "processing | 0.1s",
    changes while an event such as a poll runs)."""
    return markdown.locator("[data-testid=markdown]").inner_text()


def screenshot(page, tmp_path: Path, tab: str, bottom, top=None) -> Path:
    """The page from its top (or from the top of the locator `top`) to the bottom of the locator `bottom`, at most
    MAX_SHOT_HEIGHT, as tmp_path/studio_<tab>.png (and in $TINYLLM_SCREENSHOTS when set)."""
    wait_idle(page)
    page.evaluate("window.scrollTo(0, 0)")
    box = bottom.bounding_box()
    start = max(top.bounding_box()["y"] - 8, 0) if top is not None else 0
    height = min(box["y"] + box["height"] + 16 - start, MAX_SHOT_HEIGHT)
    path = tmp_path / f"studio_{tab}.png"
    page.screenshot(path=path, full_page=True, clip={"x": 0, "y": start, "width": VIEWPORT["width"], "height": height})
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000
    if folder := os.environ.get("TINYLLM_SCREENSHOTS"):
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(folder) / path.name)
    return path


def entropies(page) -> tuple[float, float]:
    """(before, after) sampling, in bits, from the distribution's status line."""
    found = ENTROPY.search(page.inner_text("#be-distribution-status"))
    assert found, page.inner_text("#be-distribution-status")
    return float(found[1]), float(found[2])


def guess_first_candidate(page, prompt: str, rounds: int) -> None:
    """Click the first offered word; the verdict ranks it, the score counts `rounds`, the chart shows `prompt`."""
    word = page.locator("#be-candidates label").first
    expect(word).to_be_visible()
    text = word.inner_text().strip()
    word.click()
    verdict = page.locator("#be-verdict")
    expect(verdict).to_contain_text(f"of {rounds} rounds matched the model")
    assert re.match(rf"'{re.escape(text)}' ranks \d+ of \d+ with ", verdict.inner_text()), verdict.inner_text()
    expect(page.locator("#be-chart .gtitle")).to_contain_text(f"next token after '{prompt}'")
    expect(page.locator("#be-distribution-status")).to_contain_text("entropy")


def test_be_the_model_two_rounds_and_the_temperature_slider(page, tmp_path):
    prompt = page.locator("#be-prompt textarea")
    first = prompt.input_value()
    expect(page.locator("#be-status")).to_contain_text(f"What comes after {first}?")
    guess_first_candidate(page, first, rounds=1)
    screenshot(page, tmp_path, "be", page.locator("#be-chart"))
    before, after = entropies(page)
    assert before == after  # temperature 1, no top-k, no top-p: sampling changes nothing

    # Drag the temperature thumb from 1.0 towards the left end: on release the chart and status are redrawn.
    track = page.locator("#be-temperature input[type=range]").bounding_box()
    y = track["y"] + track["height"] / 2
    page.mouse.move(track["x"] + 0.47 * track["width"], y)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.2 * track["width"], y, steps=5)
    page.mouse.up()
    temperature = float(page.input_value("#be-temperature input[type=number]"))
    assert 0.1 <= temperature < 0.9
    # While the event runs the old line stays (with a timer beside it): wait for the new "after" entropy.
    expect(page.locator("#be-distribution-status")).not_to_contain_text(f", {after:.2f} after;")
    cooled_before, cooled_after = entropies(page)
    assert cooled_before == before and cooled_after < before  # a lower temperature sharpens the distribution

    page.click("#be-next")  # append the model's word and start the next round on the longer prompt
    expect(prompt).not_to_have_value(first)
    second = prompt.input_value()
    assert second.startswith(first) and len(second) > len(first)
    expect(page.locator("#be-status")).to_contain_text(f"What comes after {second}?")
    expect(page.locator("#be-verdict")).to_have_text("")
    guess_first_candidate(page, second, rounds=2)


def test_through_the_layers(page, tmp_path):
    open_tab(page, "layers")
    page.click("#layers-run")
    status = page.locator("#layers-status")
    expect(status).to_contain_text("position")
    expect(status).to_contain_text("the final answer")
    expect(page.locator("#layers-lens .gtitle")).to_contain_text("Logit lens")
    expect(page.locator("#layers-attention .gtitle")).to_contain_text("attention, layer 1 head 1")
    screenshot(page, tmp_path, "layers", page.locator("#layers-lens"))


def test_geometry_map_and_analogy(page, tmp_path):
    open_tab(page, "geometry")
    expect(page.locator("#geometry-map .gtitle")).to_contain_text("input embeddings, 2-D PCA")
    labels = page.locator("#geometry-map .textpoint")
    expect(labels.first).to_be_visible()
    assert {"king", "queen", "man", "woman"} <= {label.text_content() for label in labels.all()}
    page.click("#geometry-analogy")
    status = page.locator("#geometry-status")
    expect(status).to_contain_text("king - man + woman -> ")
    table = page.locator("#geometry-analogy-table")
    expect(table.locator("[role=grid]")).to_have_attribute("aria-rowcount", "6")  # the header and the top 5
    answer = status.inner_text().split("-> ")[1].strip()
    expect(table.locator("[data-testid=cell-0-1]")).to_have_text(answer)
    screenshot(page, tmp_path, "geometry", table)


def test_how_it_learned(page, model_dir, tmp_path):
    panel = open_tab(page, "learning")
    status = page.locator("#learning-status")
    if (model_dir / "training_log.jsonl").exists():
        expect(status).to_contain_text("logged rows")
        titles = panel.locator(".gtitle")
        expect(titles).to_have_count(4)
        assert {title.text_content() for title in titles.all()} == {
            "training loss and validation bits per byte",
            "arithmetic exact match (%): memorised vs generalised",
            "geometry: parallelism of gender offsets",
            "blame: share of the gradient norm² by stage",
        }
    else:
        expect(status).to_contain_text(
            f"{model_dir} has no training_log.jsonl or training_summary.json: train with scripts/train.py"
        )
        expect(panel.locator(".js-plotly-plot")).to_have_count(0)
    screenshot(page, tmp_path, "learning", panel)


def test_generate(page, tmp_path):
    open_tab(page, "generate")
    prompt = page.input_value("#generate-prompt textarea")
    page.click("#generate-run")
    page.wait_for_function(
        """(prompt) => {
            const text = document.querySelector('#generate-output textarea').value;
            const tracker = document.querySelector('#generate-output [data-testid=status-tracker]');
            return text.startsWith(prompt) && text.length > prompt.length && tracker.classList.contains('hide');
        }""",
        arg=prompt,
    )
    assert "Problem" not in page.input_value("#generate-output textarea")
    screenshot(page, tmp_path, "generate", page.locator("#generate-output"))


def test_the_truth_beside_the_model(page, model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_tinyllm.insight.truth import TinyWorldTruth, compare_next_word, world_of

    open_tab(page, "be")
    prompt = "the king fed his"
    page.fill("#be-prompt textarea", prompt)
    page.press("#be-prompt textarea", "Enter")
    expect(page.locator("#be-status")).to_contain_text(f"What comes after {prompt}?")
    page.locator("#be-candidates label").first.click()
    status = page.locator("#be-truth-status")
    expect(status).to_contain_text("bits from it (KL)")
    model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    beside = compare_next_word(model, tokenizer, prompt, TinyWorldTruth(world_of(model_dir)[0]))
    expect(status).to_contain_text(f"the model is {beside.gap_bits:.3f} bits from it")
    table = page.locator("#be-truth")
    expect(table.locator("[role=grid]")).to_have_attribute("aria-rowcount", "5")  # the header and 4 words
    expected = zip(beside.truth.words, beside.truth.probabilities, beside.model_probabilities, strict=True)
    for row, (word, p, q) in enumerate(expected):
        for column, text in enumerate((word, f"{100 * p:.1f}%", f"{100 * q:.1f}%")):
            expect(table.locator(f"[data-testid=cell-{row}-{column}]")).to_have_text(text)
    screenshot(page, tmp_path, "truth", page.locator("#be-truth-status"))
