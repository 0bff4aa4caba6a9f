"""Named model sizes. Presets are data: no behaviour anywhere is keyed on a preset's name.

The parameter counts in the comments include the (tied) embedding at the preset's default vocabulary size;
`vocab_size` and any other field can be overridden, e.g. to match a trained tokenizer.
"""

from typing import Any

from .configuration_tinyllm import TinyLLMConfig
from .modeling_tinyllm import TinyLLMForCausalLM

PRESETS: dict[str, dict[str, Any]] = {
    # ~23k parameters: the size transformers' own model tests use; for unit tests and CI.
    "debug": dict(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    ),
    # ~1.07M parameters: trains on the embedded corpus in a few CPU minutes.
    "nano": dict(
        vocab_size=2048,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=352,
        max_position_embeddings=256,
    ),
    # ~11.0M parameters: grouped-query attention, 3 query heads per key/value head.
    "micro": dict(
        vocab_size=4096,
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        num_key_value_heads=2,
        intermediate_size=1024,
        max_position_embeddings=512,
    ),
    # ~124M parameters: GPT-2 small's widths (12 x 768, 12 heads, GPT-2's vocabulary padded to a multiple of 64),
    # with the Llama-style blocks; the SwiGLU width 2048 gives the same MLP parameters as GPT-2's 4 x 768.
    "small": dict(
        vocab_size=50304,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=2048,
        max_position_embeddings=1024,
    ),
}


def preset_config(name: str, **overrides: Any) -> TinyLLMConfig:
    """The `TinyLLMConfig` of preset `name`, with any field replaced by `overrides`."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)} or build a TinyLLMConfig directly.")
    return TinyLLMConfig(**{**PRESETS[name], **overrides})


def build_model(name: str, **overrides: Any) -> TinyLLMForCausalLM:
    """A freshly initialised `TinyLLMForCausalLM` of preset `name` (see `preset_config`)."""
    return TinyLLMForCausalLM(preset_config(name, **overrides))


__all__ = ["PRESETS", "build_model", "preset_config"]
