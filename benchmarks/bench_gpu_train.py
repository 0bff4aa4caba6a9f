"""Training throughput, side by side in one run: TinyLLM through its own Accelerate loop and through transformers'
Trainer, the same weights as transformers' LlamaForCausalLM through the same Trainer, and nanoGPT's GPT in a raw loop.

    python benchmarks/bench_gpu_train.py            # CPU: a quick correctness smoke test (debug preset, fp32)
    python benchmarks/bench_gpu_train.py --output_json gpu.json   # CUDA: small preset, 16 x 1024, bf16, all cells
    python benchmarks/bench_gpu_train.py --arms tinyllm-loop,llama-trainer --attn_implementations sdpa --compile on

Every arm sees the same packed TinyWorld blocks in the same order (the order the loop's seeded Accelerate sampler
draws; the Trainer arms get those blocks pre-ordered with `train_sampling_strategy="sequential"`, nanoGPT gets them
as pre-collated batches), at the same model size and precision, with fp32 master weights (bf16 through autocast),
AdamW (fused on CUDA), gradient clipping at 1.0 and the loss read back every `--logging_steps` steps.

Steps: `--warmup_steps` untimed (compilation happens here), then `--steps` timed, then `--sync_steps` counted (twice
on CUDA). The timed window runs from the end of step W's update to the end of step W+S's (torch.cuda.synchronize at
both edges), so it holds S whole iterations: batch fetch, step, and the periodic work (logging) of steps W..W+S-1.
Host syncs are counted after the timed window, never inside it: on CUDA first with torch.cuda.set_sync_debug_mode
("warn"; sees compiled code too), then with hf_tinyllm's `HostSyncCounter` (a TorchDispatchMode: its Python call
per ATen op would slow the timed steps, and torch.compile steps aside while it is active, so in compiled cells it
counts the eager path). Per arm: tokens/s per device, MFU, peak memory, syncs per step, dynamo graph breaks and
graphs (and how many graphs were compiled inside the timed window: recompiles), and the ratio to `llama-trainer` of
the same attention/compile cell.

Each cell's wall time (setup and compilation included) is printed as it finishes, and the JSON is rewritten after
every cell, so a run cut short still leaves its finished cells.
"""

import contextlib
import gc
import hashlib
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import accelerate
import torch
import transformers
from transformers import HfArgumentParser, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback
from transformers.utils import logging as hf_logging

from hf_tinyllm.convert import to_llama
from hf_tinyllm.data.packing import DataCollatorForCausalLM
from hf_tinyllm.training import loop as loop_module
from hf_tinyllm.training.arguments import DataArguments, ModelArguments, OptimArguments, RunArguments
from hf_tinyllm.training.data import prepare_training_data, training_collator
from hf_tinyllm.training.loop import StepHooks
from hf_tinyllm.training.model import build_training_model
from hf_tinyllm.training.syncs import HostSyncCounter
from hf_tinyllm.training.throughput import matmul_parameters, matmul_peak_flops, training_flops_per_token

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/: machine.py and peers/
from machine import cpu_name
from peers.nanogpt_model import GPT, GPTConfig

ARMS = ("tinyllm-loop", "tinyllm-trainer", "llama-trainer", "nanogpt-raw")
REFERENCE_ARM = "llama-trainer"
NANOGPT_ATTENTION = "nanogpt-sdpa"  # nanoGPT calls F.scaled_dot_product_attention(is_causal=True) itself
# A cell's attention name -> (the model's attn_implementation, DataArguments fields of the cell: the collator the
# loop and the Trainer arms build through `training_collator`). A new kernel is one line here (and, when it needs a
# package or a device, one in `attention_unavailable`).
ATTENTION_CELLS: dict[str, tuple[str, dict]] = {
    "sdpa": ("sdpa", {}),
    "flex_attention": ("flex_attention", {}),
    "torch_varlen": ("torch_varlen", {"flatten_batches": True}),
    "flash_attention_2": ("flash_attention_2", {"flatten_batches": True}),
}
H100_BF16_DENSE_TFLOPS = 989.0  # H100/H200 SXM datasheet, dense bf16 (no sparsity)
NANOGPT_SHAPE_NOTE = (
    "nanogpt-raw is GPT-2-shaped (GELU MLP of 4 x n_embd, LayerNorm without bias, learned positions, full multi-head "
    "attention, causal over the whole block, documents NOT kept apart) at TinyLLM's n_layer/n_head/n_embd/vocab; the "
    "TinyLLM preset is Llama-shaped (SwiGLU, RMSNorm, RoPE, its key/value heads, documents kept apart when "
    "--document_positions). For a closer match: --tinyllm_overrides "
    '\'{"position_embedding_type":"learned","norm_type":"layernorm","mlp_type":"gelu","intermediate_size":3072}\' '
    "(llama-trainer is then skipped: Llama has no such shape) and --document_positions false."
)


