"""The Accelerate training loop: one script for one CPU, one GPU, several GPUs or nodes (`accelerate launch`).

Token-exact gradient accumulation: each micro-batch's loss is its summed token NLL divided by the number of
predicted tokens in the whole optimizer step (all micro-batches, all processes), times the process count because
DDP averages gradients; the update then equals one big batch's, whatever the split (tested).
"""

import json
import math
import platform
import signal
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, send_to_device, set_seed
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader
from tqdm.auto import tqdm

from ..data.shards import TokenBlocks
from ..errors import UserError
from ..insight.timeline import TIMELINE_DIR, TimelineRecorder
from .arguments import (
    DataArguments,
    ModelArguments,
    OptimArguments,
    ProbeArguments,
    RunArguments,
    validate_train_arguments,
)
from .artifacts import save_final_model
from .checkpoint import TrainingProgress, load_loader_state, resolve_checkpoint, save_checkpoint
from .data import prepare_training_data, training_collator
from .manifest import model_fingerprint
from .model import build_training_model
from .optim import build_optimizers, build_schedulers
from .probes import build_probe, embedding_optimizer
from .run_lock import run_folder_lock
from .sampler import EpochSampler
from .sharding import configure_sharding, device_arguments, measure_whole, whole_model
from .streaming import PackedStream, check_layout
from .throughput import matmul_parameters, matmul_peak_flops, training_flops_per_token


class NonFiniteLossError(UserError, RuntimeError):
    """The loss or a gradient stopped being finite: the settings diverged (lower the learning rate, clip harder)."""


class JsonlTracker(GeneralTracker):
    """Accelerate tracker that appends every logged dict, with its step, to `metrics.jsonl` (always on)."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, run_name: str, logging_dir: str | Path) -> None:
        super().__init__()
        self.path = Path(logging_dir) / "metrics.jsonl"

    @property
    def tracker(self) -> Path:
        return self.path

    def store_init_configuration(self, values: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / "config.json").write_text(json.dumps(values, indent=2, default=str))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")


class StopSignal:
    """SIGTERM/SIGINT set a flag; the loop finishes its step, writes a checkpoint and exits cleanly."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous = {}

    def __enter__(self) -> "StopSignal":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _trackers(report_to: str, output_dir: Path) -> list:
    trackers: list = [JsonlTracker("run", output_dir / "logs")]
    for name in (n.strip() for n in report_to.split(",")):
        if name in ("", "none", "jsonl"):
            continue
        if name == "tensorboard" and not is_tensorboard_available():
            continue  # the default: used when installed
        trackers.append(name)
    return trackers


def _batches(accelerator: Accelerator, dataloader, progress: TrainingProgress):
    """Endless batches from the current training position. Blocks from token shards: the loader is this process's
    own (`EpochSampler`), positioned in O(1) and moved to the device here; a stream's loader too, positioned by its
    saved state. Otherwise the loader is Accelerate's (sharded by `prepare`), reseeded per epoch (set_epoch) and
    fast-forwarded by `skip_first_batches`."""
    if isinstance(dataloader, StatefulDataLoader):  # streaming: endless (PackedStream), positioned by its own state
        for batch in dataloader:
            progress.batches_in_epoch += 1
            yield send_to_device(batch, accelerator.device, non_blocking=True)
        return
    own = isinstance(dataloader.sampler, EpochSampler)
    while True:
        loader = dataloader
        if own:
            dataloader.sampler.set_position(progress.epoch, progress.batches_in_epoch)
        else:
            dataloader.set_epoch(progress.epoch)
            if progress.batches_in_epoch:
                loader = accelerator.skip_first_batches(dataloader, progress.batches_in_epoch)
        for batch in loader:
            progress.batches_in_epoch += 1
            yield send_to_device(batch, accelerator.device, non_blocking=True) if own else batch
        progress.epoch += 1
        progress.batches_in_epoch = 0


def accumulate_gradients(accelerator: Accelerator, model: torch.nn.Module, micro_batches: list[dict]) -> torch.Tensor:
    """Forward and backward over the micro-batches of one optimizer step on every process. The gradients left on the
    parameters are those of the mean next-token loss over all the step's labels (-100 excluded) on all processes,
    however unevenly the labels fall into micro-batches and processes; returns that loss (a scalar tensor). The label
    count stays on the device: nothing here waits for it."""
    local_items = torch.stack([(b["labels"][:, 1:] != -100).sum() for b in micro_batches]).sum()
    num_items = accelerator.reduce(local_items, "sum")
    step_loss = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with nullcontext() if last else accelerator.no_sync(model), accelerator.autocast():
            loss = model(**batch, num_items_in_batch=num_items).loss  # local token-NLL sum / global tokens
        accelerator.backward(loss * accelerator.num_processes)  # DDP averages over processes
        step_loss += loss.detach()
    return accelerator.reduce(step_loss, "sum")


