"""The model as it was during training: snapshots a run records at each probe step (`--probe_steps N`), kept in the
run folder's `timeline/` and copied into the model folder (and pushed with it).

Each snapshot is one safetensors file, `timeline/step-000175.safetensors`: the whole weights for a model of at most
`max_parameters` parameters (4 bytes each, fp32: the demo's nano model, 0.87M parameters, takes 3.5 MB a snapshot),
otherwise the input embedding alone (vocabulary x hidden size), enough for the word map at every step. Which one is
in the file's metadata (`kind`); `timeline/timeline.json` lists them.

    timeline = load_timeline("outputs/demo/model")
    timeline.steps                      # [0, 175, 350, ...]
    timeline.embeddings(175)            # (V, H) input embedding at step 175
    model = timeline.model_at(175)      # the model as it was then (whole-weight snapshots)
    plot_word_map_animation(word_map_timeline(timeline, tokenizer), "word_map.gif")  # the words moving
"""

import copy
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..atomic import atomic_file
from ..model_card import TIMELINE_DIR
from .figures import pyplot
from .geometry import WordMap, parallelism_score, word_map
from .model_parts import InsightError

INDEX_FILE = "timeline.json"
EMBEDDING_KEY = "embedding"
DEFAULT_MAX_PARAMETERS = 10_000_000  # whole weights up to 40 MB a snapshot (the micro preset: 9.6M)
KINDS = ("auto", "weights", "embeddings", "off")


def snapshot_file(step: int) -> str:
    return f"step-{step:06d}.safetensors"


@dataclass
class TimelineRecorder:
    """Writes a snapshot of a model at a step into `folder` (`kind`: "auto" = whole weights up to `max_parameters`,
    "weights", "embeddings", or "off"), at steps that are multiples of `every`."""

    folder: Path
    kind: str = "auto"
    max_parameters: int = DEFAULT_MAX_PARAMETERS
    every: int = 1  # keep a snapshot at steps that are multiples of this (fewer snapshots: a multiple of probe_steps)
    index: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"timeline={self.kind!r}: use one of {', '.join(KINDS)}.")
        if self.every < 1:
            raise ValueError(f"a snapshot every {self.every} steps: use a positive number of steps.")
        self.folder = Path(self.folder)
        index = self.folder / INDEX_FILE
        if index.is_file():  # a resumed run keeps the snapshots already taken
            self.index = json.loads(index.read_text())["snapshots"]

    def kind_for(self, model: PreTrainedModel) -> str | None:
        if self.kind == "off":
            return None
        if self.kind == "auto":
            return "weights" if model.num_parameters() <= self.max_parameters else "embeddings"
        return self.kind

    def record(self, model: PreTrainedModel, step: int, final: bool = False) -> Path | None:
        """One snapshot of `model` (whole weights on this process) at `step`; None when off. The `final` step is kept
        whatever `every` says: the timeline ends at the model the run saves."""
        kind = self.kind_for(model)
        if kind is None or (step % self.every and not final):
            return None
        started = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / snapshot_file(step)
        metadata = {"step": str(step), "kind": kind}
        with atomic_file(path) as tmp:
            if kind == "weights":
                save_file(_unique_tensors(model), str(tmp), metadata=metadata)
            else:
                weight = model.get_input_embeddings().weight.detach().float().cpu().contiguous()
                save_file({EMBEDDING_KEY: weight}, str(tmp), metadata=metadata)
        self.index = [s for s in self.index if s["step"] != step]
        self.index.append(
            {
                "step": step,
                "file": path.name,
                "kind": kind,
                "bytes": path.stat().st_size,
                "seconds": round(time.perf_counter() - started, 4),
            }
        )  # what the snapshot cost the run
        self.index.sort(key=lambda s: s["step"])
        with atomic_file(self.folder / INDEX_FILE) as tmp:
            tmp.write_text(json.dumps({"snapshots": self.index}, indent=1) + "\n")
        return path