@dataclass
class GpuTrainArguments:
    arms: str = field(default=",".join(ARMS), metadata={"help": f"Comma list of {', '.join(ARMS)}."})
    attn_implementations: str = field(
        default="sdpa,flex_attention",
        metadata={"help": f"Comma list of {', '.join(ATTENTION_CELLS)}; unavailable ones are skipped with a reason."},
    )
    compile: str | None = field(
        default=None, metadata={"help": "Comma list of off,on (torch.compile, inductor). Default: off,on on CUDA, off "
                                "on a CPU (inductor's C++ builds take minutes on a small machine)."}
    )  # fmt: skip
    cells: str | None = field(
        default=None,
        metadata={"help": "Comma list of arm:attention:off|on to run instead of the full cross (e.g. a GPU lease's "
                  "few minutes): 'tinyllm-loop:torch_varlen:on,llama-trainer:sdpa:off'."},
    )  # fmt: skip
    preset: str | None = field(default=None, metadata={"help": "TinyLLM preset. Default: small on CUDA, debug on CPU."})
    tinyllm_overrides: str | None = field(
        default=None, metadata={"help": "JSON of TinyLLMConfig fields over the preset (TinyLLM and hence Llama)."}
    )
    seq_len: int | None = field(default=None, metadata={"help": "Block size. Default: 1024 on CUDA, 128 on CPU."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Blocks per step per device. Default: 16 on CUDA, 8 on CPU."}
    )
    precision: str | None = field(default=None, metadata={"help": "bf16 (autocast) or fp32. Default: bf16 on CUDA."})
    warmup_steps: int | None = field(default=None, metadata={"help": "Untimed steps first. Default: 5 CUDA, 2 CPU."})
    steps: int | None = field(default=None, metadata={"help": "Timed steps. Default: 20 on CUDA, 8 on CPU."})
    logging_steps: int = field(
        default=0, metadata={"help": "Every arm reads its loss back every N steps; 0: gcd(warmup_steps, steps)."}
    )
    sync_steps: int | None = field(
        default=None,
        metadata={"help": "Steps counted for host syncs after the timed ones (twice on CUDA: two counters); default: "
                  "logging_steps."},
    )  # fmt: skip
    vocab_size: int = field(
        default=2048, metadata={"help": "Tokenizer vocabulary to train (TinyWorld's BPE stops near 850 tokens)."}
    )
    tinyworld_documents: int = field(
        default=0, metadata={"help": "TinyWorld training documents; 0: enough for every step without repeating."}
    )
    document_positions: bool = field(
        default=True, metadata={"help": "Packed documents kept apart (positions restart per document)."}
    )
    learning_rate: float = field(default=1e-3)
    peak_tflops: float = field(
        default=H100_BF16_DENSE_TFLOPS,
        metadata={"help": "Peak for MFU on CUDA with bf16 (default: H100/H200 SXM dense bf16 datasheet); CPU and fp32 "
                  "use the measured matmul peak."},
    )  # fmt: skip
    device: str = field(default="auto", metadata={"help": "auto, cuda or cpu."})
    seed: int = field(default=0)
    work_dir: str | None = field(default=None, metadata={"help": "Scratch folder (default: a temporary one)."})
    output_json: str | None = field(default=None, metadata={"help": "Write the results here (after every cell)."})

    def resolve(self, device: torch.device) -> None:
        """Fill the device-dependent defaults and check the choices."""
        cuda = device.type == "cuda"
        defaults = dict(
            compile="off,on" if cuda else "off", preset="small" if cuda else "debug", seq_len=1024 if cuda else 128,
            batch_size=16 if cuda else 8, precision="bf16" if cuda else "fp32", warmup_steps=5 if cuda else 2,
            steps=20 if cuda else 8,
        )  # fmt: skip
        for name, value in defaults.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.precision not in ("bf16", "fp32"):
            raise SystemExit(f"--precision {self.precision!r}: choose bf16 or fp32.")
        for name in ("seq_len", "batch_size", "warmup_steps", "steps"):
            if getattr(self, name) < 1:
                raise SystemExit(f"--{name} must be at least 1 (the timed window starts at the end of a warm-up step).")
        if not self.logging_steps:
            self.logging_steps = math.gcd(self.warmup_steps, self.steps)
        if self.sync_steps is None:
            self.sync_steps = self.logging_steps
        # Counted after the timed steps: on CUDA twice (CUDA's sync debug mode, then HostSyncCounter), else once.
        self._sync_phases = (2 if cuda else 1) if self.sync_steps else 0
        unknown = set(self.arm_list()) - set(ARMS)
        if unknown:
            raise SystemExit(f"--arms: unknown {sorted(unknown)}; choose from {', '.join(ARMS)}.")
        unknown = set(self.attention_list()) - set(ATTENTION_CELLS)
        if unknown:
            raise SystemExit(
                f"--attn_implementations: unknown {sorted(unknown)}; choose from {', '.join(ATTENTION_CELLS)}."
            )
        if set(self.compile_list()) - {"off", "on"}:
            raise SystemExit(f"--compile {self.compile!r}: a comma list of off and on.")

    def arm_list(self) -> list[str]:
        return _items(self.arms)

    def attention_list(self) -> list[str]:
        return _items(self.attn_implementations)

    def compile_list(self) -> list[str]:
        return _items(self.compile)

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps + self.sync_steps * self._sync_phases


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def attention_unavailable(name: str, device: torch.device) -> str | None:
    """Why a cell's attention cannot train on this machine, or None."""
    if name == "flex_attention":
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError as error:
            return f"torch has no flex_attention ({error})"
        if device.type != "cuda":
            return "FlexAttention has no backward on a CPU (torch raises NotImplementedError)"
    if name == "torch_varlen":
        try:
            from hf_tinyllm.training.varlen_attention import varlen_attention_available
        except ImportError as error:
            return f"hf_tinyllm has no torch_varlen attention ({error})"
        if not varlen_attention_available():
            return "needs torch.nn.attention.varlen.varlen_attn and a CUDA device"
    if name == "flash_attention_2":
        import importlib.util

        if device.type != "cuda" or importlib.util.find_spec("flash_attn") is None:
            return "needs the flash_attn package and a CUDA device"
    if ATTENTION_CELLS[name][1].get("flatten_batches"):
        import inspect

        if "flatten" not in inspect.signature(DataCollatorForCausalLM).parameters:
            return "DataCollatorForCausalLM has no flatten option yet"
    return None


# --- measurement ------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def dynamo_counts() -> tuple[int, int]:
    """(graph breaks, graphs compiled) since the last `counters.clear()`."""
    from torch._dynamo.utils import counters

    return sum(counters["graph_break"].values()), counters["stats"]["unique_graphs"]


class CudaSyncCounter:
    """Synchronizing CUDA calls, as `torch.cuda.set_sync_debug_mode("warn")` reports them (one warning each): unlike
    `HostSyncCounter` it also sees those of compiled code, and it leaves torch.compile alone."""

    def __enter__(self) -> "CudaSyncCounter":
        self._catch = warnings.catch_warnings(record=True)
        self.records = self._catch.__enter__()
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc) -> None:
        torch.cuda.set_sync_debug_mode("default")
        self._catch.__exit__(*exc)

    def syncs(self) -> list:
        return [w for w in self.records if "synchroniz" in str(w.message).lower()]

    @property
    def total(self) -> int:
        return len(self.syncs())

    def origins(self) -> dict[str, int]:
        return dict(Counter(f"{w.filename}:{w.lineno}" for w in self.syncs()).most_common(8))