@dataclass
class StepResult:
    """What one optimizer step leaves on the device; read back (a host sync) only when something looks at it."""

    loss: torch.Tensor
    grad_norm: torch.Tensor | None  # the global norm before clipping (None under DeepSpeed, whose engine clips)
    finite: torch.Tensor  # bool: the loss and, outside fp16 (the loss scaler's business), the gradient norm


def training_step(
    accelerator: Accelerator, model: torch.nn.Module, micro_batches: list[dict], max_grad_norm: float
) -> StepResult:
    """Gradients of one optimizer step and their clipping; no update yet, and no host-device synchronisation."""
    loss = accumulate_gradients(accelerator, model, micro_batches)
    grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_grad_norm if max_grad_norm > 0 else float("inf"))
    finite = torch.isfinite(loss)
    if grad_norm is not None and accelerator.mixed_precision != "fp16":
        finite = finite & torch.isfinite(torch.as_tensor(grad_norm, device=loss.device))
    return StepResult(loss, grad_norm, finite)


def apply_update(optimizers: list, schedulers: list) -> None:
    for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)


class NonFiniteWatch:
    """Non-finite steps, kept on the device and looked at only when the loop does periodic work (before any
    evaluation or checkpoint, so a bad step never reaches a saved file): an ordinary step never waits for it.

    A run that may skip bad steps (`--skip_nonfinite_steps N`) must decide before each update, so there the check
    reads the flag every step: one host sync per step, the price of skipping."""

    def __init__(self, allowed_skips: int, output_dir: Path, say: Callable[[str], None]) -> None:
        self.allowed_skips = allowed_skips
        self.output_dir = output_dir
        self.say = say  # accelerator.print: the main process speaks
        self.first_bad_step: torch.Tensor | None = None  # 0 while every step was finite
        self.last: StepResult | None = None

    def skip_now(self, result: StepResult, progress: TrainingProgress) -> bool:
        """Only with skips allowed: whether to drop this step's update (and raise past the allowance)."""
        if not self.allowed_skips or bool(result.finite):
            return False
        progress.skipped_steps += 1
        if progress.skipped_steps > self.allowed_skips:
            self._raise(_describe(result), progress.step + 1)
        self.say(f"Skipped step {progress.step + 1}: {_describe(result)}")
        return True

    def record(self, result: StepResult, step: int) -> None:
        self.last = result
        if self.allowed_skips:
            return
        if self.first_bad_step is None:
            self.first_bad_step = torch.zeros((), dtype=torch.long, device=result.loss.device)
        first_bad_now = (self.first_bad_step == 0) & ~result.finite
        self.first_bad_step = torch.where(first_bad_now, step, self.first_bad_step)

    def check(self) -> None:
        """Raise if any step so far was not finite (a host sync: called at periodic work and at the end only)."""
        if self.first_bad_step is not None and (step := int(self.first_bad_step)):
            self._raise(f"{_describe(self.last)} at the last step", step)

    def _raise(self, problem: str, step: int) -> None:
        raise NonFiniteLossError(
            f"Non-finite loss or gradient ({problem}) at step {step}; stopped without saving, so the last good "
            f"checkpoint in {self.output_dir / 'checkpoints'} is intact. Lower the learning rate, use "
            "--mixed_precision no, or allow skips with --skip_nonfinite_steps N."
        )


def _number(value: torch.Tensor | float | None) -> float | None:
    return None if value is None else float(value)


def _describe(result: StepResult) -> str:
    return f"loss={result.loss.item()}, grad_norm={_number(result.grad_norm)}"


