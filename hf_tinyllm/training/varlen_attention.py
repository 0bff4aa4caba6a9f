"""`attn_implementation="torch_varlen"`: PyTorch's own variable-length flash attention kernel
(`torch.nn.attention.varlen.varlen_attn`, CUDA) behind transformers' attention interface, for machines without the
flash-attn package. Like `flash_attention_2` it reads packed documents' boundaries from `cu_seq_lens_q/k` of a
flattened batch (`DataCollatorForCausalLM(flatten=True)`), never from a mask.
"""

import functools
import inspect

import torch
from transformers import AttentionInterface

NAME = "torch_varlen"


def varlen_attention_available() -> bool:
    """Whether this torch has the kernel and a GPU to run it."""
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


@functools.cache
def _kernel_shares_kv_heads() -> bool:
    """Whether this torch's kernel takes fewer key/value heads itself (`enable_gqa`), read once, not per layer."""
    from torch.nn.attention.varlen import varlen_attn

    return "enable_gqa" in inspect.signature(varlen_attn).parameters


def torch_varlen_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: torch.Tensor | None = None,
    cu_seq_lens_k: torch.Tensor | None = None,
    max_length_q: int | None = None,
    max_length_k: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """(1, H, N, D) queries and (1, KV, N, D) keys/values of one flattened row -> (1, N, H, D), causal inside each
    document of `cu_seq_lens_q`."""
    from torch.nn.attention.varlen import varlen_attn

    if cu_seq_lens_q is None or query.shape[0] != 1:
        raise ValueError(
            f"attn_implementation={NAME!r} needs a flattened batch with its document boundaries: "
            "DataCollatorForCausalLM(flatten=True) (--flatten_batches true)."
        )
    if dropout:
        raise ValueError(f"attn_implementation={NAME!r} has no attention dropout; set attention_dropout=0.")
    heads, kv_heads = query.shape[1], key.shape[1]
    # The kernel takes bf16/fp16 only and, unlike sdpa, is not an autocast op: fp32 queries (RoPE's fp32 tables
    # promote them) go in at autocast's dtype, as transformers' flash path casts them.
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else query.dtype
    dtype = torch.bfloat16 if dtype == torch.float32 else dtype
    q, k, v = (x[0].transpose(0, 1).to(dtype) for x in (query, key, value))  # (N, heads, D)
    options = {"scale": scaling, "window_size": (-1, 0)}  # (-1, 0): causal
    if heads != kv_heads:
        if _kernel_shares_kv_heads():
            options["enable_gqa"] = True
        else:
            k, v = (x.repeat_interleave(heads // kv_heads, dim=1) for x in (k, v))
    out = varlen_attn(q, k, v, cu_seq_lens_q, cu_seq_lens_k, max_length_q, max_length_k, **options)
    return out.unsqueeze(0), None  # (1, N, heads, D)


def register_varlen_attention() -> None:
    """Make `torch_varlen` a name `set_attn_implementation` accepts (no mask function: the kernel needs no mask)."""
    AttentionInterface.register(NAME, torch_varlen_attention_forward)


__all__ = ["NAME", "register_varlen_attention", "torch_varlen_attention_forward", "varlen_attention_available"]