class StepWindow:
    """Called at the end of every optimizer step's update (`step_end(step)`, 1-based). Phases after W warm-up steps:
    S timed steps (from the end of step W to the end of step W+S; peak memory and dynamo's counts read there); on
    CUDA, C steps under `CudaSyncCounter`; then C steps under `HostSyncCounter`. A dispatch mode makes torch.compile
    step aside, so in compiled cells the HostSyncCounter steps run (and are counted) eagerly."""

    def __init__(self, device: torch.device, warmup: int, steps: int, sync_steps: int) -> None:
        self.device, self.warmup, self.steps, self.sync_steps = device, warmup, steps, sync_steps
        self.start: float | None = None
        self.seconds: float | None = None
        self.peak_memory: int | None = None
        self.counts_at_start = self.counts_at_end = (0, 0)
        timed_end = warmup + steps
        self.phases: list[tuple[str, int, int]] = []  # (name, first step, last step)
        if sync_steps and device.type == "cuda":
            self.phases.append(("cuda", timed_end + 1, timed_end + sync_steps))
        if sync_steps:
            first = timed_end + 1 + len(self.phases) * sync_steps
            self.phases.append(("aten", first, first + sync_steps - 1))
        self.total_steps = timed_end + len(self.phases) * sync_steps
        self.counters: dict[str, object] = {}
        self.errors: dict[str, str] = {}
        self._active: tuple[str, object] | None = None

    def step_end(self, step: int) -> None:
        if self._active is not None and step == self._phase_last(self._active[0]):
            self._leave()
        if step == self.warmup:
            synchronize(self.device)
            self.counts_at_start = dynamo_counts()
            self.start = time.perf_counter()
        elif step == self.warmup + self.steps:
            synchronize(self.device)
            self.seconds = time.perf_counter() - self.start
            self.counts_at_end = dynamo_counts()
            if self.device.type == "cuda":
                self.peak_memory = torch.cuda.max_memory_allocated()
        for name, first, _ in self.phases:
            if step == first - 1:
                self._enter(name)

    def _phase_last(self, name: str) -> int:
        return next(last for n, _, last in self.phases if n == name)

    def _enter(self, name: str) -> None:
        counter = CudaSyncCounter() if name == "cuda" else HostSyncCounter()
        try:
            counter.__enter__()
        except Exception as error:
            self.errors[name] = f"{type(error).__name__}: {error}"
            return
        self._active = (name, counter)

    def _leave(self) -> None:
        name, counter = self._active
        self._active = None
        counter.__exit__(None, None, None)
        self.counters[name] = counter

    def close(self) -> None:
        """Leave an active sync counter (also after an error inside its steps)."""
        if self._active is not None:
            self._leave()

    def result(self, tokens_per_step: int, flops_per_token: float, peak_flops: float) -> dict:
        if self.seconds is None:
            raise RuntimeError("the run ended before the timed window did")
        tokens_per_s = self.steps * tokens_per_step / self.seconds
        aten, cuda = self.counters.get("aten"), self.counters.get("cuda")
        return {
            "tokens_per_s": tokens_per_s,
            "mfu": tokens_per_s * flops_per_token / peak_flops,
            "timed_s": self.seconds,
            "tokens": self.steps * tokens_per_step,
            "peak_memory_gib": None if self.peak_memory is None else self.peak_memory / 2**30,
            "syncs_per_step": aten.total / self.sync_steps if aten is not None else None,
            "sync_ops": dict(aten.by_op) if aten is not None else {},
            "sync_origins": dict(aten.origins.most_common(8)) if aten is not None else {},
            "cuda_syncs_per_step": cuda.total / self.sync_steps if cuda is not None else None,
            "cuda_sync_origins": cuda.origins() if cuda is not None else {},
            "sync_count_errors": self.errors,
            "graph_breaks": self.counts_at_end[0],
            "graphs": self.counts_at_end[1],
            "new_graphs_in_window": self.counts_at_end[1] - self.counts_at_start[1],
            "flops_per_token": flops_per_token,
        }