class StepHooks:
    """Per-step extras plug in here instead of growing the loop: subclass and pass `train(..., hooks=[...])`."""

    def on_step_begin(self, step: int) -> None:
        """Before step `step` (1-based) draws its batches."""

    def on_micro_batches(self, step: int, micro_batches: list[dict]) -> None:
        """What step `step` trains on, this process's micro-batches as the model receives them."""

    def on_step_end(self, step: int) -> None:
        """After step `step`'s update, before the periodic work (logging, probes, evaluation, saving, stop)."""


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    optim_args: OptimArguments,
    run_args: RunArguments,
    probe_args: ProbeArguments | None = None,
    hooks: list[StepHooks] | None = None,
) -> dict:
    probe_args = probe_args or ProbeArguments()
    validate_train_arguments(model_args, data_args, optim_args, run_args, probe_args)
    output_dir = Path(run_args.output_dir)
    accelerator = Accelerator(
        **device_arguments(),
        mixed_precision=optim_args.mixed_precision,
        log_with=_trackers(run_args.report_to, output_dir),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=torch.cuda.is_available()),
    )
    # One writer per run folder: the main process holds the lock for the whole run.
    with run_folder_lock(output_dir) if accelerator.is_main_process else nullcontext():
        run = _set_up(accelerator, output_dir, model_args, data_args, optim_args, run_args, probe_args)
        _run_steps(run, hooks or [])
        return _finish(run)


@dataclass
class TrainingRun:
    """Everything the steps and the periodic work share, built once by `_set_up`."""

    accelerator: Accelerator
    output_dir: Path
    model_args: ModelArguments
    data_args: DataArguments
    optim_args: OptimArguments
    run_args: RunArguments
    probe_args: ProbeArguments
    data: Any
    probe: Any
    model: torch.nn.Module
    unwrapped: torch.nn.Module
    optimizers: list
    schedulers: list
    batches: Any
    progress: TrainingProgress
    run_configuration: dict
    parameters: int
    flops_per_token: float
    peak_flops: float
    tokens_per_step: int
    stop_at: int
    history: list[dict] = field(default_factory=list)
    last_eval: dict = field(default_factory=dict)
    stopped_by: str | None = None
    dataloader: Any = None
    timeline: TimelineRecorder | None = None
    started: float = field(default_factory=time.perf_counter)


def _set_up(
    accelerator: Accelerator,
    output_dir: Path,
    model_args: ModelArguments,
    data_args: DataArguments,
    optim_args: OptimArguments,
    run_args: RunArguments,
    probe_args: ProbeArguments,
) -> TrainingRun:
    configure_sharding(accelerator, optim_args)
    set_seed(run_args.seed)
    if run_args.allow_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data = prepare_training_data(data_args, accelerator.main_process_first, output_dir, run_args.seed)
    tokenizer = data.tokenizer
    probe = build_probe(data, probe_args)
    model = build_training_model(model_args, tokenizer)
    # What a checkpoint must be resumed with: the model's architecture and the data it is fed.
    run_configuration = {
        "model": model_fingerprint(model.config.to_dict()),
        "data": {k: v for k, v in asdict(data_args).items() if k not in ("num_proc", "flatten_batches")},
    }
    if run_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    optimizers = build_optimizers(model, optim_args, accelerator.device)
    schedulers = build_schedulers(optimizers, optim_args)
    dataloader, position = _training_loader(accelerator, data, data_args, model_args.attn_implementation, run_args,
                                            optim_args.per_device_batch_size)  # fmt: skip
    parameters = model.num_parameters()  # counted before prepare: ZeRO-3 leaves empty placeholders
    flops_per_token = training_flops_per_token(model.config, matmul_parameters(model), data_args.block_size)
    if position is None:
        model, dataloader, *optimizers = accelerator.prepare(model, dataloader, *optimizers)
    else:
        model, *optimizers = accelerator.prepare(model, *optimizers)
        run_configuration["sampler"] = position
    if run_args.compile_on(accelerator.device):
        model = torch.compile(model, backend=run_args.torch_compile_backend, mode=run_args.torch_compile_mode)
    progress = TrainingProgress()
    for obj in (*schedulers, progress):  # not prepared: Accelerate would step schedulers once per process
        accelerator.register_for_checkpointing(obj)
    config_values = {**asdict(model_args), **asdict(data_args), **asdict(optim_args), **asdict(run_args)}
    accelerator.init_trackers("tinyllm", config={k: v for k, v in config_values.items() if v is not None})
    # The random stream of training (dropout) starts here, from the seed, whatever the setup drew from it (a first
    # import of an optional library may); a resumed run replaces it with the checkpoint's.
    set_seed(run_args.seed)
    resume = resolve_checkpoint(run_args.resume_from_checkpoint, output_dir, run_configuration)
    if resume is not None:
        accelerator.load_state(str(resume))
        if isinstance(dataloader, StatefulDataLoader):
            dataloader.load_state_dict(load_loader_state(resume, accelerator.process_index))
        accelerator.print(f"Resumed from {resume} at step {progress.step}")
    tokens_per_step = (
        optim_args.per_device_batch_size * data_args.block_size * optim_args.gradient_accumulation_steps
        * accelerator.num_processes
    )  # fmt: skip
    peak = matmul_peak_flops(accelerator.device.type, torch.bfloat16 if optim_args.mixed_precision == "bf16" else
                             torch.float32) * accelerator.num_processes  # fmt: skip
    stop_at = optim_args.max_steps if run_args.stop_after_steps is None else min(optim_args.max_steps,
                                                                                 run_args.stop_after_steps)  # fmt: skip
    return TrainingRun(
        accelerator, output_dir, model_args, data_args, optim_args, run_args, probe_args, data, probe, model,
        accelerator.unwrap_model(model), optimizers, schedulers, _batches(accelerator, dataloader, progress), progress,
        run_configuration, parameters, flops_per_token, peak, tokens_per_step, stop_at, dataloader=dataloader,
        timeline=probe_args.timeline_recorder(output_dir / TIMELINE_DIR),
    )  # fmt: skip


