"""Exact weight interop with transformers' Llama and GPT-2.

- `from_llama` / `from_gpt2`: a `LlamaForCausalLM` or `GPT2LMHeadModel` (config and weights) becomes a TinyLLM that
  computes the same function (tests hold fp32 logits to 1e-5).
- `to_llama` / `export_llama`: a Llama-compatible TinyLLM becomes a plain `LlamaForCausalLM` (a folder that any Llama
  runtime loads without remote code).
- `export_gguf`: a Llama-compatible TinyLLM (or a saved folder) and its tokenizer become one GGUF file for llama.cpp.
- `from_pretrained_any`: load a saved Llama, GPT-2 or TinyLLM folder (or Hub id) as TinyLLM.
"""

import copy
import logging
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)
from transformers.initialization import no_init_weights

from .atomic import atomic_directory
from .configuration_tinyllm import TinyLLMConfig
from .gguf_export import gguf_incompatibilities, write_gguf
from .modeling_tinyllm import TinyLLMForCausalLM
from .tokenization import write_tokenizer_files

logger = logging.getLogger(__name__)

# Llama's module names are TinyLLM's, so its state dict maps key for key.
_SHARED_CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
    "rms_norm_eps",
    "initializer_range",
    "tie_word_embeddings",
    "use_cache",
    "attention_bias",
    "attention_dropout",
    "mlp_bias",
    "hidden_act",
)


def _token_ids(config, vocab_size: int) -> dict:
    """bos/eos/pad ids of a foreign config; ids outside the vocabulary (some Hub configs store -1) become None."""
    ids = {}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(v is not None and not 0 <= v < vocab_size for v in values):
            logger.warning("%s=%s is outside the vocabulary of %d tokens; it becomes None.", name, value, vocab_size)
            value = None
        ids[name] = value
    return ids


def tinyllm_config_from_llama(config: LlamaConfig) -> TinyLLMConfig:
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        logger.warning("pretraining_tp=%s only changes how Llama splits matmuls; ignored.", config.pretraining_tp)
    fields = {name: getattr(config, name) for name in _SHARED_CONFIG_FIELDS}
    # RoPE scaling carries over as it is: both models compute it with transformers' ROPE_INIT_FUNCTIONS, and
    # TinyLLMConfig refuses, with the reason, any rope_type it does not support.
    return TinyLLMConfig(
        **fields,
        **_token_ids(config, config.vocab_size),
        rope_parameters=copy.deepcopy(dict(config.rope_parameters or {})),
        position_embedding_type="rope",
        norm_type="rmsnorm",
        mlp_type="swiglu",
        qk_norm=False,
    )


def tinyllm_config_from_gpt2(config: GPT2Config) -> TinyLLMConfig:
    unsupported = {
        "add_cross_attention": (getattr(config, "add_cross_attention", False), False),
        "scale_attn_weights": (config.scale_attn_weights, True),
        "scale_attn_by_inverse_layer_idx": (config.scale_attn_by_inverse_layer_idx, False),
    }
    for name, (value, needed) in unsupported.items():
        if value != needed:
            raise ValueError(f"GPT-2 {name}={value} has no TinyLLM equivalent; only {name}={needed} converts exactly.")
    if config.embd_pdrop != config.resid_pdrop:
        logger.warning(
            "GPT-2 embd_pdrop=%s differs from resid_pdrop=%s; TinyLLM uses one residual_dropout=%s for both "
            "(training only; inference is unchanged).",
            config.embd_pdrop,
            config.resid_pdrop,
            config.resid_pdrop,
        )
    return TinyLLMConfig(
        vocab_size=config.vocab_size,
        hidden_size=config.n_embd,
        intermediate_size=config.n_inner or 4 * config.n_embd,
        num_hidden_layers=config.n_layer,
        num_attention_heads=config.n_head,
        num_key_value_heads=config.n_head,
        max_position_embeddings=config.n_positions,
        rms_norm_eps=config.layer_norm_epsilon,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
        use_cache=config.use_cache,
        **_token_ids(config, config.vocab_size),
        attention_dropout=config.attn_pdrop,
        residual_dropout=config.resid_pdrop,
        position_embedding_type="learned",
        norm_type="layernorm",
        mlp_type="gelu",
        hidden_act=config.activation_function,
        attention_bias=True,
        mlp_bias=True,
    )