class Timeline:
    """The snapshots of a model folder (or of a run folder's `timeline/` beside a model folder)."""

    def __init__(self, model_folder: str | Path, timeline_folder: str | Path | None = None) -> None:
        self.model_folder = Path(model_folder)
        self.folder = Path(timeline_folder) if timeline_folder is not None else self.model_folder / TIMELINE_DIR
        index = self.folder / INDEX_FILE
        if not index.is_file():
            raise InsightError(
                f"{self.model_folder} has no training timeline ({TIMELINE_DIR}/{INDEX_FILE}); train with "
                "--probe_steps N (and --timeline other than off) to record one."
            )
        self.snapshots = {s["step"]: s for s in json.loads(index.read_text())["snapshots"]}

    @property
    def steps(self) -> list[int]:
        return sorted(self.snapshots)

    def _snapshot(self, step: int) -> dict:
        if step not in self.snapshots:
            raise InsightError(f"no snapshot at step {step}; the timeline has steps {self.steps}.")
        return self.snapshots[step]

    def embeddings(self, step: int) -> torch.Tensor:
        """The input embedding (V, H) at `step`, from either kind of snapshot."""
        snapshot = self._snapshot(step)
        with safe_open(self.folder / snapshot["file"], framework="pt") as f:
            if snapshot["kind"] == "embeddings":
                return f.get_tensor(EMBEDDING_KEY)
            key = next(k for k in f.keys() if k.endswith("embed_tokens.weight"))  # noqa: SIM118 (not iterable)
            return f.get_tensor(key)

    def kind(self, step: int) -> str:
        """ "weights" (the whole model) or "embeddings" (the input embedding alone) at `step`."""
        return self._snapshot(step)["kind"]

    def _weights_file(self, step: int) -> Path:
        snapshot = self._snapshot(step)
        if snapshot["kind"] != "weights":
            raise InsightError(
                f"the snapshot at step {step} holds the embedding only (the model was larger than the whole-weight "
                "limit); record whole weights with --timeline weights."
            )
        return self.folder / snapshot["file"]

    def load_into(self, model: PreTrainedModel, step: int) -> PreTrainedModel:
        """Put the whole weights of `step` into `model` (of the folder's architecture), in place; returns it."""
        missing, unexpected = model.load_state_dict(load_file(self._weights_file(step)), strict=False)
        model.tie_weights()
        if unexpected or [name for name in missing if not _tied(model, name)]:
            raise InsightError(f"the snapshot at step {step} does not fit {self.model_folder}'s model "
                               f"(missing {missing}, unexpected {unexpected}).")  # fmt: skip
        return model

    def model_at(self, step: int, **from_pretrained) -> PreTrainedModel:
        """The model as it was at `step` (the folder's architecture and the snapshot's weights), in eval mode."""
        self._weights_file(step)  # an embedding-only snapshot is refused before loading anything
        return self.load_into(AutoModelForCausalLM.from_pretrained(self.model_folder, **from_pretrained), step).eval()