def _training_loader(
    accelerator: Accelerator, data, data_args: DataArguments, attn_implementation: str, run_args: RunArguments,
    batch_size: int,
) -> tuple[DataLoader, dict | None]:  # fmt: skip
    """The training loader and, when it is this process's own (token shards, a stream: Accelerate must not shard it a
    second time), what its saved position depends on, for the run configuration; None when Accelerate prepares it."""
    collator = training_collator(data, data_args, attn_implementation, batch_size)
    workers = loader_workers(accelerator.device, run_args.dataloader_num_workers)
    # The saved position (epoch and batches; a stream's per-worker states) names the same blocks only with the same
    # processes, batch and, streaming, loader workers.
    position = {"processes": accelerator.num_processes, "per_device_batch_size": batch_size}
    if isinstance(data.train_blocks, PackedStream):
        num_workers = workers.get("num_workers", 0)
        check_layout(data.train_blocks.num_shards, accelerator.num_processes, num_workers, data_args.dataset)
        stream = data.train_blocks.for_process(accelerator.process_index, accelerator.num_processes)
        with warnings.catch_warnings():  # torchdata 0.11's own call of torch's deprecated set_vital, not ours
            warnings.filterwarnings("ignore", "'set_vital' is deprecated", UserWarning)
            loader = StatefulDataLoader(stream, batch_size, drop_last=True, collate_fn=collator, **workers)
        return loader, {**position, "dataloader_num_workers": num_workers}
    if isinstance(data.train_blocks, TokenBlocks):
        sampler = EpochSampler(len(data.train_blocks), batch_size, accelerator.num_processes,
                               accelerator.process_index, run_args.seed)  # fmt: skip
        loader = DataLoader(data.train_blocks, batch_size, sampler=sampler, drop_last=True, collate_fn=collator,
                            **workers)  # fmt: skip
    else:
        loader = DataLoader(data.train_blocks, batch_size, shuffle=True, drop_last=True, collate_fn=collator,
                            **workers)  # fmt: skip
        position = None
    if len(loader) == 0:
        raise ValueError(
            f"{len(data.train_blocks)} training blocks cannot fill one batch of {batch_size} on each of "
            f"{accelerator.num_processes} process(es); lower per_device_batch_size or block_size, or add data."
        )
    return loader, position


def loader_workers(device: torch.device, num_workers: int | None = None) -> dict:
    """By default on CUDA, a worker process collates ahead into pinned memory (copied with non_blocking); on a CPU,
    the main process does (workers would compete with the step for the same cores). `--dataloader_num_workers`."""
    cuda = device.type == "cuda"
    num_workers = (1 if cuda else 0) if num_workers is None else num_workers
    if num_workers == 0:
        return {}
    return {"num_workers": num_workers, "pin_memory": cuda, "persistent_workers": True}


