"""Sharded training (FSDP2, DeepSpeed ZeRO-2/3) under the Accelerate loop: starting it on machines without GPUs, and
whole copies of the model and its optimizer state for what needs whole weights on one process (the learning probes,
the final model folder).

On CPU, Accelerate 1.15 turns neither FSDP nor DeepSpeed on by itself (`PartialState`/`AcceleratorState.__init__`):
- with `cpu=True` its state is MULTI_CPU (gloo) and the FSDP and DeepSpeed plugins are dropped, so an FSDP config
  silently trains with DDP. torch's `fully_shard` runs on CPU over gloo, and Accelerate's FSDP2 code keys on
  `distributed_type` alone, so `configure_sharding` sets the state to FSDP before `prepare`.
- DeepSpeed brings its own CPU accelerator (gloo without oneCCL); Accelerate starts it only on its GPU-style path
  (`cpu=False`) and, finding no GPU backend, needs the backend named (`InitProcessGroupKwargs(backend="gloo")`).
"""

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from accelerate import Accelerator, PartialState, init_empty_weights
from accelerate.utils import (
    DistributedType,
    FullyShardedDataParallelPlugin,
    InitProcessGroupKwargs,
    parse_flag_from_env,
)
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict, set_optimizer_state_dict
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel
from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config

from .arguments import OptimArguments


def device_arguments() -> dict:
    """The `Accelerator` arguments that pick the device: none with an accelerator; without one, DeepSpeed's start-up
    over gloo, or Accelerate's CPU (which forms a multi-process gloo group only when told it runs on CPU)."""
    if torch.accelerator.is_available():
        return {}
    fsdp_version = os.environ.get("FSDP_VERSION", "1")
    if parse_flag_from_env("ACCELERATE_USE_FSDP") and fsdp_version != "2":
        raise ValueError(
            f"fsdp_version={fsdp_version} on CPU: only FSDP2 runs here; set `fsdp_version: 2` in the accelerate "
            "config (configs/accelerate/fsdp2_cpu.yaml)."
        )
    if parse_flag_from_env("ACCELERATE_USE_DEEPSPEED"):
        return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo")]}
    return {"cpu": True}


def configure_sharding(accelerator: Accelerator, args: OptimArguments) -> None:
    """Before `prepare`: FSDP2 on CPU where an FSDP config asked for it, and the settings sharding cannot follow."""
    if parse_flag_from_env("ACCELERATE_USE_FSDP") and accelerator.distributed_type == DistributedType.MULTI_CPU:
        _enable_fsdp_on_cpu(accelerator)
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return
    if args.optimizer == "muon":
        raise ValueError(
            f"--optimizer muon under {accelerator.distributed_type.value}: Muon trains with a second optimizer "
            "(AdamW for the rest), and Accelerate saves (FSDP) or wraps (DeepSpeed) one optimizer per model; use "
            "--optimizer adamw, or DDP (configs/accelerate/cpu_2proc.yaml, ddp.yaml) for Muon."
        )
    if accelerator.distributed_type == DistributedType.FSDP:
        return
    if args.gradient_accumulation_steps > 1:
        raise ValueError(
            f"gradient_accumulation_steps={args.gradient_accumulation_steps} under DeepSpeed: its engine steps inside "
            "accelerator.backward, before the loop's token-exact accumulation ends; use --gradient_accumulation_steps "
            "1 with a larger --per_device_batch_size, or FSDP2 (configs/accelerate/fsdp2*.yaml)."
        )
    clipping = accelerator.state.deepspeed_plugin.deepspeed_config.get("gradient_clipping", "auto")
    if clipping != "auto" and float(clipping) != args.max_grad_norm:
        raise ValueError(
            f"The DeepSpeed config clips at gradient_clipping={clipping} but --max_grad_norm is {args.max_grad_norm}; "
            "DeepSpeed clips by its config only, so set the two equal."
        )


def _enable_fsdp_on_cpu(accelerator: Accelerator) -> None:
    plugin = FullyShardedDataParallelPlugin()  # from the FSDP_* variables `accelerate launch` sets
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP


