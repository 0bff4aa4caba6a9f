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
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedModel

from ..atomic import atomic_file
from ..model_card import TIMELINE_DIR
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

    def record(self, model: PreTrainedModel, step: int) -> Path | None:
        """One snapshot of `model` (whole weights on this process) at `step`; None when off."""
        kind = self.kind_for(model)
        if kind is None or step % self.every:
            return None
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
        self.index.append({"step": step, "file": path.name, "kind": kind, "bytes": path.stat().st_size})
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

    def model_at(self, step: int, **from_pretrained) -> PreTrainedModel:
        """The model as it was at `step` (the folder's architecture and the snapshot's weights), in eval mode."""
        snapshot = self._snapshot(step)
        if snapshot["kind"] != "weights":
            raise InsightError(
                f"the snapshot at step {step} holds the embedding only (the model was larger than the whole-weight "
                "limit); record whole weights with --timeline weights."
            )
        model = AutoModelForCausalLM.from_pretrained(self.model_folder, **from_pretrained)
        missing, unexpected = model.load_state_dict(load_file(self.folder / snapshot["file"]), strict=False)
        model.tie_weights()
        if unexpected or [name for name in missing if not _tied(model, name)]:
            raise InsightError(f"the snapshot at step {step} does not fit {self.model_folder}'s model "
                               f"(missing {missing}, unexpected {unexpected}).")  # fmt: skip
        return model.eval()


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


__all__ = ["DEFAULT_MAX_PARAMETERS", "TIMELINE_DIR", "Timeline", "TimelineRecorder", "load_timeline"]
