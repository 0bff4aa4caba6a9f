"""The studio's "Train" tab backend (issue 24, item 3): real `tinyllm train` runs of the debug size in a background
process, started, paused, resumed, stopped and closed; what they stream (rows, probes, snapshots, the word map); one
run at a time; and the run dies with the server."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForCausalLM

from hf_tinyllm.data.tinyworld import TinyWorld, TinyWorldConfig
from hf_tinyllm.insight.geometry import word_map
from hf_tinyllm.insight.timeline import Timeline
from hf_tinyllm.studio.live_training import (
    LiveProgress,
    LiveSettings,
    LiveTraining,
    LiveTrainingError,
    MetricsReader,
    recipe_mix,
)
from hf_tinyllm.tokenization import load_tokenizer

DEBUG = dict(size="debug", steps=40)  # probes every 5 steps; about 3 s of training on 2 cores


def wait_until(live: LiveTraining, condition: Callable[[LiveProgress], bool], timeout: float = 180.0) -> LiveProgress:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = live.poll()
        if condition(progress) or progress.state == "failed":
            assert progress.state != "failed", progress.log_tail
            return progress
        time.sleep(0.1)
    raise AssertionError(f"timed out; last progress: {progress.state}, step {progress.step}: {progress.message}")


def process_state(pid: int) -> str | None:
    """The kernel's state letter of `pid` (R, S, T stopped, Z zombie), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def reaches(pid: int, states: tuple, timeout: float = 15.0) -> bool:
    """Whether `pid` gets to one of `states` within `timeout` (a signal is delivered when the process next runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_state(pid) in states:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(size="small"), r"size 'small' is not offered here; choose 'debug' .* or 'nano'"),
        (dict(steps=5), r"steps=5 is out of range; choose a whole number from 10 to 5000"),
        (dict(steps=100_000), r"steps=100000 is out of range"),
        (dict(steps=12.5), r"steps=12.5 is out of range"),
        (dict(mix={"royalty": 1, "poems": 2}), r"unknown families \['poems'\]; use royalty, arithmetic, facts"),
        (dict(mix={"royalty": -1, "arithmetic": 1}), r"the weight of royalty is -1; give each family a number >= 0"),
        (dict(mix={"facts": "lots"}), r"the weight of facts is 'lots'"),
        (dict(mix={"royalty": 0, "facts": 0}), r"every family of the TinyWorld mix has weight 0; give at least one"),
        (dict(mix={}), r"every family of the TinyWorld mix has weight 0"),
    ],
)
def test_a_bad_setting_is_one_clear_message_and_starts_nothing(tmp_path, settings, message):
    live = LiveTraining(tmp_path)
    with pytest.raises(LiveTrainingError, match=message) as caught:
        live.start(LiveSettings(**settings))
    assert "\n" not in str(caught.value)
    assert live.poll().state == "idle" and not list(tmp_path.iterdir())
    for action in (live.pause, live.resume, live.stop):
        with pytest.raises(LiveTrainingError, match=r"nothing to \w+: no run is training"):
            action()


def test_settings_become_the_demo_recipe_with_overrides(tmp_path):
    settings = LiveSettings(mix={"arithmetic": 1}, size="debug", steps=400.0)  # a page's number box gives floats
    argv = settings.train_arguments(tmp_path)
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    assert options["--config"].endswith("demo.yaml") and options["--preset"] == "debug"
    assert (options["--max_steps"], options["--probe_steps"], options["--logging_steps"]) == ("400", "50", "4")
    assert json.loads(options["--tinyworld_weights"]) == {"arithmetic": 1.0}
    assert LiveSettings().mix == recipe_mix() == {"royalty": 0.25, "arithmetic": 0.5, "facts": 0.15, "sayings": 0.1}


def test_metrics_are_read_incrementally_and_a_partial_line_waits(tmp_path):
    path = tmp_path / "metrics.jsonl"
    reader = MetricsReader(path)
    assert reader.read() == []
    path.write_text('{"step": 1, "loss": 3.0}\n{"step": 2, "lo')
    assert reader.read() == [{"step": 1, "loss": 3.0}]
    with path.open("a") as f:
        f.write('ss": 2.5}\n')
    assert reader.read() == [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5}]


def test_start_stream_pause_resume_and_finish(tmp_path):
    with LiveTraining(tmp_path) as live:
        started = live.start(LiveSettings(**DEBUG))
        assert started.state == "running" and started.max_steps == 40
        # The floor is known before the run's first step: TinyWorld's exact one for the mix.
        world = TinyWorld(TinyWorldConfig(family_weights=LiveSettings().mix))
        assert started.floor_bits_per_byte == pytest.approx(world.floor_bits_per_byte())
        with pytest.raises(LiveTrainingError, match=r"^busy: a training run is running"):
            live.start(LiveSettings(**DEBUG))

        progress = wait_until(live, lambda p: len(p.probe_rows) >= 2 and (p.snapshot_step or 0) > 0)
        assert {"probe/trained_exact_match", "probe/heldout_exact_match"} <= set(progress.probe_rows[-1])
        assert progress.loss_rows and "tokens_per_s" in progress.loss_rows[-1]

        live.pause()
        assert reaches(progress.pid, ("T",))
        paused = live.poll()
        assert paused.state == "paused"
        live_map = live.word_map()  # read off the newest snapshot while the run waits
        assert live_map.step == paused.snapshot_step >= 5 and len(live_map.word_map.words) >= 3
        time.sleep(1.5)
        assert live.poll().step == paused.step < 40
        with pytest.raises(LiveTrainingError, match="busy: a training run is paused"):
            live.start(LiveSettings(**DEBUG))
        assert live.resume().state == "running"
        wait_until(live, lambda p: p.step > paused.step)

        done = wait_until(live, lambda p: not p.active)
        assert done.state == "finished" and done.message.startswith("Finished 40 steps")
        model = AutoModelForCausalLM.from_pretrained(done.model_dir)
        timeline = Timeline(done.model_dir)
        assert timeline.steps[0] == 0 and timeline.steps[-1] == 40 == done.snapshot_step
        eval_rows = [row for row in done.rows if "eval/floor_bits_per_byte" in row]
        assert eval_rows[-1]["eval/floor_bits_per_byte"] == pytest.approx(done.floor_bits_per_byte)
        # The live word map at the last snapshot is insight's word map of the finished model.
        final = live.word_map(align=False)
        expected = word_map(model, load_tokenizer(done.model_dir))
        assert final.step == 40 and final.word_map.words == expected.words
        np.testing.assert_allclose(final.word_map.coords, expected.coords, atol=1e-6)
        assert live.word_map().word_map.words == expected.words  # aligned to the map shown before: same words


def test_stop_ends_with_a_checkpoint(tmp_path):
    with LiveTraining(tmp_path) as live:
        live.start(LiveSettings(size="debug", steps=1000))
        running = wait_until(live, lambda p: p.step >= 10)
        live.pause()
        stopped = live.stop()  # a paused run is continued, then stopped
        assert stopped.state == "stopped" and stopped.model_dir is None
        assert stopped.checkpoint.is_dir() and int(stopped.checkpoint.name.split("-")[1]) >= running.step
        assert process_state(running.pid) is None and stopped.message.startswith(f"Stopped at step {stopped.step}")
        # The slot is free again.
        again = live.start(LiveSettings(**DEBUG))
        assert again.state == "running" and again.run_dir != stopped.run_dir
        live.close()
        closed = live.poll()
        assert closed.state == "stopped" and closed.message.endswith("the page closed.")
        assert process_state(again.pid) is None


def test_close_kills_a_paused_run(tmp_path):
    live = LiveTraining(tmp_path)
    pid = live.start(LiveSettings(**DEBUG)).pid
    live.pause()
    assert reaches(pid, ("T",))
    live.close()
    assert process_state(pid) is None and live.poll().state == "stopped"


SERVER = textwrap.dedent(
    """
    import sys, threading, time
    from hf_tinyllm.studio.live_training import LiveSettings, LiveTraining

    live = LiveTraining(sys.argv[1])
    started = []
    # As a page's handler would: from a worker thread that then ends.
    handler = threading.Thread(target=lambda: started.append(live.start(LiveSettings(size="debug", steps=1000))))
    handler.start()
    handler.join()
    print(started[0].pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal is Linux's prctl")
def test_the_run_dies_with_the_server_not_with_the_handler_thread(tmp_path):
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(server.stdout.readline())
        time.sleep(1.0)
        assert process_state(pid) not in (None, "Z"), "the run died with the thread that started it"
        os.kill(server.pid, signal.SIGKILL)  # no close(), no atexit: only the kernel can end the run now
        server.wait()
        assert reaches(pid, (None, "Z"))
    finally:
        server.kill()
        server.wait()


def test_a_thread_of_the_page_may_start_while_another_polls(tmp_path):
    """Handlers run in threads: a start from one and polls from another never see a half-made run."""
    with LiveTraining(tmp_path) as live:
        seen, stop = [], threading.Event()

        def poll() -> None:
            while not stop.is_set():
                seen.append(live.poll().state)

        poller = threading.Thread(target=poll)
        poller.start()
        live.start(LiveSettings(**DEBUG))
        time.sleep(0.2)
        live.close()
        stop.set()
        poller.join()
    assert set(seen) <= {"idle", "running", "stopped"} and "running" in seen
