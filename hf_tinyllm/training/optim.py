"""Optimizers and schedules: AdamW with weight-decay groups (fused on CUDA), optionally Muon on the 2-D hidden
matrices, and a learning-rate schedule from `transformers.get_scheduler`."""

import torch
from torch import nn
from transformers import get_scheduler

from .arguments import OptimArguments

_NO_DECAY_MODULES = (nn.Embedding, nn.LayerNorm)


def parameter_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Split trainable parameters into `matrices` (2-D weights of Linear layers inside the blocks: weight decay, Muon)
    and `others` (embeddings, the head tied to them, norms, biases: no decay). Tied parameters appear once."""
    no_decay: set[int] = set()
    for module in model.modules():
        if isinstance(module, _NO_DECAY_MODULES) or "RMSNorm" in type(module).__name__:
            no_decay.update(id(p) for p in module.parameters(recurse=False))
    output = model.get_output_embeddings()
    if output is not None:
        no_decay.add(id(output.weight))
    groups: dict[str, list[nn.Parameter]] = {"matrices": [], "others": []}
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        key = "matrices" if param.ndim == 2 and id(param) not in no_decay else "others"
        groups[key].append(param)
    return groups


def build_optimizers(
    model: nn.Module, args: OptimArguments, device: torch.device | None = None
) -> list[torch.optim.Optimizer]:
    """One AdamW, or Muon (matrices) + AdamW (the rest): nanochat's and modded-nanogpt's split. AdamW is fused on
    CUDA: on `device`, the one the parameters will train on (they may still be on the CPU here, before `prepare`)."""
    groups = parameter_groups(model)
    fused = device.type == "cuda" if device is not None else all(p.is_cuda for p in model.parameters())
    adamw = dict(lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon, fused=fused)
    if args.optimizer == "adamw":
        decay = [{"params": groups["matrices"], "weight_decay": args.weight_decay},
                 {"params": groups["others"], "weight_decay": 0.0}]  # fmt: skip
        return [torch.optim.AdamW(decay, **adamw)]
    if args.optimizer == "muon":
        muon = torch.optim.Muon(groups["matrices"], lr=args.muon_learning_rate, weight_decay=args.weight_decay,
                                adjust_lr_fn="match_rms_adamw")  # fmt: skip
        return [muon, torch.optim.AdamW(groups["others"], weight_decay=0.0, **adamw)]
    raise ValueError(f"optimizer={args.optimizer!r} is not supported; choose 'adamw' or 'muon'.")


def build_schedulers(optimizers: list[torch.optim.Optimizer], args: OptimArguments) -> list:
    kwargs = {}
    if args.lr_scheduler_type in ("cosine_with_min_lr", "cosine_warmup_with_min_lr"):
        kwargs["scheduler_specific_kwargs"] = {"min_lr_rate": args.min_lr_ratio}
    if args.lr_scheduler_type == "warmup_stable_decay":
        decay_steps = max(1, (args.max_steps - args.warmup_steps) // 5)
        kwargs["scheduler_specific_kwargs"] = {"num_decay_steps": decay_steps, "min_lr_ratio": args.min_lr_ratio}
    return [
        get_scheduler(
            args.lr_scheduler_type,
            optimizer,
            num_warmup_steps=args.warmup_steps,
            num_training_steps=args.max_steps,
            **kwargs,
        )
        for optimizer in optimizers
    ]


__all__ = ["build_optimizers", "build_schedulers", "parameter_groups"]