def _gpt2_state_dict_to_tinyllm(state_dict: dict[str, torch.Tensor], config: TinyLLMConfig) -> dict:
    """GPT-2's Conv1D stores weights as (in, out): transpose them into Linear's (out, in); split the fused qkv."""
    sd = {k.removeprefix("transformer."): v for k, v in state_dict.items()}
    out = {
        "model.embed_tokens.weight": sd["wte.weight"],
        "model.embed_positions.weight": sd["wpe.weight"],
        "model.norm.weight": sd["ln_f.weight"],
        "model.norm.bias": sd["ln_f.bias"],
        "lm_head.weight": sd.get("lm_head.weight", sd["wte.weight"]),
    }
    hidden = config.hidden_size
    for i in range(config.num_hidden_layers):
        src, dst = f"h.{i}.", f"model.layers.{i}."
        q_w, k_w, v_w = sd[src + "attn.c_attn.weight"].t().split(hidden, dim=0)
        q_b, k_b, v_b = sd[src + "attn.c_attn.bias"].split(hidden, dim=0)
        for name, w, b in (("q_proj", q_w, q_b), ("k_proj", k_w, k_b), ("v_proj", v_w, v_b)):
            out[f"{dst}self_attn.{name}.weight"], out[f"{dst}self_attn.{name}.bias"] = w, b
        pairs = {
            "self_attn.o_proj": "attn.c_proj",
            "mlp.up_proj": "mlp.c_fc",
            "mlp.down_proj": "mlp.c_proj",
        }
        for ours, theirs in pairs.items():
            out[f"{dst}{ours}.weight"] = sd[f"{src}{theirs}.weight"].t()
            out[f"{dst}{ours}.bias"] = sd[f"{src}{theirs}.bias"]
        for ours, theirs in (("input_layernorm", "ln_1"), ("post_attention_layernorm", "ln_2")):
            out[f"{dst}{ours}.weight"] = sd[f"{src}{theirs}.weight"]
            out[f"{dst}{ours}.bias"] = sd[f"{src}{theirs}.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def _build_like(cls: type[PreTrainedModel], config, source: PreTrainedModel, state_dict: dict) -> PreTrainedModel:
    """A `cls` model holding `state_dict` (strictly), in the source's dtype, attention backend and generation config."""
    with no_init_weights():
        model = cls(config)
    model.load_state_dict(state_dict, strict=True)
    model.tie_weights()
    model.to(source.dtype)
    model.set_attn_implementation(source.config._attn_implementation)
    model.generation_config = GenerationConfig.from_dict(source.generation_config.to_dict())
    return model.eval()


def from_llama(model: LlamaForCausalLM) -> TinyLLMForCausalLM:
    """An exact TinyLLM copy of a transformers `LlamaForCausalLM`."""
    config = tinyllm_config_from_llama(model.config)
    return _build_like(TinyLLMForCausalLM, config, model, dict(model.state_dict()))


def from_gpt2(model: GPT2LMHeadModel) -> TinyLLMForCausalLM:
    """An exact TinyLLM copy of a transformers `GPT2LMHeadModel` (learned positions, LayerNorm, GELU, biases)."""
    config = tinyllm_config_from_gpt2(model.config)
    return _build_like(TinyLLMForCausalLM, config, model, _gpt2_state_dict_to_tinyllm(model.state_dict(), config))


def llama_config_from_tinyllm(config: TinyLLMConfig) -> LlamaConfig:
    problems = config.llama_incompatibilities()
    if problems:
        raise ValueError(
            "This TinyLLM is not a plain Llama and cannot be exported: " + "; ".join(problems) + ". Train with the "
            "Llama settings (the TinyLLMConfig defaults) to export, or share it as TinyLLM with trust_remote_code."
        )
    if config.residual_dropout:
        logger.warning("residual_dropout=%s has no Llama field; the export drops it.", config.residual_dropout)
    fields = {name: getattr(config, name) for name in _SHARED_CONFIG_FIELDS}
    return LlamaConfig(
        **fields,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        rope_parameters=copy.deepcopy(config.rope_parameters),
    )


def to_llama(model: TinyLLMForCausalLM) -> LlamaForCausalLM:
    """An exact transformers `LlamaForCausalLM` copy of a Llama-compatible TinyLLM."""
    config = llama_config_from_tinyllm(model.config)
    return _build_like(LlamaForCausalLM, config, model, dict(model.state_dict()))


def export_llama(model: TinyLLMForCausalLM, save_directory: str | Path, tokenizer=None) -> Path:
    """Save `model` as a plain Llama folder (no `auto_map`, no Python files): loads with
    `AutoModelForCausalLM.from_pretrained(save_directory)` anywhere. Written atomically: an existing folder at
    `save_directory` is replaced only once the new one is complete."""
    llama = to_llama(model)
    with atomic_directory(save_directory) as tmp:
        llama.save_pretrained(tmp)
        if tokenizer is not None:
            write_tokenizer_files(tokenizer, tmp)
    return Path(save_directory)


def export_gguf(
    model_or_folder: TinyLLMForCausalLM | str | Path,
    path: str | Path,
    file_type: str = "f32",
    tokenizer=None,
    with_tokenizer: bool = True,
) -> Path:
    """Write a Llama-compatible TinyLLM as the GGUF file `path` (llama.cpp's "llama" architecture), atomically.

    `model_or_folder`: a model, or a saved TinyLLM / Llama folder or Hub id (whose tokenizer is used when `tokenizer`
    is None, unless `with_tokenizer` is False: the weights alone). `file_type`: "f32" (exact), "f16" or "q8_0". The
    file loads back with `AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)` and
    `AutoTokenizer.from_pretrained(...)` alike."""
    model = model_or_folder
    if not with_tokenizer:
        tokenizer = None
    if isinstance(model_or_folder, (str, Path)):
        model = from_pretrained_any(model_or_folder)
        if tokenizer is None and with_tokenizer:
            try:
                tokenizer = AutoTokenizer.from_pretrained(model_or_folder)
            except (OSError, ValueError):
                logger.info("%s has no tokenizer; writing the model only.", model_or_folder)
    problems = model.config.llama_incompatibilities() + gguf_incompatibilities(model.config)
    if problems:
        raise ValueError(
            "This TinyLLM does not map to GGUF's llama architecture: " + "; ".join(problems) + ". Train with the "
            "Llama settings (the TinyLLMConfig defaults) to export, or share it as TinyLLM with trust_remote_code."
        )
    if tokenizer is None:
        logger.warning("No tokenizer: the GGUF file holds the model only, and llama.cpp needs a vocabulary to run it.")
    return write_gguf(to_llama(model), path, file_type=file_type, tokenizer=tokenizer)


def from_pretrained_any(name_or_path: str | Path, **kwargs) -> TinyLLMForCausalLM:
    """Load a saved Llama, GPT-2 or TinyLLM checkpoint (folder or Hub id) as a TinyLLM."""
    model_type = AutoConfig.from_pretrained(name_or_path, **kwargs).model_type
    converters = {"llama": from_llama, "gpt2": from_gpt2}
    if model_type == TinyLLMConfig.model_type:
        return TinyLLMForCausalLM.from_pretrained(name_or_path, **kwargs)
    if model_type not in converters:
        raise ValueError(
            f"{name_or_path} holds a {model_type!r} model; TinyLLM converts exactly from {sorted(converters)} only."
        )
    return converters[model_type](AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs))


def convert_folder(source: str | Path, output_dir: str | Path, to_llama: bool = False) -> Path:
    """Convert the checkpoint at `source` (Llama, GPT-2 or TinyLLM folder or Hub id) into a TinyLLM folder, or into a
    plain Llama folder with `to_llama=True`, carrying the tokenizer along when `source` has one. Written atomically."""
    model = from_pretrained_any(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):
        logger.info("%s has no tokenizer; converting the model only.", source)
        tokenizer = None
    if to_llama:
        return export_llama(model, output_dir, tokenizer)
    with atomic_directory(output_dir) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            write_tokenizer_files(tokenizer, tmp)
    return Path(output_dir)


__all__ = [
    "convert_folder",
    "export_gguf",
    "export_llama",
    "from_gpt2",
    "from_llama",
    "from_pretrained_any",
    "llama_config_from_tinyllm",
    "tinyllm_config_from_gpt2",
    "tinyllm_config_from_llama",
    "to_llama",
]
