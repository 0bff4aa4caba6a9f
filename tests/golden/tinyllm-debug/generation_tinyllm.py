"""Fast decoding for TinyLLM: a static KV cache and a decode step compiled once, behind the standard `generate`.

Switch it on with the model's generation config, so that every caller of `generate` (pipelines, the Trainer's
evaluation, lm-eval) gets it, or per call:

    model.generation_config.fast_decode = True      # saved in generation_config.json
    model.generate(input_ids, max_new_tokens=32)
    model.generate(input_ids, max_new_tokens=32, fast_decode=True)

transformers' `generate` still prepares everything (special tokens, attention mask and position ids, the logits
processors and stopping criteria of the generation config), and hands this module's `static_compiled_decode` the
loop, through `generate`'s `custom_generate` hook. The loop writes keys and values into a preallocated `StaticCache`
(one per batch size and rounded length, reused across calls) and runs every decode step through one
`torch.compile(fullgraph=True)` graph of the whole model, so a step is one compiled call plus the processors,
the token choice and the stopping check. Greedy decoding gives the tokens of the regular loop; sampling draws
from the same processed distribution. What the fast loop does not implement (beam search, assisted decoding,
`return_dict_in_generate`, a caller's own cache, `inputs_embeds`) runs transformers' loop unchanged.

Self-contained (torch + transformers): `save_pretrained` ships this file with `modeling_tinyllm.py`.
"""

import functools
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessorList, StaticCache, StoppingCriteriaList

# Cache lengths are rounded up to a multiple of this, so that prompts of similar lengths share one compiled graph.
CACHE_LENGTH_MULTIPLE = 64


def fast_decode_requested(
    generation_config: GenerationConfig | None, model_config: GenerationConfig, kwargs: dict
) -> bool:
    """Whether this `generate` call asks for the fast loop (the per-call `fast_decode` kwarg, popped from `kwargs`,
    wins over the generation config's attribute)."""
    requested = kwargs.pop("fast_decode", None)
    if requested is None:
        requested = getattr(generation_config if generation_config is not None else model_config, "fast_decode", False)
    return bool(requested)


def fast_decode_blocker(generation_config: GenerationConfig, kwargs: dict) -> str | None:
    """Why this call cannot use the fast loop (it then runs transformers' own), or None when it can."""
    merged = generation_config.to_dict()
    merged.update({k: v for k, v in kwargs.items() if k in merged})
    if (merged.get("num_beams") or 1) > 1:
        return "beam search"
    if merged.get("return_dict_in_generate"):
        return "return_dict_in_generate"
    if (merged.get("num_return_sequences") or 1) > 1:
        return "num_return_sequences > 1"
    if merged.get("prompt_lookup_num_tokens") is not None:
        return "prompt lookup decoding"
    for name in ("assistant_model", "cache", "past_key_values", "inputs_embeds", "custom_generate"):
        if kwargs.get(name) is not None:
            return name
    if kwargs.get("synced_gpus"):
        return "synced_gpus"
    if merged.get("cache_implementation") not in (None, "static", "dynamic"):
        return f"cache_implementation={merged['cache_implementation']!r}"
    return None


def _decode_step(model, input_ids, position_ids, attention_mask, cache) -> torch.Tensor:
    """One token per sequence through the whole model; (B, 1) -> float32 logits (B, V)."""
    logits = model(
        input_ids=input_ids,
        position_ids=position_ids,
        attention_mask=attention_mask,
        cache=cache,
        use_cache=True,
    ).logits
    return logits[:, -1].float()


@functools.cache
def compiled_decode_step():
    """The decode step under `torch.compile(fullgraph=True)`, built on first use (not at import). One wrapper serves
    every model: dynamo keys its graphs on the function's code, guarding on the model and the shapes.
    `dynamic=False`: each (batch size, cache length) gets its own static graph, the fastest for a decode step."""
    return torch.compile(_decode_step, fullgraph=True, dynamic=False)


def static_cache_for(model, batch_size: int, needed_len: int, dtype: torch.dtype, device: torch.device) -> StaticCache:
    """An emptied static cache for `needed_len` positions, rounded up; one per (batch, length, dtype, device), kept
    on the model so that its tensors (and the compiled graph that reads them) are reused by the next call."""
    max_cache_len = -(-needed_len // CACHE_LENGTH_MULTIPLE) * CACHE_LENGTH_MULTIPLE
    caches: dict = model.__dict__.setdefault("_fast_decode_caches", {})
    key = (batch_size, max_cache_len, dtype, device)
    if key not in caches:
        caches[key] = StaticCache(config=model.config, max_cache_len=max_cache_len)
    cache = caches[key]
    cache.reset()
    return cache


@torch.no_grad()
def static_compiled_decode(
    model,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    fast_decode_streamer: Any = None,
    **model_kwargs: Any,
) -> torch.LongTensor:
    """The decoding loop `generate` runs when `fast_decode` is on (its `custom_generate` hook): the prompt is
    prefilled into a static cache in eager mode, then each new token costs one compiled decode step.

    `fast_decode_streamer` is the call's `streamer`: transformers (5.23) hands a callable `custom_generate` only the
    arguments `_sample` lacks, so the streamer travels under its own name (`generate` itself still puts the prompt).
    """
    streamer = fast_decode_streamer
    batch_size, prompt_len = input_ids.shape
    device = input_ids.device
    max_length = generation_config.max_length
    if max_length > model.config.max_position_embeddings:
        raise ValueError(
            f"fast_decode: max_length {max_length} exceeds the model's max_position_embeddings "
            f"{model.config.max_position_embeddings}; lower max_new_tokens or the prompt length."
        )
    dtype = next(model.parameters()).dtype
    cache = static_cache_for(model, batch_size, max_length, dtype, device)

    # Key mask over the whole cache: the prompt's own (left padding), then every generated position is real; slots
    # not written yet are excluded by the causal part of the mask (their positions lie ahead of the query).
    prompt_mask = model_kwargs.get("attention_mask")
    if prompt_mask is None:
        prompt_mask = torch.ones_like(input_ids)
    attention_mask = torch.ones(batch_size, cache.layers[0].max_cache_len, dtype=prompt_mask.dtype, device=device)
    attention_mask[:, :prompt_len] = prompt_mask
    position_ids = model_kwargs.get("position_ids")
    if position_ids is None:
        position_ids = (prompt_mask.long().cumsum(-1) - 1).masked_fill(prompt_mask == 0, 0)

    logits = (
        model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        .logits[:, -1]
        .to(copy=True, dtype=torch.float32)
    )
    step = compiled_decode_step()
    next_position = position_ids[:, -1:] + 1

    pad_token_id = generation_config._pad_token_tensor
    has_eos_stopping_criteria = any(hasattr(criteria, "eos_token_id") for criteria in stopping_criteria)
    unfinished = torch.ones(batch_size, dtype=torch.long, device=device)
    while True:
        scores = logits_processor(input_ids, logits)
        if generation_config.do_sample:
            next_tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            next_tokens = torch.argmax(scores, dim=-1)
        if has_eos_stopping_criteria:
            next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        if streamer is not None:
            streamer.put(next_tokens.cpu())
        unfinished = unfinished & ~stopping_criteria(input_ids, None)
        if unfinished.max() == 0:
            break
        logits = step(model, next_tokens[:, None], next_position, attention_mask, cache).clone()
        next_position = next_position + 1
    if streamer is not None:
        streamer.end()
    return input_ids
