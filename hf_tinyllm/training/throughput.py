"""FLOPs per token and the machine's measured matmul peak: the two halves of model FLOPs utilisation (MFU)."""

import time
from functools import cache

import torch
from transformers import PreTrainedConfig


def training_flops_per_token(config: PreTrainedConfig, num_parameters: int, seq_len: int) -> float:
    """6 N for the matmuls of forward + backward (a tied head counted once, as a matmul) + 12 L d T for the attention
    scores and values (PaLM, arXiv:2204.02311, appendix B). An untied input embedding is a lookup: pass N without it."""
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * seq_len
    return 6 * num_parameters + attention


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters that take part in matmuls: all of them, less an untied input embedding (a lookup)."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    output = model.get_output_embeddings()
    tied = output is not None and output.weight is embedding
    return total if tied else total - embedding.numel()


@cache
def matmul_peak_flops(device_type: str, dtype: torch.dtype, n: int = 2048, iters: int = 10) -> float:
    """Measured FLOP/s of a square matmul on this machine: the practical peak MFU is relative to."""
    device = torch.device(device_type)
    generator = torch.Generator(device=device).manual_seed(0)  # its own: the global one is a training run's stream
    a = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=generator)
    best = float("inf")
    for _ in range(iters + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


__all__ = ["matmul_parameters", "matmul_peak_flops", "training_flops_per_token"]
