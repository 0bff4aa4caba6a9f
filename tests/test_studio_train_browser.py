"""The studio's Train tab in a real browser (Playwright with Debian's `chromium`): a bad setting is a line in the
page and the server goes on; Start runs the real Accelerate loop in a background process and its probe points
arrive in the page; Pause stops them; Resume goes on to the end; the finished model then opens in every tab, its
timeline included. The README's picture (the nano size, 400 steps):

    TINYLLM_TRAIN="nano 400" TINYLLM_SCREENSHOTS=docs python -m pytest -q tests/test_studio_train_browser.py
"""

import os
import time
from pathlib import Path

import pytest
from studio_server import studio
from test_studio_browser import CHROMIUM, chromium, expect, markdown_text, open_studio, open_tab, screenshot

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no `chromium` on PATH for Playwright to drive")

SIZE, STEPS = os.environ.get("TINYLLM_TRAIN", "debug 40").split()  # the size and steps the page trains
STEPS = int(STEPS)
PROBES = STEPS // (STEPS // 8) + 1  # the page's runs probe (and snapshot) 8 times after step 0
RUN_MS = 240_000  # preparing the corpus and tokenizer, then training, on 2 busy cores
POINTS = """() => { const plot = document.querySelector('#train-arithmetic .js-plotly-plot');
    return plot ? plot.data[0].x.length : 0; }"""  # the probe points drawn so far


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("studio_runs")


@pytest.fixture(scope="module")
def browser(timeline_run_dir, runs):
    """A browser and the studio's address (its Train tab writing under `runs`)."""
    with studio(timeline_run_dir / "model", "--train_dir", str(runs)) as url, chromium() as browser:
        yield browser, url


@pytest.fixture
def page(browser):
    page = open_studio(*browser)
    yield page
    assert page.evaluate("window.__studioProblems") == []
    page.close()


def training_processes(runs: Path) -> list[int]:
    """The pids of `tinyllm train` processes writing under `runs`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(runs) in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:  # the process ended while we looked
            continue
    return found


def set_steps(page, steps: int) -> None:
    field = page.locator("#train-steps input")
    field.fill(str(steps))
    field.press("Tab")


def test_train_live_pause_and_explore_the_new_model(page, tmp_path):
    open_tab(page, "train")
    status = page.locator("#train-status")
    page.locator("#train-size label", has_text=SIZE).click()
    set_steps(page, 3)
    page.click("#train-start")
    expect(status).to_contain_text("Problem: steps=3 is out of range")  # and nothing started

    set_steps(page, STEPS)
    page.click("#train-start")
    expect(status).to_contain_text(f"of {STEPS}")
    page.wait_for_function(f"() => ({POINTS})() >= 2", timeout=RUN_MS)  # the first two probes arrived

    page.click("#train-pause")
    expect(status).to_contain_text("Paused")
    page.wait_for_timeout(1500)  # a poll already on its way may still land
    paused = (page.evaluate(POINTS), markdown_text(status))
    page.wait_for_timeout(3000)  # three polls: nothing moves while paused
    assert (page.evaluate(POINTS), markdown_text(status)) == paused and paused[0] < PROBES
    assert paused[1].startswith("Paused: step"), paused[1]  # the words only, no progress timer

    page.click("#train-resume")
    expect(status).to_contain_text(f"Finished: step {STEPS} of {STEPS}", timeout=RUN_MS)
    assert page.evaluate(POINTS) == PROBES
    expect(page.locator("#train-map .gtitle")).to_contain_text(f"the word map at step {STEPS}")
    screenshot(page, tmp_path, "train", page.locator("#train-map"))

    # The other tabs now show the new model: its timeline on the slider, its records in "How it learned".
    expect(page.locator("#timeline-status")).to_contain_text(f"step {STEPS} of {STEPS} ({PROBES} snapshots)")
    assert float(page.locator("#timeline-step input[type=range]").get_attribute("max")) == STEPS
    open_tab(page, "geometry")
    expect(page.locator("#geometry-status")).to_contain_text(f"step {STEPS}: parallelism")
    open_tab(page, "learning")
    expect(page.locator("#learning-status")).to_contain_text(f"{PROBES} probe records")


def test_the_run_ends_when_its_page_goes_away(browser, runs):
    page = open_studio(*browser)
    open_tab(page, "train")
    page.locator("#train-size label", has_text="debug").click()
    set_steps(page, 5000)
    page.click("#train-start")
    expect(page.locator("#train-status")).to_contain_text("of 5000")
    assert training_processes(runs)
    page.close()  # the tab is closed: gradio's unload ends the run this page started
    deadline = time.monotonic() + 60
    while training_processes(runs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert training_processes(runs) == []
    other = open_studio(*browser)  # the server goes on, and the slot is free again: a new run starts, then stops
    open_tab(other, "train")
    other.locator("#train-size label", has_text="debug").click()
    set_steps(other, 5000)
    other.click("#train-start")
    status = other.locator("#train-status")
    expect(status).to_contain_text("Training: step 0 of 5000")
    other.click("#train-stop")
    expect(status).to_contain_text("Stop")  # stopping (finishing its step, writing a checkpoint), then stopped
    deadline = time.monotonic() + 60
    while training_processes(runs) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert training_processes(runs) == []
    other.close()