def _run_steps(run: TrainingRun, hooks: list[StepHooks]) -> None:
    accelerator, progress = run.accelerator, run.progress
    optim_args, run_args = run.optim_args, run.run_args
    watch = NonFiniteWatch(run_args.skip_nonfinite_steps, run.output_dir, accelerator.print)
    bar = tqdm(total=optim_args.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process,
               desc="training", dynamic_ncols=True)  # fmt: skip
    window = {"start": time.perf_counter(), "tokens": 0}
    if run.probe is not None and progress.step == 0:
        _record_probe(run)  # the untrained model: where every learning curve starts
    run.model.train()
    with StopSignal() as stop:
        while progress.step < run.stop_at:
            for hook in hooks:
                hook.on_step_begin(progress.step + 1)
            # Starting an epoch draws from the global generator (a worker seed; on several processes, a broadcast of
            # its state); keep data loading off the stream dropout draws from, since a resumed run starts its epoch
            # at another moment than the uninterrupted run did.
            with torch.random.fork_rng(devices=[]):
                micro_batches = [next(run.batches) for _ in range(optim_args.gradient_accumulation_steps)]
            for hook in hooks:
                hook.on_micro_batches(progress.step + 1, micro_batches)
            result = training_step(accelerator, run.model, micro_batches, optim_args.max_grad_norm)
            if watch.skip_now(result, progress):
                for optimizer in run.optimizers:
                    optimizer.zero_grad(set_to_none=True)
                continue
            apply_update(run.optimizers, run.schedulers)
            progress.step += 1
            progress.tokens_seen += run.tokens_per_step
            window["tokens"] += run.tokens_per_step
            watch.record(result, progress.step)
            bar.update(1)
            for hook in hooks:
                hook.on_step_end(progress.step)
            if _periodic_work(run, result, watch, window, bar, stop.received is not None):
                stop.received = stop.received or "a signal to another process"
                accelerator.print(f"{stop.received} received: finishing at step {progress.step} with a checkpoint.")
                break
    bar.close()
    watch.check()
    run.stopped_by = stop.received
    _save(run)
    if progress.step >= optim_args.max_steps:
        run.last_eval = _evaluate(run)
        _log_eval(accelerator, run.last_eval, progress.step, run.history)


def _save(run: TrainingRun) -> None:
    """A checkpoint of the run at its step; a streaming loader's state goes in it, each process's own."""
    loader_state = run.dataloader.state_dict() if isinstance(run.dataloader, StatefulDataLoader) else None
    save_checkpoint(run.accelerator, run.output_dir, run.progress.step, run.run_args.save_total_limit,
                    run.run_configuration, loader_state)  # fmt: skip


def _periodic_work(run: TrainingRun, result: StepResult, watch: NonFiniteWatch, window: dict, bar, stopping: bool):
    """Logging, probes, evaluation, checkpoints and the agreement to stop, each at its own interval; returns whether
    to stop. Only here does the loop read values back from the device."""
    step, run_args, probe_args = run.progress.step, run.run_args, run.probe_args
    last = step == run.stop_at
    logging = (run_args.logging_steps and step % run_args.logging_steps == 0) or last
    # The last step is always probed: the learning curves and the timeline end at the model the run saves.
    probing = run.probe is not None and (step % probe_args.probe_steps == 0 or step == run.optim_args.max_steps)
    evaluating = bool(run_args.eval_steps) and step % run_args.eval_steps == 0 and step < run.stop_at
    saving = bool(run_args.save_steps) and step % run_args.save_steps == 0
    if logging or probing or evaluating or saving:
        watch.check()
    if logging:
        _log_step(run, result, window, bar)
    if probing:
        _record_probe(run)
    if evaluating:
        run.last_eval = _evaluate(run)
        _log_eval(run.accelerator, run.last_eval, step, run.history)
    if saving:
        _save(run)
    # Several processes agree at logging steps only (a collective and a read-back); one process asks its own flag.
    if run.accelerator.num_processes == 1 or logging:
        return _stop_agreed(run.accelerator, stopping)
    return False


def _log_step(run: TrainingRun, result: StepResult, window: dict, bar) -> None:
    loss = result.loss.item()  # waits for the device: the window's time is then the device's too
    seconds = time.perf_counter() - window["start"]
    tokens_per_s = window["tokens"] / seconds
    record = {
        "loss": loss,
        "learning_rate": run.schedulers[-1].get_last_lr()[0],
        "grad_norm": _number(result.grad_norm),
        "tokens_per_s": tokens_per_s,
        "mfu": tokens_per_s * run.flops_per_token / run.peak_flops,
        "tokens_seen": run.progress.tokens_seen,
    }
    run.accelerator.log(record, step=run.progress.step)
    run.history.append({"step": run.progress.step, **record})
    bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['learning_rate']:.1e}",
                    tok_s=f"{tokens_per_s:.0f}", mfu=f"{record['mfu']:.1%}")  # fmt: skip
    window.update(start=time.perf_counter(), tokens=0)


