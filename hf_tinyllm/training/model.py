"""The model a training run starts from."""

import json

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from ..presets import build_model
from ..tokenization import match_model_to_tokenizer, model_overrides_for
from .arguments import ModelArguments
from .varlen_attention import register_varlen_attention


def build_training_model(args: ModelArguments, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A fresh preset model sized for `tokenizer`, or a saved one (`init_from`) with the tokenizer's ids mirrored."""
    if args.init_from is not None:
        model = AutoModelForCausalLM.from_pretrained(args.init_from, dtype=torch.float32)
        match_model_to_tokenizer(model, tokenizer)
    else:
        overrides = json.loads(args.model_overrides) if args.model_overrides else {}
        fitted = model_overrides_for(tokenizer)
        # A larger table than the tokenizer needs may be asked for (GPT-2's 50304, to compare at its shape).
        fitted["vocab_size"] = max(fitted["vocab_size"], overrides.get("vocab_size", 0))
        model = build_model(args.preset, **{**overrides, **fitted})
    register_varlen_attention()
    model.set_attn_implementation(args.attn_implementation)
    model.config.use_cache = False  # no KV cache while training (it would also disable packed-document masks)
    model.config.cross_entropy_chunk_size = args.cross_entropy_chunk_size
    return model.to(getattr(torch, args.param_dtype))