def _unique_tensors(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    """The state dict with each shared tensor once, under its first name (a tied head under the embedding's)."""
    seen, tensors = set(), {}
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        tensors[name] = tensor.detach().cpu().contiguous()
    return tensors


def _tied(model: PreTrainedModel, name: str) -> bool:
    """Whether parameter `name` is the tied output head (saved once, under the embedding's name)."""
    return name.startswith("lm_head") and model.config.tie_word_embeddings


def load_timeline(model_folder: str | Path) -> Timeline:
    return Timeline(model_folder)


@dataclass
class WordMapTimeline:
    steps: list[int]
    maps: list[WordMap]  # the word map at each step, its coordinates aligned to the last step's (Procrustes)
    parallelism: list[float]  # the gender offsets' parallelism score at each step (insight.geometry)
    parallelism_baseline: float  # random word pairs' score at the last step


def procrustes(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`points` (N, 2) rotated (or reflected), scaled and moved to lie as close as they can to `reference`: the
    orthogonal Procrustes solution. A PCA per step picks its own axes and signs; aligned, the words move between
    steps instead of jumping."""
    a, b = points - points.mean(0), reference - reference.mean(0)
    u, singular, vt = np.linalg.svd(a.T @ b)
    norm = float((a**2).sum())
    scale = float(singular.sum()) / norm if norm > 0 else 1.0
    return scale * a @ (u @ vt) + reference.mean(0)


def word_map_timeline(
    timeline: Timeline,
    tokenizer: PreTrainedTokenizerBase,
    groups: dict[str, list[str]] | None = None,
    model: PreTrainedModel | None = None,
) -> WordMapTimeline:
    """The word map (`insight.geometry.word_map`, the same words) at every recorded step, from each step's input
    embedding in the model folder's architecture (or a copy of `model`'s), aligned to the last step's map."""
    model = AutoModelForCausalLM.from_pretrained(timeline.model_folder) if model is None else copy.deepcopy(model)
    model.eval()
    embedding = model.get_input_embeddings().weight
    maps, parallelism = [], []
    for step in timeline.steps:
        with torch.no_grad():
            embedding.copy_(timeline.embeddings(step))
        maps.append(word_map(model, tokenizer, groups))
        score = parallelism_score(model, tokenizer)
        parallelism.append(score.score)
    reference = np.asarray(maps[-1].coords)
    aligned = [replace(m, coords=[tuple(xy) for xy in procrustes(np.asarray(m.coords), reference).tolist()])
               for m in maps]  # fmt: skip
    return WordMapTimeline(timeline.steps, aligned, parallelism, score.baseline)


def plot_word_map_animation(result: WordMapTimeline, path: str | Path, seconds_per_step: float = 0.8) -> Path:
    """An animated GIF of the aligned word maps, one frame a step, on fixed axes; the last frame is held longer."""
    from PIL import Image

    plt = pyplot()
    first = result.maps[-1]
    names = list(dict.fromkeys(first.groups))
    palette = plt.get_cmap("tab10")
    colors = [palette(names.index(g) % 10) for g in first.groups]
    everything = np.concatenate([np.asarray(m.coords) for m in result.maps])
    low, high = everything.min(0), everything.max(0)
    pad = 0.1 * np.maximum(high - low, 1e-6)
    frames = []
    for step, wmap, score in zip(result.steps, result.maps, result.parallelism, strict=True):
        fig, ax = plt.subplots(figsize=(7, 5.5), dpi=80)
        xy = dict(zip(wmap.words, wmap.coords, strict=True))
        ax.scatter(*np.asarray(wmap.coords).T, s=22, c=colors, zorder=3)
        for male, female in wmap.pairs:
            ax.annotate("", xy=xy[female], xytext=xy[male], zorder=2,
                        arrowprops=dict(arrowstyle="->", color="grey", alpha=0.6, lw=0.9))  # fmt: skip
        for word, (x, y), color in zip(wmap.words, wmap.coords, colors, strict=True):
            ax.annotate(word, (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, color=color)
        ax.set_xlim(low[0] - pad[0], high[0] + pad[0])
        ax.set_ylim(low[1] - pad[1], high[1] + pad[1])
        baseline = result.parallelism_baseline
        ax.set_title(f"step {step}: input embeddings of word sets (2-D PCA, aligned to the last step)\n"
                     f"parallelism of the gender offsets {score:+.2f} (random pairs {baseline:+.2f})",
                     fontsize=9)  # fmt: skip
        for group, color in zip(names, (palette(i % 10) for i in range(len(names))), strict=False):
            ax.scatter([], [], s=22, color=color, label=group)
        ax.legend(fontsize=7, loc="upper left", framealpha=0.8)
        ax.grid(alpha=0.2)
        fig.tight_layout()
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]))
        plt.close(fig)
    durations = [int(1000 * seconds_per_step)] * (len(frames) - 1) + [int(3000 * seconds_per_step)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


__all__ = [
    "DEFAULT_MAX_PARAMETERS",
    "TIMELINE_DIR",
    "Timeline",
    "TimelineRecorder",
    "WordMapTimeline",
    "load_timeline",
    "plot_word_map_animation",
    "procrustes",
    "word_map_timeline",
]
