"""The studio's "Train" tab without the page (issue 24, item 3): a real run of the Accelerate loop (`tinyllm train`
on the demo's recipe, `hf_tinyllm.demo.RECIPE`, with the learner's TinyWorld mix, size and steps) in a background
process, started, paused, resumed and stopped from the page, and what it has written so far.

    live = LiveTraining("outputs/studio-runs")
    live.start(LiveSettings(mix={"royalty": 1, "arithmetic": 1}, size="debug", steps=200))
    progress = live.poll()      # state, step, the logged rows, probe rows, the corpus floor, the newest snapshot
    live.word_map()             # the word map at the newest timeline snapshot
    live.pause(); live.resume(); live.stop()
    live.poll().model_dir       # once finished: the model folder, timeline included

Each run gets a fresh folder under the work folder (the loop's `--output_dir`, with `train.log`, the process's
output). What the page shows is read from the files the loop writes anyway, `logs/metrics.jsonl` (read
incrementally), `timeline/` and `tokenizer/`, so the run is exactly `tinyllm train` and nothing in the loop knows
about the page. The corpus floor is TinyWorld's exact one for the chosen mix, computed before the run starts.

Bounds: one run at a time (a second `start` is refused as busy); a bad setting is a `LiveTrainingError` whose
message names the problem and the fix, raised before anything starts. The run ends with the server: `close()` (also
at interpreter exit) kills its process group, and on Linux the kernel kills the training process if the server dies
without closing (`prctl(PR_SET_PDEATHSIG, SIGKILL)` set in the child before it runs). That signal follows the THREAD
that forked the child, not the process: a page handler's thread (Gradio's worker threads are retired when idle)
would take the run down with it, so every run is forked by one long-lived thread of its own, which ends only with
the `LiveTraining` object or the interpreter.
"""

import atexit
import contextlib
import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import yaml

from ..data.tinyworld import FAMILIES
from ..demo import RECIPE
from ..errors import UserError
from ..insight.geometry import WordMap, word_map
from ..insight.learning import PREFIX as PROBE_PREFIX
from ..insight.model_parts import InsightError
from ..insight.timeline import TIMELINE_DIR, Timeline, procrustes

SIZES = ("debug", "nano")
MIN_STEPS, MAX_STEPS = 10, 5000
PROBE_POINTS = 8  # probes (and timeline snapshots) a run records after the one at step 0
LOG_POINTS = 100  # training-loss rows a run logs, about
LOG_FILE = "train.log"
METRICS_FILE = Path("logs") / "metrics.jsonl"
RUN_CONFIG_FILE = Path("logs") / "config.json"  # the run's arguments, written by the loop before step 0
ACTIVE_STATES = ("running", "paused", "stopping")
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class LiveTrainingError(UserError):
    """A setting the page cannot train with, or an action the run's state does not allow, said in one line."""


def recipe_mix() -> dict[str, float]:
    """The demo recipe's TinyWorld family weights: the mix the page starts from."""
    return json.loads(yaml.safe_load(RECIPE.read_text())["tinyworld_weights"])


def _whole(value) -> bool:
    return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))


