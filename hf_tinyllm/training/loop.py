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
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.tracking import GeneralTracker
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..data.packing import DataCollatorForCausalLM
from ..errors import UserError
from .arguments import (
    DataArguments,
    ModelArguments,
    OptimArguments,
    ProbeArguments,
    RunArguments,
    validate_train_arguments,
)
from .artifacts import save_final_model
from .checkpoint import TrainingProgress, resolve_checkpoint, save_checkpoint
from .data import prepare_training_data
from .manifest import model_fingerprint
from .model import build_training_model
from .optim import build_optimizers, build_schedulers
from .probes import build_probe, embedding_optimizer
from .run_lock import run_folder_lock
from .sharding import configure_sharding, device_arguments, measure_whole, whole_model
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
    """Endless batches from the current training position; the sampler is reseeded per epoch (set_epoch)."""
    while True:
        dataloader.set_epoch(progress.epoch)
        loader = dataloader
        if progress.batches_in_epoch:
            loader = accelerator.skip_first_batches(dataloader, progress.batches_in_epoch)
        for batch in loader:
            progress.batches_in_epoch += 1
            yield batch
        progress.epoch += 1
        progress.batches_in_epoch = 0


def accumulate_gradients(accelerator: Accelerator, model: torch.nn.Module, micro_batches: list[dict]) -> torch.Tensor:
    """Forward and backward over the micro-batches of one optimizer step on every process. The gradients left on the
    parameters are those of the mean next-token loss over all the step's labels (-100 excluded) on all processes,
    however unevenly the labels fall into micro-batches and processes; returns that loss (a scalar tensor)."""
    local_items = sum(int((b["labels"][:, 1:] != -100).sum()) for b in micro_batches)
    num_items = accelerator.reduce(torch.tensor(local_items, device=accelerator.device), "sum")
    step_loss = torch.zeros((), device=accelerator.device)
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        with nullcontext() if last else accelerator.no_sync(model), accelerator.autocast():
            loss = model(**batch, num_items_in_batch=num_items).loss  # local token-NLL sum / global tokens
        accelerator.backward(loss * accelerator.num_processes)  # DDP averages over processes
        step_loss += loss.detach()
    return accelerator.reduce(step_loss, "sum")


