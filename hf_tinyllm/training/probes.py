"""The learning probes (`insight.learning.LearningProbe`) plugged into training: built once from a run's data, called
by the Accelerate loop after an optimizer step, and by the Trainer through `ProbeCallback`. Both call the same
`measure`, so a model gives the same numbers under either."""

import itertools
from collections.abc import Callable

import torch
from datasets import Dataset
from transformers import PreTrainedModel, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..data.shards import TokenBlocks
from ..data.tinyworld import TinyWorld
from ..insight.learning import LearningProbe
from ..insight.timeline import TimelineRecorder
from ..insight.truth import TinyWorldTruth, TruthProbe, families_in_turn
from .arguments import ProbeArguments
from .data import TrainingData
from .streaming import PackedStream


def build_probe(data: TrainingData, args: ProbeArguments) -> LearningProbe | None:
    """The run's probe (None when `probe_steps` is 0): its fixed batch is the first `probe_batch_size` training
    blocks; arithmetic and the floor come with TinyWorld."""
    if args.probe_steps <= 0:
        return None
    if args.probe_batch_size < 1 or args.probe_documents < 1:
        raise ValueError(
            f"probe_batch_size={args.probe_batch_size} and probe_documents={args.probe_documents} must be at least 1."
        )
    documents = data.validation_documents.select(range(min(args.probe_documents, len(data.validation_documents))))
    return LearningProbe(
        tokenizer=data.tokenizer,
        probe_batch=first_blocks(data.train_blocks, args.probe_batch_size),
        trained_problems=_sample(data.trained_arithmetic, args.probe_problems),
        heldout_problems=_sample(data.heldout_arithmetic, args.probe_problems),
        validation_documents=list(documents),
        floor_bits_per_byte=data.floor_bits_per_byte,
        truth=_truth_probe(data, args.probe_truth_documents),
    )


def _truth_probe(data: TrainingData, documents: int) -> TruthProbe | None:
    """The gap to TinyWorld's exact truth on `documents` validation documents, the families taken in turn so that
    each has its own curve (TinyWorld only)."""
    if data.tinyworld is None or documents <= 0:
        return None
    chosen = families_in_turn(list(data.validation_documents), documents)
    return TruthProbe(TinyWorldTruth(TinyWorld(data.tinyworld)), chosen)


def first_blocks(blocks: Dataset | TokenBlocks | PackedStream, count: int) -> torch.Tensor:
    """The input ids of the first `count` training blocks (fewer if there are fewer), whatever holds them: packed in
    memory, memory-mapped shards, or a stream (read from its start by a copy of its own)."""
    if isinstance(blocks, PackedStream):
        return torch.stack([torch.as_tensor(b["input_ids"]) for b in itertools.islice(blocks.for_process(0, 1), count)])
    count = min(count, len(blocks))
    if isinstance(blocks, Dataset):
        return torch.tensor(blocks[:count]["input_ids"])
    return torch.stack([torch.as_tensor(blocks[i]["input_ids"]) for i in range(count)])


def _sample(problems: Dataset | None, count: int) -> list[dict] | None:
    if problems is None:
        return None
    if 0 < count < len(problems):
        problems = problems.shuffle(seed=0).select(range(count))
    return list(problems)


def embedding_optimizer(optimizers: list, model: PreTrainedModel) -> torch.optim.Optimizer | None:
    """The (unwrapped) optimizer that updates the input embedding, whose state the sparsity probe replays."""
    weight = model.get_input_embeddings().weight
    for optimizer in optimizers:
        optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps it
        if any(p is weight for group in optimizer.param_groups for p in group["params"]):
            return optimizer
    return None


class ProbeCallback(TrainerCallback):
    """Records the probe every `every` optimizer steps under the Trainer, through `log` (the Trainer's own `log`, so
    the numbers reach `log_history` and every `report_to` tracker), and the timeline's snapshots: before the first
    step, at each probe and at the last step."""

    def __init__(
        self, probe: LearningProbe, every: int, log: Callable[[dict], None], timeline: TimelineRecorder | None = None
    ) -> None:
        self.probe, self.every, self.log, self.timeline = probe, every, log, timeline

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, model=None, **kwargs) -> None:
        if self.timeline is not None and state.global_step == 0 and state.is_world_process_zero:
            self.timeline.record(_base(model), 0)

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: PreTrainedModel | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        **kwargs,
    ) -> None:
        final = state.global_step == state.max_steps
        if (state.global_step % self.every and not final) or not state.is_world_process_zero:
            return
        base = _base(model)
        if self.timeline is not None:
            self.timeline.record(base, state.global_step, final=final)
        self.log(self.probe.measure(base, embedding_optimizer([optimizer], base) if optimizer else None))


def _base(model: PreTrainedModel) -> PreTrainedModel:
    return model.get_base_model() if hasattr(model, "get_base_model") else model  # PEFT


__all__ = ["ProbeCallback", "build_probe", "embedding_optimizer", "first_blocks"]