def _evaluate(run: TrainingRun) -> dict:
    # Every process evaluates the full set: with sharded weights each forward gathers them from all processes.
    run.unwrapped.eval()
    metrics = run.data.evaluate(run.unwrapped, max_documents=run.run_args.eval_documents)
    run.unwrapped.train()
    return metrics if run.accelerator.is_main_process else {}


def _record_probe(run: TrainingRun) -> None:
    # The probe takes gradients and copies the model: on whole weights, on the main process, which also keeps the
    # timeline's snapshot of them.
    def measure(model, optimizers) -> dict:
        run.timeline.record(model, run.progress.step, final=run.progress.step == run.optim_args.max_steps)
        return run.probe.measure(model, embedding_optimizer(optimizers, model))

    record = measure_whole(run.accelerator, run.model, run.optimizers, measure)
    run.accelerator.wait_for_everyone()
    if record:
        run.accelerator.log(record, step=run.progress.step)
        run.history.append({"step": run.progress.step, **record})


def _finish(run: TrainingRun) -> dict:
    accelerator, progress = run.accelerator, run.progress
    model_args, data_args, optim_args, run_args = run.model_args, run.data_args, run.optim_args, run.run_args
    finished = progress.step >= optim_args.max_steps
    last_eval = run.last_eval
    summary = {
        "finished": finished,
        "stopped_by": run.stopped_by,
        "steps": progress.step,
        "tokens_seen": progress.tokens_seen,
        "skipped_steps": progress.skipped_steps,
        "wall_time_s": time.perf_counter() - run.started,
        "final_metrics": {k: v for k, v in last_eval.items() if k != "arithmetic_examples"},
        "arithmetic_examples": last_eval.get("arithmetic_examples", []),
        "hardware": {
            "device": str(accelerator.device), "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type), "mixed_precision": optim_args.mixed_precision,
            "torch": torch.__version__, "platform": platform.platform(), "processor": platform.processor(),
        },
        "parameters": run.parameters,
        "hyperparameters": {
            "preset": model_args.preset if model_args.init_from is None else f"init_from {model_args.init_from}",
            "optimizer": optim_args.optimizer, "learning_rate": optim_args.learning_rate,
            "lr_scheduler_type": optim_args.lr_scheduler_type, "warmup_steps": optim_args.warmup_steps,
            "weight_decay": optim_args.weight_decay, "max_grad_norm": optim_args.max_grad_norm,
            "per_device_batch_size": optim_args.per_device_batch_size, "block_size": data_args.block_size,
            "gradient_accumulation_steps": optim_args.gradient_accumulation_steps, "max_steps": optim_args.max_steps,
            "mixed_precision": optim_args.mixed_precision, "seed": run_args.seed, "dataset": data_args.dataset,
            "tinyworld_weights": data_args.tinyworld_weights,
        },
    }  # fmt: skip
    final = whole_model(accelerator, run.model) if finished else None
    if finished and accelerator.is_main_process:
        summary["model_dir"] = str(save_final_model(final, run.data.tokenizer, run.output_dir / "model", summary,
                                                    run.history, run.data.floor_bits_per_byte,
                                                    run.output_dir / TIMELINE_DIR))  # fmt: skip
        if run_args.push_to_hub:
            from ..hub import push_folder

            push_folder(run.output_dir / "model", run_args.hub_model_id)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def _stop_agreed(accelerator: Accelerator, stop_here: bool) -> bool:
    """Whether any process received a stop signal. Every process asks at the same step boundary, so all of them
    stop after the same step (a rank stopping alone would leave the others waiting in a collective)."""
    if accelerator.num_processes == 1:
        return stop_here
    flag = torch.tensor([float(stop_here)], device=accelerator.device)
    return bool(accelerator.reduce(flag, reduction="sum").item() > 0)


def _log_eval(accelerator: Accelerator, metrics: dict, step: int, history: list[dict]) -> None:
    if not accelerator.is_main_process:
        return
    record = {f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    accelerator.log(record, step=step)
    history.append({"step": step, **record})
    shown = {k.removeprefix("eval/"): round(v, 4) for k, v in record.items() if "num_" not in k}
    accelerator.print(f"step {step}: {shown}")


__all__ = [
    "JsonlTracker",
    "NonFiniteLossError",
    "StepHooks",
    "StepResult",
    "accumulate_gradients",
    "apply_update",
    "train",
    "training_step",
]