def train(
    model_args: ModelArguments,
    data_args: DataArguments,
    optim_args: OptimArguments,
    run_args: RunArguments,
    probe_args: ProbeArguments | None = None,
) -> dict:
    probe_args = probe_args or ProbeArguments()
    validate_train_arguments(model_args, data_args, optim_args, run_args, probe_args)
    output_dir = Path(run_args.output_dir)
    accelerator = Accelerator(
        **device_arguments(),
        mixed_precision=optim_args.mixed_precision,
        log_with=_trackers(run_args.report_to, output_dir),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    # One writer per run folder: the main process holds the lock for the whole run.
    with run_folder_lock(output_dir) if accelerator.is_main_process else nullcontext():
        return _train(accelerator, output_dir, model_args, data_args, optim_args, run_args, probe_args)


def _train(
    accelerator: Accelerator,
    output_dir: Path,
    model_args: ModelArguments,
    data_args: DataArguments,
    optim_args: OptimArguments,
    run_args: RunArguments,
    probe_args: ProbeArguments,
) -> dict:
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
        "data": {k: v for k, v in asdict(data_args).items() if k != "num_proc"},
    }
    if run_args.gradient_checkpointing:
        model.activation_checkpointing_enable()
    optimizers = build_optimizers(model, optim_args)
    schedulers = build_schedulers(optimizers, optim_args)
    dataloader = DataLoader(
        data.train_blocks, batch_size=optim_args.per_device_batch_size, shuffle=True, drop_last=True,
        collate_fn=DataCollatorForCausalLM(tokenizer.pad_token_id),
    )  # fmt: skip
    if len(dataloader) == 0:
        raise ValueError(
            f"{len(data.train_blocks)} training blocks cannot fill one batch of {optim_args.per_device_batch_size}; "
            "lower per_device_batch_size or block_size, or add data."
        )
    parameters = model.num_parameters()  # counted before prepare: ZeRO-3 leaves empty placeholders
    flops_per_token = training_flops_per_token(model.config, matmul_parameters(model), data_args.block_size)
    model, dataloader, *optimizers = accelerator.prepare(model, dataloader, *optimizers)
    if run_args.torch_compile:
        model = torch.compile(model, backend=run_args.torch_compile_backend, mode=run_args.torch_compile_mode)
    progress = TrainingProgress()
    for obj in (*schedulers, progress):  # not prepared: Accelerate would step schedulers once per process
        accelerator.register_for_checkpointing(obj)
    config_values = {**asdict(model_args), **asdict(data_args), **asdict(optim_args), **asdict(run_args)}
    accelerator.init_trackers("tinyllm", config={k: v for k, v in config_values.items() if v is not None})
    unwrapped = accelerator.unwrap_model(model)
    # The random stream of training (dropout) starts here, from the seed, whatever the setup drew from it (a first
    # import of an optional library may); a resumed run replaces it with the checkpoint's.
    set_seed(run_args.seed)
    resume = resolve_checkpoint(run_args.resume_from_checkpoint, output_dir, run_configuration)
    if resume is not None:
        accelerator.load_state(str(resume))
        accelerator.print(f"Resumed from {resume} at step {progress.step}")
    tokens_per_step = (
        optim_args.per_device_batch_size * data_args.block_size * optim_args.gradient_accumulation_steps
        * accelerator.num_processes
    )  # fmt: skip
    peak = matmul_peak_flops(accelerator.device.type, torch.bfloat16 if optim_args.mixed_precision == "bf16" else
                             torch.float32) * accelerator.num_processes  # fmt: skip
    history: list[dict] = []
    last_eval: dict = {}
    started = time.perf_counter()
    batches = _batches(accelerator, dataloader, progress)
    stop_at = optim_args.max_steps if run_args.stop_after_steps is None else min(optim_args.max_steps,
                                                                                 run_args.stop_after_steps)  # fmt: skip
    bar = tqdm(total=optim_args.max_steps, initial=progress.step, disable=not accelerator.is_local_main_process,
               desc="training", dynamic_ncols=True)  # fmt: skip
    window_start, window_tokens = time.perf_counter(), 0

    def evaluate_now() -> dict:
        # Every process evaluates the full set: with sharded weights each forward gathers them from all processes.
        unwrapped.eval()
        metrics = data.evaluate(unwrapped, max_documents=run_args.eval_documents)
        unwrapped.train()
        return metrics if accelerator.is_main_process else {}

    def checkpoint() -> Path:
        return save_checkpoint(accelerator, output_dir, progress.step, run_args.save_total_limit, run_configuration)

    def record_probe() -> None:
        # The probe takes gradients and copies the model: on whole weights, on the main process.
        record = measure_whole(
            accelerator, model, optimizers, lambda m, opts: probe.measure(m, embedding_optimizer(opts, m))
        )
        accelerator.wait_for_everyone()
        if record:
            accelerator.log(record, step=progress.step)
            history.append({"step": progress.step, **record})

    if probe is not None and progress.step == 0:
        record_probe()  # the untrained model: where every learning curve starts
    model.train()
    with StopSignal() as stop:
        while progress.step < stop_at:
            # Starting an epoch draws from the global generator (a worker seed; on several processes, a broadcast of
            # its state); keep data loading off the stream dropout draws from, since a resumed run starts its epoch
            # at another moment than the uninterrupted run did.
            with torch.random.fork_rng(devices=[]):
                micro_batches = [next(batches) for _ in range(optim_args.gradient_accumulation_steps)]
            step_loss = accumulate_gradients(accelerator, model, micro_batches)
            max_norm = optim_args.max_grad_norm if optim_args.max_grad_norm > 0 else float("inf")
            # The global norm before clipping (None under DeepSpeed, whose engine clips by its own config).
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
            # A finite loss can still give non-finite gradients; with fp16 those are the loss scaler's business.
            bad_gradient = (
                grad_norm is not None
                and optim_args.mixed_precision != "fp16"
                and not torch.isfinite(torch.as_tensor(grad_norm))
            )
            if not torch.isfinite(step_loss) or bad_gradient:
                for optimizer in optimizers:
                    optimizer.zero_grad(set_to_none=True)
                progress.skipped_steps += 1
                problem = f"loss={step_loss.item()}, grad_norm={grad_norm}"
                if progress.skipped_steps > run_args.skip_nonfinite_steps:
                    bar.close()
                    raise NonFiniteLossError(
                        f"Non-finite loss or gradient ({problem}) at step {progress.step + 1}; stopped without "
                        f"saving, so the last good checkpoint in {output_dir / 'checkpoints'} is intact. Lower the "
                        "learning rate, use --mixed_precision no, or allow skips with --skip_nonfinite_steps N."
                    )
                accelerator.print(f"Skipped step {progress.step + 1}: {problem}")
                continue
            for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            progress.step += 1
            progress.tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            bar.update(1)

            if progress.step % run_args.logging_steps == 0 or progress.step == stop_at:
                seconds = time.perf_counter() - window_start
                tokens_per_s = window_tokens / seconds
                record = {
                    "loss": step_loss.item(),
                    "learning_rate": schedulers[-1].get_last_lr()[0],
                    "grad_norm": None if grad_norm is None else float(grad_norm),
                    "tokens_per_s": tokens_per_s,
                    "mfu": tokens_per_s * flops_per_token / peak,
                    "tokens_seen": progress.tokens_seen,
                }
                accelerator.log(record, step=progress.step)
                history.append({"step": progress.step, **record})
                bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['learning_rate']:.1e}",
                                tok_s=f"{tokens_per_s:.0f}", mfu=f"{record['mfu']:.1%}")  # fmt: skip
                window_start, window_tokens = time.perf_counter(), 0
            if probe is not None and progress.step % probe_args.probe_steps == 0:
                record_probe()
            if run_args.eval_steps and progress.step % run_args.eval_steps == 0 and progress.step < stop_at:
                last_eval = evaluate_now()
                _log_eval(accelerator, last_eval, progress.step, history)
            if run_args.save_steps and progress.step % run_args.save_steps == 0:
                checkpoint()
            if _stop_agreed(accelerator, stop.received is not None):
                stop.received = stop.received or "a signal to another process"
                accelerator.print(f"{stop.received} received: finishing at step {progress.step} with a checkpoint.")
                break
    bar.close()
    checkpoint()
    finished = progress.step >= optim_args.max_steps
    if finished:
        last_eval = evaluate_now()
        _log_eval(accelerator, last_eval, progress.step, history)
    summary = {
        "finished": finished,
        "stopped_by": stop.received,
        "steps": progress.step,
        "tokens_seen": progress.tokens_seen,
        "skipped_steps": progress.skipped_steps,
        "wall_time_s": time.perf_counter() - started,
        "final_metrics": {k: v for k, v in last_eval.items() if k != "arithmetic_examples"},
        "arithmetic_examples": last_eval.get("arithmetic_examples", []),
        "hardware": {
            "device": str(accelerator.device), "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type), "mixed_precision": optim_args.mixed_precision,
            "torch": torch.__version__, "platform": platform.platform(), "processor": platform.processor(),
        },
        "parameters": parameters,
        "hyperparameters": {
            "preset": model_args.preset if model_args.init_from is None else f"init_from {model_args.init_from}",
            "optimizer": optim_args.optimizer, "learning_rate": optim_args.learning_rate,
            "lr_scheduler_type": optim_args.lr_scheduler_type, "warmup_steps": optim_args.warmup_steps,
            "weight_decay": optim_args.weight_decay, "max_grad_norm": optim_args.max_grad_norm,
            "per_device_batch_size": optim_args.per_device_batch_size, "block_size": data_args.block_size,
            "gradient_accumulation_steps": optim_args.gradient_accumulation_steps, "max_steps": optim_args.max_steps,
            "mixed_precision": optim_args.mixed_precision, "seed": run_args.seed, "dataset": data_args.dataset,
        },
    }  # fmt: skip
    final = whole_model(accelerator, model) if finished else None
    if finished and accelerator.is_main_process:
        summary["model_dir"] = str(save_final_model(final, tokenizer, output_dir / "model", summary, history,
                                                    data.floor_bits_per_byte))  # fmt: skip
        if run_args.push_to_hub:
            from ..hub import push_folder

            push_folder(output_dir / "model", run_args.hub_model_id)
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


__all__ = ["JsonlTracker", "NonFiniteLossError", "accumulate_gradients", "train"]