def batch_digest(input_ids: torch.Tensor) -> str:
    return hashlib.sha256(input_ids.reshape(-1).to(torch.int64).numpy().tobytes()).hexdigest()


class RecordingCollator:
    """Wraps a collator; appends a digest of every batch's input ids to `path`, from whichever process collates (the
    main one, or a DataLoader worker on CUDA): a few microseconds a batch, off the device's path."""

    def __init__(self, path: Path, collator=None) -> None:
        self.path, self.collator = path, collator

    def __call__(self, examples):
        batch = self.collator(examples)
        with self.path.open("a") as f:
            f.write(batch_digest(batch["input_ids"]) + "\n")
        return batch


def fingerprint(digests: list[str], count: int) -> str | None:
    """One digest of the first `count` batches, in order; None if fewer were seen."""
    if len(digests) < count:
        return None
    return hashlib.sha256("\n".join(digests[:count]).encode()).hexdigest()[:16]


def recorded_fingerprint(path: Path, count: int) -> str | None:
    return fingerprint(path.read_text().split(), count) if path.is_file() else None


def loop_order(num_blocks: int, batch_size: int, steps: int, seed: int) -> tuple[list[int], int]:
    """The block indices the Accelerate loop trains on, in order: its DataLoader (shuffle=True, drop_last=True) is
    prepared with `use_seedable_sampler=True` after `set_seed(seed)`, so epoch e is a permutation drawn by
    `SeedableRandomSampler` from seed + e. Returns the first `steps` batches' indices and the epochs they span."""
    from accelerate.data_loader import SeedableRandomSampler

    order: list[int] = []
    epoch = 0
    while len(order) < steps * batch_size:
        sampler = SeedableRandomSampler(range(num_blocks), data_seed=seed)
        sampler.set_epoch(epoch)
        permutation = list(sampler)
        order += permutation[: len(permutation) // batch_size * batch_size]
        epoch += 1
    return order[: steps * batch_size], epoch


_ENVIRONMENT_AT_START = frozenset(os.environ)


def reset_between_arms(device: torch.device) -> None:
    """A clean slate for the next arm: no compiled code or dynamo counts, no Accelerate state, no cached memory."""
    import torch._dynamo
    from accelerate.state import AcceleratorState, GradientState
    from torch._dynamo.utils import counters

    for name in [n for n in os.environ if n.startswith("ACCELERATE_DYNAMO_") and n not in _ENVIRONMENT_AT_START]:
        del os.environ[name]  # (set by TrainingArguments(torch_compile=True) with an older accelerate)
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    torch._dynamo.reset()
    counters.clear()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# --- the arms -----------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What every cell shares."""

    args: GpuTrainArguments
    device: torch.device
    data_args: DataArguments  # the base data arguments, with the folder of the tokenizer trained once
    data: object  # TrainingData
    order: list[int]  # the block indices of every step's batch, in order
    peak_flops: float
    work_dir: Path
    config: object = None  # the TinyLLM config every arm is sized from
    flops_per_token: float = 0.0  # of TinyLLM (and of its Llama copy: the same matmuls)

    @property
    def tokens_per_step(self) -> int:
        return self.args.batch_size * self.args.seq_len

    def model_args(self, attn_implementation: str) -> ModelArguments:
        return ModelArguments(preset=self.args.preset, model_overrides=self.args.tinyllm_overrides,
                              attn_implementation=attn_implementation)  # fmt: skip

    def window(self) -> StepWindow:
        a = self.args
        window = StepWindow(self.device, a.warmup_steps, a.steps, a.sync_steps)
        assert window.total_steps == a.total_steps
        return window

    def tinyllm(self, attn_implementation: str):
        """A fresh TinyLLM as the loop builds it (same seed, so the same initial weights)."""
        transformers.set_seed(self.args.seed)
        return build_training_model(self.model_args(attn_implementation), self.data.tokenizer)

    def digests(self, name: str) -> Path:
        path = self.work_dir / f"batches-{name}.txt"
        path.unlink(missing_ok=True)
        return path


def cell_name(attention: str, compiled: bool) -> str:
    return f"{attention}-{'compiled' if compiled else 'eager'}"


def run_loop_arm(ctx: Context, attention: str, compiled: bool) -> dict:
    """TinyLLM through `hf_tinyllm.training.loop.train` itself, timed through its step hooks."""
    args = ctx.args
    implementation, data_overrides = ATTENTION_CELLS[attention]
    name = f"tinyllm-loop-{cell_name(attention, compiled)}"
    output_dir = ctx.work_dir / name
    data_args = replace(ctx.data_args, **data_overrides)
    optim_args = OptimArguments(
        learning_rate=args.learning_rate, max_steps=args.total_steps + 1, per_device_batch_size=args.batch_size,
        mixed_precision="bf16" if args.precision == "bf16" else "no",
    )  # fmt: skip
    # stop_after_steps one short of max_steps: the run ends with a checkpoint but without the final evaluation and
    # model export, which measure nothing here.
    run_args = RunArguments(
        output_dir=str(output_dir), seed=args.seed, eval_steps=0, eval_documents=1, logging_steps=args.logging_steps,
        save_steps=0, report_to="none", torch_compile=compiled, stop_after_steps=args.total_steps,
    )  # fmt: skip
    window = ctx.window()

    class Hooks(StepHooks):
        def on_step_end(self, step: int) -> None:
            window.step_end(step)

    # The loop builds its collator with `training_collator`; wrapped here only to record which blocks it trained on.
    digests = ctx.digests(name)
    recorder = RecordingCollator(digests)
    original = getattr(loop_module, "training_collator", None)

    def recording_collator(*a, **k):
        recorder.collator = original(*a, **k)
        return recorder

    if original is not None:
        loop_module.training_collator = recording_collator
    try:
        loop_module.train(ctx.model_args(implementation), data_args, optim_args, run_args, hooks=[Hooks()])
    finally:
        window.close()
        if original is not None:
            loop_module.training_collator = original
    row = window.result(ctx.tokens_per_step, ctx.flops_per_token, ctx.peak_flops)
    row["token_fingerprint"] = recorded_fingerprint(digests, args.total_steps)
    row["logged_tokens_per_s"] = logged_tokens_per_s(output_dir / "logs" / "metrics.jsonl", args)
    shutil.rmtree(output_dir, ignore_errors=True)  # a checkpoint with the optimizer state: 12 bytes a parameter
    return row


def logged_tokens_per_s(metrics_file: Path, args: GpuTrainArguments) -> float | None:
    """The loop's own figure for the timed steps, from the logging windows it wrote to metrics.jsonl (each window:
    from after one log to just before the next log's read-back). None if no whole windows cover exactly those
    steps."""
    if not metrics_file.is_file() or args.warmup_steps % args.logging_steps or args.steps % args.logging_steps:
        return None
    first, last = args.warmup_steps, args.warmup_steps + args.steps
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    windows = [r for r in records if "tokens_per_s" in r and first < r["step"] <= last]
    if len(windows) != args.steps // args.logging_steps:
        return None
    seconds = sum(args.logging_steps / r["tokens_per_s"] for r in windows)  # per token of one step
    return args.steps / seconds


class WindowCallback(TrainerCallback):
    def __init__(self, window: StepWindow) -> None:
        self.window = window

    def on_step_end(self, args, state, control, **kwargs):
        self.window.step_end(state.global_step)


def run_trainer_arm(ctx: Context, attention: str, compiled: bool, llama: bool) -> dict:
    """TinyLLM, or its exact Llama conversion, through a plain `transformers.Trainer`."""
    args = ctx.args
    implementation, data_overrides = ATTENTION_CELLS[attention]
    model = ctx.tinyllm(implementation)
    if llama:
        model = to_llama(model)  # raises ValueError (the reason) for a config Llama cannot express
        model.config.use_cache = False
    data_args = replace(ctx.data_args, **data_overrides)
    name = f"{'llama' if llama else 'tinyllm'}-trainer-{cell_name(attention, compiled)}"
    digests = ctx.digests(name)
    collator = RecordingCollator(digests, training_collator(ctx.data, data_args, implementation, args.batch_size))
    dataset = ctx.data.train_blocks.select(ctx.order).flatten_indices()
    cuda = ctx.device.type == "cuda"
    optim_args = OptimArguments(max_steps=args.total_steps + 1)  # the loop's defaults (its schedule's warmup)
    training_args = TrainingArguments(
        output_dir=str(ctx.work_dir / name), max_steps=args.total_steps, per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate, weight_decay=optim_args.weight_decay, adam_beta1=optim_args.adam_beta1,
        adam_beta2=optim_args.adam_beta2, adam_epsilon=optim_args.adam_epsilon, max_grad_norm=optim_args.max_grad_norm,
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": optim_args.min_lr_ratio},
        warmup_steps=optim_args.warmup_steps, optim="adamw_torch_fused" if cuda else "adamw_torch",
        bf16=args.precision == "bf16", torch_compile=compiled,  # (a torch_compile_backend would turn it on)
        logging_strategy="steps", logging_steps=args.logging_steps, report_to="none", save_strategy="no",
        eval_strategy="no", seed=args.seed, train_sampling_strategy="sequential", dataloader_drop_last=True,
        remove_unused_columns=False, disable_tqdm=True,
        # The loop's loader (hf_tinyllm.training.loop.loader_workers): one worker collating ahead into pinned
        # memory, copied with non_blocking, on CUDA; the main process on a CPU.
        dataloader_num_workers=1 if cuda else 0, dataloader_pin_memory=cuda, dataloader_persistent_workers=cuda,
        accelerator_config={"non_blocking": cuda},
    )  # fmt: skip
    window = ctx.window()
    trainer = Trainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collator,
        callbacks=[WindowCallback(window)],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)  # no log lines printed inside the window
    try:
        trainer.train()
    finally:
        window.close()
    row = window.result(ctx.tokens_per_step, ctx.flops_per_token, ctx.peak_flops)
    row["token_fingerprint"] = recorded_fingerprint(digests, args.total_steps)
    del trainer, model
    shutil.rmtree(ctx.work_dir / name, ignore_errors=True)
    return row