def shards_weights(accelerator: Accelerator) -> bool:
    """Whether each process holds only a shard of the weights, so that a forward needs every process."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return accelerator.distributed_type == DistributedType.FSDP


def whole_model(accelerator: Accelerator, model: torch.nn.Module) -> PreTrainedModel | None:
    """The model with whole weights on the main process, None on the others. Unsharded, that is the unwrapped model
    itself; sharded, a plain copy built from `accelerator.get_state_dict`, which gathers from every process: call it
    on all of them."""
    unwrapped = accelerator.unwrap_model(model)
    if not shards_weights(accelerator):
        return unwrapped if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    # The model's own class (FSDP2 subclasses it), called directly: from_config would partition it under ZeRO-3.
    model_class = next(c for c in type(unwrapped).__mro__ if not issubclass(c, FSDPModule))
    with init_empty_weights():  # parameters on meta, buffers (rotary frequencies) real: the state dict fills them
        replica = model_class(copy.deepcopy(unwrapped.config))
    replica.load_state_dict(state_dict, assign=True, strict=False)  # a tied head may be left out
    replica.tie_weights()  # and assign=True loaded it as its own tensor where it was not
    missing = [name for name, p in replica.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"The gathered state dict lacks {missing}; the sharded model and its config disagree.")
    replica.generation_config = copy.deepcopy(unwrapped.generation_config)
    return replica.train(unwrapped.training)


def whole_optimizers(
    accelerator: Accelerator, model: torch.nn.Module, optimizers: list, replica: PreTrainedModel | None
) -> list[torch.optim.Optimizer] | None:
    """`optimizers` over `replica` (from `whole_model`) with their gathered state on the main process, None on the
    others; every process must call it. Unsharded, the optimizers themselves. Under DeepSpeed none: its partitioned
    optimizer is no torch optimizer to gather into, so the probe replays a fresh AdamW."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return [] if accelerator.is_main_process else None
    if not shards_weights(accelerator):
        return optimizers if accelerator.is_main_process else None
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    gathered = []  # (optimizer, full state dict, whether it has stepped yet)
    for optimizer in (getattr(o, "optimizer", o) for o in optimizers):  # Accelerate wraps them
        stepped = bool(optimizer.state)
        state = get_optimizer_state_dict(model, optimizer, options=options)
        if not stepped:  # it ran a zero step (lr 0) to create the state; drop that, or the next step counts one more
            optimizer.state.clear()
        gathered.append((optimizer, state, stepped))
    if not accelerator.is_main_process:
        return None
    by_name = dict(replica.named_parameters(remove_duplicate=False))
    copies = []
    for optimizer, state, stepped in gathered:
        groups = [{**group, "params": [by_name[name] for name in group["params"]]} for group in state["param_groups"]]
        copies.append(type(optimizer)(groups))
        if stepped:
            set_optimizer_state_dict(replica, copies[-1], state, options=StateDictOptions(full_state_dict=True))
    return copies


def measure_whole(
    accelerator: Accelerator, model: torch.nn.Module, optimizers: list, measure: Callable[[PreTrainedModel, list], dict]
) -> dict:
    """`measure(model, optimizers)` on the main process over the whole model and optimizers ({} on the others); every
    process must call it, as the weights and optimizer state are gathered."""
    whole = whole_model(accelerator, model)
    optimizers = whole_optimizers(accelerator, model, optimizers, whole)
    if not accelerator.is_main_process:
        return {}
    with _one_process_generation(accelerator):
        return measure(whole, optimizers)


@contextmanager
def _one_process_generation(accelerator: Accelerator) -> Iterator[None]:
    """Under ZeRO-3 transformers' `generate` waits on every process after each token (synced_gpus); a whole copy
    generating on one process must not, so the ZeRO-3 flag it reads is off meanwhile."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED or not shards_weights(accelerator):
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(accelerator.state.deepspeed_plugin.dschf)  # Accelerate's, kept alive there


__all__ = ["configure_sharding", "device_arguments", "measure_whole", "shards_weights", "whole_model"]