@dataclass
class LiveSettings:
    """What the learner chooses: the TinyWorld mix (family weights, normalised by TinyWorld; a family left out has
    weight 0), the model size and the training steps. The probe interval follows from the steps (`PROBE_POINTS`
    probes and snapshots after step 0), as does the warmup (as `tinyllm demo --max_steps` sets it)."""

    mix: dict[str, float] = field(default_factory=recipe_mix)
    size: str = "nano"
    steps: int = 300

    @property
    def probe_steps(self) -> int:
        return max(1, int(self.steps) // PROBE_POINTS)

    @property
    def logging_steps(self) -> int:
        return max(1, int(self.steps) // LOG_POINTS)

    def validate(self) -> None:
        """Raise `LiveTrainingError` naming the first bad setting and how to fix it."""
        if self.size not in SIZES:
            raise LiveTrainingError(f"size {self.size!r} is not offered here; choose 'debug' (a toy that trains in "
                                    "seconds) or 'nano' (the demo's model, minutes).")  # fmt: skip
        if not _whole(self.steps) or not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise LiveTrainingError(f"steps={self.steps!r} is out of range; choose a whole number from {MIN_STEPS} to "
                                    f"{MAX_STEPS} (the demo trains 1400).")  # fmt: skip
        self._validate_mix()

    def _validate_mix(self) -> None:
        families = ", ".join(FAMILIES)
        if not isinstance(self.mix, dict):
            raise LiveTrainingError(f"the TinyWorld mix must map families to weights, e.g. {recipe_mix()}.")
        unknown = sorted(str(name) for name in set(self.mix) - set(FAMILIES))
        if unknown:
            raise LiveTrainingError(f"the TinyWorld mix names unknown families {unknown}; use {families}.")
        for family, weight in self.mix.items():
            number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
            if not number or not math.isfinite(weight) or weight < 0:
                raise LiveTrainingError(f"the weight of {family} is {weight!r}; give each family a number >= 0 "
                                        "(e.g. 0.25, or 0 to leave it out).")  # fmt: skip
        if sum(self.mix.values()) <= 0:
            raise LiveTrainingError(f"every family of the TinyWorld mix has weight 0; give at least one of {families} "
                                    "a weight above 0.")  # fmt: skip

    def train_arguments(self, output_dir: str | Path) -> list[str]:
        """The `tinyllm train` (and `scripts/train.py`) arguments of this run: the demo's recipe and these settings."""
        self.validate()
        steps = int(self.steps)
        mix = {family: float(weight) for family, weight in self.mix.items()}
        return ["--config", str(RECIPE), "--preset", self.size, "--max_steps", str(steps),
                "--warmup_steps", str(min(30, steps // 5)), "--probe_steps", str(self.probe_steps),
                "--logging_steps", str(self.logging_steps), "--tinyworld_weights", json.dumps(mix),
                "--output_dir", str(output_dir)]  # fmt: skip


@dataclass
class LiveProgress:
    """Where the run is, as the page shows it. `state`: idle (nothing started), running, paused, stopping (asked to
    stop, finishing its step and checkpoint), finished, stopped or failed. `rows` are every row the loop has logged
    so far (`step` plus training loss, probes `probe/...`, the final evaluation `eval/...`)."""

    state: str
    message: str
    step: int = 0
    max_steps: int = 0
    rows: list[dict] = field(default_factory=list)
    floor_bits_per_byte: float | None = None
    snapshot_step: int | None = None  # the newest timeline snapshot
    run_dir: Path | None = None
    model_dir: Path | None = None  # finished: the model folder (with its timeline)
    checkpoint: Path | None = None  # stopped: the newest checkpoint, if one was written
    log_tail: str = ""  # failed: the last lines the process printed
    pid: int | None = None

    @property
    def loss_rows(self) -> list[dict]:
        """The training-loss rows (`loss` in nats per token, `tokens_per_s`, `learning_rate`, ...)."""
        return [row for row in self.rows if "loss" in row]

    @property
    def probe_rows(self) -> list[dict]:
        """The probe rows: `probe/trained_exact_match` (memorised) against `probe/heldout_exact_match` (never seen),
        `probe/validation_bits_per_byte` (to compare with the floor), the geometry, ..."""
        return [row for row in self.rows if any(key.startswith(PROBE_PREFIX) for key in row)]

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class MetricsReader:
    """The rows a run appends to `logs/metrics.jsonl`, read incrementally: each call reads only what was appended
    since the last, and a last line still being written waits for the next call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.rows: list[dict] = []

    def read(self) -> list[dict]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.rows
        complete = data.rfind(b"\n") + 1
        for line in data[:complete].splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                if line.strip():
                    self.rows.append(json.loads(line))
        self.offset += complete
        return self.rows


@dataclass
class LiveWordMap:
    step: int  # the snapshot's step
    word_map: WordMap  # `insight.geometry.word_map` of the snapshot's input embedding (coords possibly aligned)


class RunWordMaps:
    """The word map at a run folder's newest timeline snapshot, while the run is still training.

    The model folder exists only at the end, so the architecture comes from the run folder: the loop writes its
    arguments (`logs/config.json`) and tokenizer (`tokenizer/`) before its first snapshot, and
    `build_training_model` on them builds the model the run trains (weights aside); the snapshot's input embedding
    (either kind of snapshot has it) is copied in, and the word map is read off it, as for a finished model. With
    `align`, each new map's coordinates are rotated, scaled and moved onto the previous map returned (orthogonal
    Procrustes), so the words move between steps instead of jumping with PCA's axes."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self._lock = threading.Lock()
        self._model = self._tokenizer = None
        self._last: tuple[int, WordMap, WordMap] | None = None  # step, its map, the map as last returned (aligned)

    def latest(self, align: bool = True) -> LiveWordMap | None:
        """The word map at the newest snapshot; None before the first. Computed once per snapshot."""
        step = newest_snapshot(self.run_dir)
        if step is None:
            return None
        with self._lock:
            if self._last is None or self._last[0] != step:
                self._last = self._next(step)
            return LiveWordMap(step, self._last[2] if align else self._last[1])

    def _next(self, step: int) -> tuple[int, WordMap, WordMap]:
        model, tokenizer = self._model_and_tokenizer()
        embedding = Timeline(self.run_dir / "model", self.run_dir / TIMELINE_DIR).embeddings(step)
        with torch.no_grad():
            model.get_input_embeddings().weight.copy_(embedding)
        raw = word_map(model, tokenizer)
        shown = raw
        if self._last is not None and self._last[2].words == raw.words:
            reference = np.asarray(self._last[2].coords)
            shown = replace(raw, coords=[tuple(xy) for xy in procrustes(np.asarray(raw.coords), reference).tolist()])
        return step, raw, shown

    def _model_and_tokenizer(self):
        if self._model is None:
            from ..tokenization import load_tokenizer
            from ..training import ModelArguments
            from ..training.model import build_training_model

            config = json.loads((self.run_dir / RUN_CONFIG_FILE).read_text())
            names = {f.name for f in fields(ModelArguments)}
            model_args = ModelArguments(**{k: v for k, v in config.items() if k in names})
            self._tokenizer = load_tokenizer(self.run_dir / "tokenizer")
            self._model = build_training_model(model_args, self._tokenizer).float().eval()
        return self._model, self._tokenizer


def newest_snapshot(run_dir: str | Path) -> int | None:
    """The step of the newest timeline snapshot in a run folder, None before the first."""
    try:
        return Timeline(Path(run_dir) / "model", Path(run_dir) / TIMELINE_DIR).steps[-1]
    except (InsightError, IndexError, ValueError):  # no index (or no snapshot) yet
        return None


def log_tail(path: Path, lines: int = 15, max_bytes: int = 16_384) -> str:
    """The last `lines` lines of a process's output, each progress bar's carriage-return redraws kept as the last."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    shown = [line.rsplit("\r", 1)[-1].rstrip() for line in text.splitlines()]
    return "\n".join([line for line in shown if line][-lines:])


def _death_signal_hook() -> Callable[[], None] | None:
    """A `preexec_fn` that has the kernel SIGKILL the child when the thread that forked it ends (Linux), and kills
    the child at once if the server is already gone; None where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, kill = os.getpid(), ctypes.c_ulong(int(signal.SIGKILL))  # made here: the child does the least it can

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, kill)
        if os.getppid() != parent:  # the server died between fork and prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _launch(argv: list[str], log_path: Path) -> subprocess.Popen:
    """`tinyllm train ARGV` in its own process group (session), its output into `log_path`."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "hf_tinyllm.cli", "train", *argv], stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_death_signal_hook(),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip


def _checked_floor(argv: list[str]) -> float | None:
    """Parse the run's arguments as `tinyllm train` will (a bad one is a `LiveTrainingError` now, not a failed run)
    and return TinyWorld's exact entropy floor (bits per byte) for its mix."""
    from ..data.tinyworld import TinyWorld
    from ..training import parse_train_arguments
    from ..training.data import tinyworld_config

    try:
        _, data_args, *_ = parse_train_arguments(argv)
        return TinyWorld(tinyworld_config(data_args)).floor_bits_per_byte()
    except ValueError as err:
        raise LiveTrainingError(str(err).splitlines()[0]) from err


class LiveTraining:
    """One training run at a time, in a background process, for a page (its handlers may call from any thread).

    `start`, `pause`, `resume`, `stop` and `poll` return a `LiveProgress`; `close` kills whatever runs (the page went
    away, the server stops; also registered at interpreter exit). A run's folder is a fresh one under `workdir`."""

    def __init__(self, workdir: str | Path) -> None:
        self.workdir = Path(workdir).resolve()
        self._lock = threading.RLock()
        # Forks every run: the death signal follows this thread, which lives as long as this object (see the module).
        self._spawner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-training-spawner")
        self._process: subprocess.Popen | None = None
        self._settings: LiveSettings | None = None
        self._run_dir: Path | None = None
        self._metrics: MetricsReader | None = None
        self._word_maps: RunWordMaps | None = None
        self._floor: float | None = None
        self._paused = False
        self._ending: str | None = None  # what was asked of the process: "stop" or "close"
        atexit.register(self.close)

    def __enter__(self) -> "LiveTraining":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self, settings: LiveSettings) -> LiveProgress:
        """Check `settings` and the run's arguments, then launch `tinyllm train` on them. Busy while a run is active."""
        with self._lock:
            if self._alive():
                progress = self.poll()
                raise LiveTrainingError(f"busy: a training run is {progress.state} (step {progress.step} of "
                                        f"{progress.max_steps}); stop it or wait for it to finish before starting "
                                        "another.")  # fmt: skip
            run_dir = self._fresh_run_dir()
            argv = settings.train_arguments(run_dir)
            floor = _checked_floor(argv)
            run_dir.mkdir(parents=True)
            self._process = self._spawner.submit(_launch, argv, run_dir / LOG_FILE).result()
            self._settings, self._run_dir, self._floor = replace(settings), run_dir, floor
            self._metrics = MetricsReader(run_dir / METRICS_FILE)
            self._word_maps = RunWordMaps(run_dir)
            self._paused, self._ending = False, None
            return self.poll()

    def pause(self) -> LiveProgress:
        """Freeze the run (SIGSTOP to its process group) where it is; nothing is lost."""
        with self._lock:
            self._require_active("pause")
            if not self._paused:
                self._signal_group(signal.SIGSTOP)
                self._paused = True
            return self.poll()

    def resume(self) -> LiveProgress:
        """Let a paused run go on (SIGCONT)."""
        with self._lock:
            self._require_active("resume")
            if self._paused:
                self._signal_group(signal.SIGCONT)
                self._paused = False
            return self.poll()

    def stop(self, wait: float = 60.0) -> LiveProgress:
        """SIGTERM: the loop finishes its step, writes a checkpoint and exits (a paused run is continued first). Waits
        up to `wait` seconds for that, then kills the process group; `wait=0` returns at once, in state stopping."""
        with self._lock:
            self._require_active("stop")
            process = self._process
            if self._paused:
                self._signal_group(signal.SIGCONT)
                self._paused = False
            self._ending = "stop"
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)  # the loop's process only: a loader worker must not die first
        if wait > 0:
            try:
                process.wait(wait)
            except subprocess.TimeoutExpired:
                self._kill(process)
        return self.poll()

    def close(self) -> None:
        """Kill whatever runs (SIGKILL to its process group, paused or not) and reap it."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                return
            self._ending = self._ending or "close"
            self._paused = False
        self._kill(process)

    def poll(self) -> LiveProgress:
        """The run's state and everything it has written so far (rows read incrementally)."""
        with self._lock:
            if self._process is None:
                return LiveProgress("idle", "No run yet: choose the mix, the size and the steps, then Start.")
            rows = list(self._metrics.read())
            progress = LiveProgress(
                self._state(), "", step=max((row.get("step") or 0 for row in rows), default=0),
                max_steps=int(self._settings.steps), rows=rows, floor_bits_per_byte=self._floor,
                snapshot_step=newest_snapshot(self._run_dir), run_dir=self._run_dir, pid=self._process.pid,
            )  # fmt: skip
            self._fill_outcome(progress)
            progress.message = _message(progress, self._process.returncode, self._ending)
            return progress

    def word_map(self, align: bool = True) -> LiveWordMap | None:
        """The word map at the run's newest snapshot (see `RunWordMaps`); None before the first snapshot."""
        with self._lock:
            maps = self._word_maps
        return None if maps is None else maps.latest(align)

    def _state(self) -> str:
        returncode = self._process.poll()
        if returncode is None:
            return "stopping" if self._ending == "stop" else "paused" if self._paused else "running"
        if returncode == 0:
            return "finished" if (self._run_dir / "model" / "config.json").is_file() else "stopped"
        return "stopped" if self._ending else "failed"

    def _fill_outcome(self, progress: LiveProgress) -> None:
        from ..training.checkpoint import checkpoints

        if progress.state == "finished":
            progress.model_dir = self._run_dir / "model"
        elif progress.state == "stopped":
            found = checkpoints(self._run_dir)
            progress.checkpoint = found[-1] if found else None
        elif progress.state == "failed":
            progress.log_tail = log_tail(self._run_dir / LOG_FILE)

    def _alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _require_active(self, action: str) -> None:
        if not self._alive() or self._ending is not None:
            raise LiveTrainingError(f"nothing to {action}: no run is training; Start one first.")

    def _signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, sig)

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the group id is its pid
        process.wait()

    def _fresh_run_dir(self) -> Path:
        name = f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = self.workdir / name, 1
        while path.exists():
            n += 1
            path = self.workdir / f"{name}-{n}"
        return path