def run_nanogpt_arm(ctx: Context, compiled: bool) -> dict:
    """nanoGPT's GPT at TinyLLM's shape, in a raw loop as nanoGPT's train.py runs it."""
    args, device, config = ctx.args, ctx.device, ctx.config
    gpt_config = GPTConfig(
        block_size=args.seq_len,
        vocab_size=config.vocab_size,
        n_layer=config.num_hidden_layers,
        n_head=config.num_attention_heads,
        n_embd=config.hidden_size,
        dropout=0.0,
        bias=False,
    )
    torch.manual_seed(args.seed)
    with contextlib.redirect_stdout(io.StringIO()) as printed:  # nanoGPT prints its parameter counts
        model = GPT(gpt_config).to(device)
        optimizer = model.configure_optimizers(weight_decay=OptimArguments.weight_decay,
                                               learning_rate=args.learning_rate, betas=(0.9, 0.95),
                                               device_type=device.type)  # fmt: skip
    fused = "using fused AdamW: True" in printed.getvalue()
    # FLOPs: nanoGPT's own count (6 N + 12 L d T with N less the position table, a lookup); the tied head counts once.
    n_matmul = sum(p.numel() for p in model.parameters()) - model.transformer.wpe.weight.numel()
    shape = SimpleNamespace(num_hidden_layers=gpt_config.n_layer, num_attention_heads=gpt_config.n_head,
                            head_dim=gpt_config.n_embd // gpt_config.n_head)  # fmt: skip
    flops = training_flops_per_token(shape, n_matmul, args.seq_len)
    step_model = torch.compile(model) if compiled else model
    # The same blocks in the same order, collated once on the host (nanoGPT's get_batch: pinned, non_blocking).
    collate = DataCollatorForCausalLM(ctx.data.tokenizer.pad_token_id)
    blocks = ctx.data.train_blocks
    batches, digests = [], []
    for start in range(0, len(ctx.order), args.batch_size):
        batch = collate([blocks[i] for i in ctx.order[start : start + args.batch_size]])
        # nanoGPT's targets are the next tokens, aligned with the inputs, -1 ignored (the Hugging Face models shift
        # `labels` themselves and ignore -100): the same predicted tokens, T - 1 per block.
        x = batch["input_ids"]
        y = torch.cat([batch["labels"][:, 1:], torch.full_like(x[:, :1], -100)], dim=1)
        y = y.masked_fill(y == -100, -1)
        digests.append(batch_digest(x))
        if device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        batches.append((x, y))

    def autocast():
        return (
            torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16" else contextlib.nullcontext()
        )

    window = ctx.window()
    model.train()
    try:
        for step, (x, y) in enumerate(batches, start=1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast():
                _, loss = step_model(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window.step_end(step)
            if step % args.logging_steps == 0:
                loss.item()  # nanoGPT's train.py reads the loss back every log_interval
    finally:
        window.close()
    row = window.result(ctx.tokens_per_step, flops, ctx.peak_flops)
    row["token_fingerprint"] = fingerprint(digests, args.total_steps)
    row["fused_adamw"] = fused
    row["parameters"] = sum(p.numel() for p in model.parameters())
    del model, step_model, optimizer, batches
    return row


# --- the run ------------------------------------------------------------------------------------------------------


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / 2**30
        hardware = f"{torch.cuda.get_device_name(device)} ({memory:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        hardware = f"{cpu_name()}, {torch.get_num_threads()} threads"
    return (f"{hardware} | torch {torch.__version__} | transformers {transformers.__version__} | accelerate "
            f"{accelerate.__version__} | python {sys.version.split()[0]}")  # fmt: skip


def cells(args: GpuTrainArguments) -> list[tuple[str, str, bool]]:
    """(arm, attention, compiled) in run order: `--cells` as given, or per compile setting, per attention every
    Trainer/loop arm; nanoGPT once per compile setting (its own attention)."""
    if args.cells:
        chosen = [tuple(cell.split(":")) for cell in _items(args.cells)]
        bad = [c for c in chosen if len(c) != 3 or c[0] not in ARMS or c[2] not in ("off", "on")]
        if bad:
            raise SystemExit(f"--cells: {bad} are not arm:attention:off|on with an arm of {', '.join(ARMS)}.")
        return [(arm, attention, setting == "on") for arm, attention, setting in chosen]
    out = []
    for setting in args.compile_list():
        compiled = setting == "on"
        for attention in args.attention_list():
            out += [(arm, attention, compiled) for arm in args.arm_list() if arm != "nanogpt-raw"]
        if "nanogpt-raw" in args.arm_list():
            out.append(("nanogpt-raw", NANOGPT_ATTENTION, compiled))
    return out


def run_cell(ctx: Context, arm: str, attention: str, compiled: bool) -> dict:
    if arm == "tinyllm-loop":
        return run_loop_arm(ctx, attention, compiled)
    if arm in ("tinyllm-trainer", "llama-trainer"):
        return run_trainer_arm(ctx, attention, compiled, llama=arm == "llama-trainer")
    return run_nanogpt_arm(ctx, compiled)


def add_ratios(rows: list[dict]) -> None:
    """Each arm's tokens/s over llama-trainer's in the same cell (nanoGPT: against llama-trainer with sdpa)."""
    reference = {(r["attention"], r["compile"]): r["tokens_per_s"] for r in rows
                 if r["arm"] == REFERENCE_ARM and r["status"] == "ok"}  # fmt: skip
    for row in rows:
        attention = "sdpa" if row["attention"] == NANOGPT_ATTENTION else row["attention"]
        base = reference.get((attention, row["compile"]))
        row["ratio_to_llama_trainer"] = row["tokens_per_s"] / base if base and row["status"] == "ok" else None


def write_json(path: str | None, report: dict) -> None:
    if path:
        Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def print_table(rows: list[dict], cpu: bool) -> None:
    label = " (CPU smoke test: not a GPU figure)" if cpu else ""
    print(f"\n| arm | attention | compile | tok/s per device{label} | MFU | peak mem GiB | ATen syncs/step | CUDA "
          "syncs/step | graph breaks | graphs (new in window) | vs llama-trainer | cell wall s |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        head = f"| {r['arm']} | {r['attention']} | {r['compile']} |"
        if r["status"] != "ok":
            print(f"{head} {r['status']}: {r['reason']} | | | | | | | | {r['wall_s']:.1f} |")
            continue
        ratio = "" if r["ratio_to_llama_trainer"] is None else f"{r['ratio_to_llama_trainer']:.3f}"
        print(f"{head} {r['tokens_per_s']:,.0f} | {r['mfu']:.1%} | {_number(r['peak_memory_gib'], '.2f')} | "
              f"{_number(r['syncs_per_step'], '.2f')} | {_number(r['cuda_syncs_per_step'], '.2f')} | "
              f"{r['graph_breaks']} | {r['graphs']} (+{r['new_graphs_in_window']}) | {ratio} | "
              f"{r['wall_s']:.1f} |")  # fmt: skip


def run(args: GpuTrainArguments) -> dict:
    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    args.resolve(device)
    cpu = device.type != "cuda"
    if not cpu:  # as the loop does (allow_tf32): the same for every arm
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if not cpu and args.precision == "bf16":
        peak, peak_source = (
            args.peak_tflops * 1e12,
            f"datasheet {args.peak_tflops:g} TFLOP/s dense bf16 (--peak_tflops)",
        )
    else:
        peak = matmul_peak_flops(device.type, torch.bfloat16 if args.precision == "bf16" else torch.float32)
        peak_source = f"measured {device.type} {args.precision} matmul peak, {peak / 1e9:.0f} GFLOP/s"
    machine = machine_line(device)
    print(f"Training throughput, one run | {machine}")
    if cpu:
        print("CPU smoke test: the figures below check that every arm runs; they are NOT GPU figures.")

    owned = args.work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="bench_gpu_train-") if owned else args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    blocks_needed = (args.total_steps + 1) * args.batch_size  # + the batch Accelerate's loader fetches ahead
    documents = args.tinyworld_documents or max(200, math.ceil(blocks_needed * args.seq_len / 15))  # ~19 tokens each
    data_args = DataArguments(dataset="tinyworld", tinyworld_documents=documents, block_size=args.seq_len,
                              vocab_size=args.vocab_size, document_positions=args.document_positions)  # fmt: skip
    data = prepare_training_data(data_args, contextlib.nullcontext, work_dir / "data", args.seed)
    # The loop rebuilds the data itself: with this tokenizer (not one it trains) it gets the very same blocks.
    data_args = replace(data_args, tokenizer=str(work_dir / "data" / "tokenizer"))
    order, epochs = loop_order(len(data.train_blocks), args.batch_size, args.total_steps, args.seed)
    ctx = Context(args, device, data_args, data, order, peak, work_dir)
    model = ctx.tinyllm("sdpa")
    ctx.config = model.config
    ctx.flops_per_token = training_flops_per_token(model.config, matmul_parameters(model), args.seq_len)
    parameters = model.num_parameters()
    del model
    timed_end = args.warmup_steps + args.steps
    notes = [
        f"MFU peak: {peak_source}. FLOPs per token: 6 N + 12 L d T (full causal block, whatever the document "
        "masking skips), N without lookups (an untied input embedding, nanoGPT's position table).",
        f"Timed window: the end of step {args.warmup_steps} to the end of step {timed_end} (synchronized): "
        f"{args.steps} whole iterations (batch fetch, step, periodic work); every arm reads its loss back every "
        f"{args.logging_steps} steps. Compilation happens in the warm-up steps; 'new in window' counts graphs "
        "compiled inside the timed window (recompiles).",
        f"Syncs per step, over {args.sync_steps} steps each after the timed window (holding one loss read-back when "
        "sync_steps = logging_steps): ATen = hf_tinyllm's HostSyncCounter (a dispatch mode, under which torch.compile "
        "steps aside: in compiled cells these steps run, and are counted, eagerly); CUDA = "
        "torch.cuda.set_sync_debug_mode('warn') (compiled code included; CUDA only).",
        f"Data: {len(data.train_blocks)} packed TinyWorld blocks of {args.seq_len} tokens from {documents} documents, "
        f"document positions {'on' if args.document_positions else 'off'}; {args.total_steps} batches of "
        f"{args.batch_size} in the loop's seeded order (Accelerate's SeedableRandomSampler, seed {args.seed})"
        + (f", spanning {epochs} epochs (blocks repeat)" if epochs > 1 else ", no block repeated")
        + "; Trainer arms: those blocks pre-ordered with train_sampling_strategy='sequential'; nanoGPT: collated once.",
        f"Model: preset {args.preset}{' + ' + args.tinyllm_overrides if args.tinyllm_overrides else ''}, vocabulary "
        f"{ctx.config.vocab_size} (the tokenizer's {len(data.tokenizer)}, padded), {parameters / 1e6:.2f}M "
        f"parameters; {args.precision}" + (" autocast, fp32 weights" if args.precision == "bf16" else "") + ".",
        NANOGPT_SHAPE_NOTE,
    ]
    report = {"machine": machine, "device": str(device), "cpu_smoke_test": cpu, "args": asdict(args),
              "peak_flops": peak, "peak_source": peak_source, "parameters": parameters, "notes": notes,
              "rows": []}  # fmt: skip
    rows = report["rows"]
    plan = cells(args)
    for index, (arm, attention, compiled) in enumerate(plan, start=1):
        row = {"arm": arm, "attention": attention, "compile": "on" if compiled else "off", "status": "ok"}
        reason = attention_unavailable(attention, device) if attention != NANOGPT_ATTENTION else None
        flattens = ATTENTION_CELLS.get(attention, ("", {}))[1].get("flatten_batches")
        if reason is None and flattens and not args.document_positions:
            reason = "a flattened batch takes its documents' boundaries from --document_positions true"
        reset_between_arms(device)
        cell_start = time.perf_counter()
        if reason is None:
            try:
                row.update(run_cell(ctx, arm, attention, compiled))
            except Exception as error:
                if arm == REFERENCE_ARM and isinstance(error, ValueError) and "not a plain Llama" in str(error):
                    row.update(status="skipped", reason=str(error).split(". Train with")[0])
                else:
                    traceback.print_exc()
                    row.update(status="failed", reason=f"{type(error).__name__}: {error}"[:500])
        else:
            row.update(status="skipped", reason=reason)
        row["wall_s"] = time.perf_counter() - cell_start
        rows.append(row)
        shown = f"{row['tokens_per_s']:,.0f} tok/s" if row["status"] == "ok" else f"{row['status']}: {row['reason']}"
        print(f"[cell {index}/{len(plan)}] {arm} | {attention} | compile {row['compile']}: {shown} | "
              f"{row['wall_s']:.1f} s wall", flush=True)  # fmt: skip
        add_ratios(rows)
        write_json(args.output_json, report)
    reset_between_arms(device)

    ran = [r for r in rows if r["status"] == "ok"]
    prints = {r["token_fingerprint"] for r in ran if r.get("token_fingerprint")}
    unseen = [f"{r['arm']}/{r['attention']}/{r['compile']}" for r in ran if not r.get("token_fingerprint")]
    report["same_tokens"] = len(prints) <= 1  # among the cells whose batches were seen
    report["cells_without_digests"] = unseen
    if ran:
        notes.append(
            ("Every cell trained on the same token stream (batch digests compared)" if len(prints) <= 1
             else f"CELLS SAW DIFFERENT TOKENS ({len(prints)} different streams)")
            + (f"; no digests from {', '.join(unseen)}." if unseen else ".")
        )  # fmt: skip
    for row in ran:
        if row.get("logged_tokens_per_s"):
            notes.append(
                f"tinyllm-loop {row['attention']}/compile {row['compile']}: its own metrics.jsonl windows give "
                f"{row['logged_tokens_per_s']:,.0f} tok/s for the timed steps (each window timed before its log's "
                f"read-back, so not synchronized) vs {row['tokens_per_s']:,.0f} tok/s synchronized by the step hooks."
            )
    report["wall_s"] = time.perf_counter() - started
    write_json(args.output_json, report)

    print(f"\nTinyLLM vs Llama vs nanoGPT, training | {machine}")
    print(f"preset {args.preset}, {parameters / 1e6:.2f}M parameters, {args.batch_size} x {args.seq_len} tokens per "
          f"step per device, {args.precision}, {args.warmup_steps} warm-up + {args.steps} timed + "
          f"{args.total_steps - timed_end} sync-counted steps")  # fmt: skip
    print_table(rows, cpu)
    print()
    for note in notes:
        print(f"- {note}")
    print(f"\nTotal wall time {report['wall_s']:.0f} s.")
    if owned:
        shutil.rmtree(work_dir, ignore_errors=True)
    if any(r["status"] == "failed" for r in rows) or not report["same_tokens"]:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    (bench_args,) = HfArgumentParser(GpuTrainArguments).parse_args_into_dataclasses()
    run(bench_args)