def _message(progress: LiveProgress, returncode: int | None, ending: str | None) -> str:
    """The page's one-line status."""
    step, total = progress.step, progress.max_steps
    if progress.state == "running":
        return f"Training: step {step} of {total}." if progress.rows else "Preparing the corpus and the tokenizer..."
    if progress.state == "paused":
        return f"Paused at step {step} of {total}: Resume to go on, Stop to end with a checkpoint."
    if progress.state == "stopping":
        return f"Stopping at step {step}: finishing the step and writing a checkpoint..."
    if progress.state == "finished":
        return f"Finished {total} steps; the model is in {progress.model_dir}."
    if progress.state == "stopped":
        if ending == "close":
            return f"Ended at step {step}: the page closed."
        saved = f"checkpoint {progress.checkpoint}" if progress.checkpoint else "no checkpoint yet (stopped early)"
        return f"Stopped at step {step} of {total}; {saved}."
    last = progress.log_tail.splitlines()[-1] if progress.log_tail else "no output"
    return f"The run failed (exit status {returncode}): {last}"


__all__ = [
    "LiveProgress",
    "LiveSettings",
    "LiveTraining",
    "LiveTrainingError",
    "LiveWordMap",
    "MetricsReader",
    "RunWordMaps",
    "log_tail",
    "newest_snapshot",
    "recipe_mix",
]
