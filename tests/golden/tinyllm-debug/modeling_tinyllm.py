"""TinyLLM: a small decoder-only language model in the transformers 5.x Llama skeleton.

Reads top to bottom: norms -> rotary embedding -> MLPs -> attention -> decoder layer -> PreTrainedModel -> Model ->
chunked cross-entropy -> ForCausalLM -> task heads (sequence and token classification, question answering).
Self-contained (torch + transformers, relative imports only) because `save_pretrained` copies this file next to the
weights and `from_pretrained(..., trust_remote_code=True)` runs it without the hf_tinyllm package.
"""

import inspect
import math
from collections.abc import Callable

import torch
import transformers
from torch import nn

from .configuration_tinyllm import TESTED_TRANSFORMERS, TINYLLM_CODE_VERSION, TinyLLMConfig
from .generation_tinyllm import fast_decode_blocker, fast_decode_requested, static_compiled_decode


def unsupported_transformers(reason: str) -> str:
    """The message for a transformers release this code cannot serve: what, which versions it knows, the fix."""
    return (
        f"TinyLLM's model code (hf_tinyllm {TINYLLM_CODE_VERSION}, tested on transformers "
        f"{' to '.join(TESTED_TRANSFORMERS)}) cannot serve transformers {transformers.__version__}: {reason}. "
        f"Install a tested release (pip install 'transformers=={TESTED_TRANSFORMERS[-1]}'), or refresh the model's "
        "code with a newer hf_tinyllm: pip install -U hf_tinyllm && tinyllm refresh-code MODEL_FOLDER_OR_REPO."
    )


# Everything this file takes from transformers below its top-level API: tests/test_transformers_internals.py checks
# each name and signature on the installed release and names the one that moved.
try:
    from transformers import (
        AutoModel,
        Cache,
        DynamicCache,
        GenerationMixin,
        GradientCheckpointingLayer,
        PreTrainedModel,
    )
    from transformers import initialization as init
    from transformers.activations import ACT2FN
    from transformers.masking_utils import create_causal_mask
    from transformers.modeling_layers import (
        GenericForQuestionAnswering,
        GenericForSequenceClassification,
        GenericForTokenClassification,
    )
    from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
    from transformers.processing_utils import Unpack
    from transformers.utils import TransformersKwargs, can_return_tuple, logging
    from transformers.utils.generic import merge_with_config_defaults
    from transformers.utils.output_capturing import capture_outputs
except ImportError as error:
    raise ImportError(unsupported_transformers(str(error))) from error

logger = logging.get_logger(__name__)


def _cache_name(names: object, where: str) -> str:
    """`cache` (transformers 5.24 on) or `past_key_values` (before), whichever `names` holds."""
    for name in ("cache", "past_key_values"):
        if name in names:
            return name
    raise ImportError(
        unsupported_transformers(f"{where} takes the KV cache under neither `cache` nor `past_key_values`")
    )


# transformers 5.24 renamed the KV cache from `past_key_values` to `cache`: in the model outputs, in what `generate`
# passes to `forward` and in `create_causal_mask`. Each name is read off the installed release, not its version.
CACHE_OUTPUT_NAME = _cache_name(CausalLMOutputWithPast.__dataclass_fields__, "CausalLMOutputWithPast")
MASK_CACHE_ARGUMENT = _cache_name(inspect.signature(create_causal_mask).parameters, "create_causal_mask")


def resolve_cache(cache: Cache | None, past_key_values: Cache | None, kwargs: dict) -> Cache | None:
    """The KV cache a forward was given, as `cache` (transformers 5.24 on) or `past_key_values` (earlier releases).

    A cache under any other name means transformers passes it in a way this code does not know; running on would
    ignore it and generate fluent wrong text, so it stops instead.
    """
    if cache is not None and past_key_values is not None:
        raise ValueError(
            "Pass the KV cache once: as `cache` (or `past_key_values`, its name before transformers 5.24)."
        )
    stray = next((name for name, value in kwargs.items() if isinstance(value, Cache)), None)
    if stray is not None:
        raise TypeError(unsupported_transformers(f"generate passes the KV cache as `{stray}`, a name this code lacks"))
    return cache if cache is not None else past_key_values


def output_cache(outputs: BaseModelOutputWithPast) -> Cache | None:
    """The KV cache a model output carries, whatever the installed transformers calls the field."""
    return getattr(outputs, CACHE_OUTPUT_NAME)


def same_document_mask(position_ids: torch.Tensor) -> Callable:
    """A mask function (transformers' `and_mask_function`) that keeps each query inside its own document, a document
    being a run of positions that grow by one: (B, T) positions restarting at every packed document's start."""
    previous = torch.cat([position_ids[:, :1] - 1, position_ids[:, :-1]], dim=-1)
    documents = (position_ids != previous + 1).cumsum(-1)  # (B, T): the document index of each token

    def same_document(batch_idx: torch.Tensor, head_idx: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor):
        return documents[batch_idx, q_idx] == documents[batch_idx, kv_idx]

    return same_document


def refuse_flash_across_documents(attn_implementation: str | None, batch_size: int, kwargs: dict) -> None:
    """Flash kernels take document boundaries only as `cu_seq_lens_q/k`; from position ids transformers finds them
    only in a batch of one row, so rows of packed documents would silently attend across documents."""
    flash = "flash" in str(attn_implementation) or "varlen" in str(attn_implementation)
    if flash and kwargs.get("cu_seq_lens_q") is None:
        raise ValueError(
            f"{attn_implementation} cannot keep packed documents apart in a batch of {batch_size} rows with "
            "position ids: flatten the batch into one row with its boundaries (DataCollatorForCausalLM("
            "flatten=True), --flatten_batches true), pass cu_seq_lens_q/k and max_length_q/k, or leave out "
            "position_ids if the rows are not packed documents."
        )


class TinyLLMRMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 (as Llama's, so converted checkpoints match to the bit)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


def build_norm(config: TinyLLMConfig, dim: int) -> nn.Module:
    if config.norm_type == "layernorm":
        return nn.LayerNorm(dim, eps=config.rms_norm_eps)
    return TinyLLMRMSNorm(dim, eps=config.rms_norm_eps)


class TinyLLMRotaryEmbedding(nn.Module):
    """cos/sin tables of rotary position embeddings (RoFormer, arXiv:2104.09864) for given position ids.

    The frequencies come from `config.rope_parameters` through transformers' own RoPE initialisation functions
    (`ROPE_INIT_FUNCTIONS`: linear, dynamic NTK, YaRN, LongRoPE, Llama 3), exactly as Llama computes them;
    `dynamic_rope_update` recomputes them during the forward pass for the dynamic types. `inv_freq` and
    `original_inv_freq` are non-persistent buffers: they are not in the checkpoint, so `_init_weights` recomputes
    them after transformers 5.x materialises the model from the meta device.
    """

    def __init__(self, config: TinyLLMConfig) -> None:
        super().__init__()
        self.config = config
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.rope_type = config.rope_parameters["rope_type"]
        inv_freq, self.attention_scaling = self.compute_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: TinyLLMConfig, *args, **kwargs) -> tuple[torch.Tensor, float]:
        """Plain RoPE: inverse frequencies theta^(-2i/d) and no attention scaling."""
        dim = config.head_dim
        inv_freq = 1.0 / (config.rope_parameters["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, 1.0

    @classmethod
    def compute_frequencies(cls, config: TinyLLMConfig) -> tuple[torch.Tensor, float]:
        """(inv_freq, attention_scaling) for `config.rope_parameters["rope_type"]`."""
        rope_type = config.rope_parameters["rope_type"]
        init_fn = cls.compute_default_rope_parameters if rope_type == "default" else ROPE_INIT_FUNCTIONS[rope_type]
        return init_fn(config)

    @torch.no_grad()
    @dynamic_rope_update
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)  # (B, T, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (B, T, D)
        cos, sin = emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate queries and keys of shape (B, H, T, D) by cos/sin of shape (B, T, D)."""
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


class TinyLLMGatedMLP(nn.Module):
    """down(act(gate(x)) * up(x)): SwiGLU with the default SiLU (Shazeer, arXiv:2002.05202)."""

    def __init__(self, config: TinyLLMConfig) -> None:
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(hidden, inner, bias=bias)
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.down_proj.is_residual_projection = True
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class TinyLLMMLP(nn.Module):
    """down(act(up(x))): GPT-2's MLP (GELU) or squared ReLU."""

    def __init__(self, config: TinyLLMConfig) -> None:
        super().__init__()
        hidden, inner, bias = config.hidden_size, config.intermediate_size, config.mlp_bias
        self.up_proj = nn.Linear(hidden, inner, bias=bias)
        self.down_proj = nn.Linear(inner, hidden, bias=bias)
        self.down_proj.is_residual_projection = True
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(x)))


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, KV, T, D) -> (B, KV * n_rep, T, D): share each key/value head with its group of query heads."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
) -> tuple[torch.Tensor, torch.Tensor]:
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)
    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling  # (B, H, T, S)
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)  # (B, H, T, D)
    return attn_output.transpose(1, 2).contiguous(), attn_weights


class TinyLLMAttention(nn.Module):
    """Causal multi-head attention with grouped-query heads, optional QK-norm and RoPE, dispatched through
    transformers' attention interface (`config._attn_implementation`: eager, sdpa, flex_attention, flash_attention_2).
    """

    def __init__(self, config: TinyLLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        q_width, kv_width = config.num_attention_heads * self.head_dim, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, q_width, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=config.attention_bias)
        self.o_proj = nn.Linear(q_width, config.hidden_size, bias=config.attention_bias)
        self.o_proj.is_residual_projection = True
        self.q_norm = build_norm(config, self.head_dim) if config.qk_norm else nn.Identity()
        self.k_norm = build_norm(config, self.head_dim) if config.qk_norm else nn.Identity()

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_norm(self.q_proj(hidden_states).view(hidden_shape)).transpose(1, 2)  # (B, H, T, D)
        key_states = self.k_norm(self.k_proj(hidden_states).view(hidden_shape)).transpose(1, 2)  # (B, KV, T, D)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, KV, T, D)

        if position_embeddings is not None:  # RoPE; learned positions were added to the embeddings instead
            cos, sin = position_embeddings
            query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()  # (B, T, H * D)
        return self.o_proj(attn_output), attn_weights


class TinyLLMDecoderLayer(GradientCheckpointingLayer):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: TinyLLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = TinyLLMAttention(config=config, layer_idx=layer_idx)
        self.mlp = TinyLLMGatedMLP(config) if config.mlp_type == "swiglu" else TinyLLMMLP(config)
        self.input_layernorm = build_norm(config, config.hidden_size)
        self.post_attention_layernorm = build_norm(config, config.hidden_size)
        self.residual_dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states),
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + self.residual_dropout(hidden_states)
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states))
        return residual + self.residual_dropout(hidden_states)


class TinyLLMPreTrainedModel(PreTrainedModel):
    config_class = TinyLLMConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TinyLLMDecoderLayer"]
    _skip_keys_device_placement = [CACHE_OUTPUT_NAME]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": TinyLLMDecoderLayer, "attentions": TinyLLMAttention}

    def __init__(self, config: TinyLLMConfig, *inputs, **kwargs) -> None:
        super().__init__(config, *inputs, **kwargs)
        # The task heads build their base with `AutoModel.from_config(config)`. As remote code (this file copied next
        # to the weights, no package) the config's class comes from its own dynamic module, one nothing registered,
        # and `from_config` would refuse the `auto_map` entry for want of a `trust_remote_code` it is not given.
        # Registering the class at hand is what transformers itself does for remote models it loads.
        AutoModel.register(type(config), TinyLLMModel, exist_ok=True)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The whole initialisation of TinyLLM, one rule per kind of module:

        - Linear and Embedding weights (token and learned position tables): normal(0, initializer_range);
          biases zero; norms weight one and bias zero (transformers' default `_init_weights`).
        - Residual output projections (`o_proj`, `down_proj`): normal(0, initializer_range / sqrt(2 * num_layers)),
          GPT-2's scaled init, so the residual stream's variance does not grow with depth. They carry the flag
          `is_residual_projection`: transformers never calls `_init_weights` on custom-code modules that own no
          parameters themselves (attention, MLP), so the rule must live on the Linear.
        - RoPE `inv_freq` and `original_inv_freq`: recomputed from the config; they are non-persistent buffers, so
          after transformers 5.x's meta-device loading they would otherwise hold garbage.
        Helpers from `transformers.initialization` skip tensors already loaded from a checkpoint.
        """
        if isinstance(module, nn.Linear) and getattr(module, "is_residual_projection", False):
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, TinyLLMRotaryEmbedding):
            inv_freq, _ = module.compute_frequencies(module.config)
            init.copy_(module.inv_freq, inv_freq)
            init.copy_(module.original_inv_freq, inv_freq)
        else:
            super()._init_weights(module)

    # The auto class each model of this file serves; `save_pretrained` names them all in `auto_map`.
    _auto_map_classes = {
        "AutoModel": "TinyLLMModel",
        "AutoModelForCausalLM": "TinyLLMForCausalLM",
        "AutoModelForSequenceClassification": "TinyLLMForSequenceClassification",
        "AutoModelForTokenClassification": "TinyLLMForTokenClassification",
        "AutoModelForQuestionAnswering": "TinyLLMForQuestionAnswering",
    }

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers records in `auto_map` only the auto class of the class being saved; the copied modeling file
        # defines all of them, so name them all: a saved causal LM then also loads into a task head (and a
        # fine-tuned head back into AutoModel) for Hub users without the package.
        if self._auto_class is not None:
            module = type(self).__module__.split(".")[-1]
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.update({auto: f"{module}.{name}" for auto, name in self._auto_map_classes.items()})
            self.config.auto_map = auto_map
        # A generation config still marked as derived from the model config loads back without its extra
        # attributes, which would drop the `fast_decode` switch (generation_tinyllm): setting it is an edit.
        generation_config = getattr(self, "generation_config", None)
        if getattr(generation_config, "fast_decode", None) is not None:
            generation_config._from_model_config = False
        return super().save_pretrained(save_directory, *args, **kwargs)


class TinyLLMModel(TinyLLMPreTrainedModel):
    """The decoder stack without a head: returns the final normed hidden states (B, T, hidden_size)."""

    def __init__(self, config: TinyLLMConfig) -> None:
        config.validate_architecture()
        super().__init__(config)
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        learned = config.position_embedding_type == "learned"
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size) if learned else None
        self.rotary_emb = None if learned else TinyLLMRotaryEmbedding(config=config)
        self.embed_dropout = nn.Dropout(config.residual_dropout)
        self.layers = nn.ModuleList(
            [TinyLLMDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = build_norm(config, config.hidden_size)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        cache = resolve_cache(cache, past_key_values, kwargs)
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            cache = None  # a checkpointed layer runs twice and would write its keys and values twice
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)  # (B, T, C)
        positions_given = position_ids is not None
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)  # (1, T)

        # The mask sees the caller's cache, not one created here: an empty new cache sizes the mask exactly as no
        # cache does, but packed documents (positions restarting) are only kept apart without a cache, so creating
        # the cache first would let packed documents attend to each other when `use_cache=True`.
        # Positions made here are one sequence per row: transformers need not look for packed documents (a sync).
        mask_arguments = {"position_ids": position_ids if positions_given else None}
        if positions_given and attention_mask is None and cache is None:
            if inputs_embeds.shape[0] > 1:
                refuse_flash_across_documents(self.config._attn_implementation, inputs_embeds.shape[0], kwargs)
            # Packed documents, told apart on the device: transformers' own detection reads a tensor in a Python
            # `if` (a host sync in every forward) and gives the same mask.
            mask_arguments = {"position_ids": None, "and_mask_function": same_document_mask(position_ids)}
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            **mask_arguments,
            **{MASK_CACHE_ARGUMENT: cache},
        )
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)

        hidden_states = inputs_embeds
        position_embeddings = None
        if self.embed_positions is not None:
            hidden_states = hidden_states + self.embed_positions(position_ids)
        else:
            position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        hidden_states = self.embed_dropout(hidden_states)

        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                **kwargs,
            )

        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), **{CACHE_OUTPUT_NAME: cache})


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Cross-entropy of `hidden @ weight.T` against `targets`, `chunk_size` rows at a time (Liger's fused linear
    cross-entropy): each chunk's logits are upcast to fp32, reduced to its NLL and, right away, to its gradients with
    respect to hidden and weight, so no (N, V) tensor ever exists and backward only scales the stored gradients.

    hidden (N, H), weight (V, H), targets (N,) already shifted; `denominator` divides the summed NLL (a number, or a
    0-dim tensor on hidden's device). Returns the 0-dim fp32 loss.
    """

    @staticmethod
    def forward(
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        denominator: torch.Tensor | float,
        ignore_index: int,
        chunk_size: int,
    ) -> torch.Tensor:
        grad_hidden_needed, grad_weight_needed = ctx.needs_input_grad[:2]
        grad_hidden = torch.empty_like(hidden) if grad_hidden_needed else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if grad_weight_needed else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk_size):
            hidden_chunk, target = hidden[start : start + chunk_size], targets[start : start + chunk_size]
            logits = hidden_chunk @ weight.T  # (C, V) in the input (or autocast) dtype
            compute_dtype = logits.dtype
            logits = logits.float()
            valid = target != ignore_index
            target = torch.where(valid, target, 0).unsqueeze(1)
            logsumexp = torch.logsumexp(logits, dim=-1, keepdim=True)
            total += ((logsumexp - logits.gather(1, target)).squeeze(1) * valid).sum()
            if not (grad_hidden_needed or grad_weight_needed):
                continue
            # d(loss)/d(logits) = (softmax - onehot) / denominator on counted rows, zero on ignored ones
            grad_logits = logits.sub_(logsumexp).exp_()
            grad_logits.scatter_add_(1, target, torch.full_like(logits[:, :1], -1.0))
            grad_logits.mul_((valid / denominator).unsqueeze(1))
            grad_logits = grad_logits.to(compute_dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_size] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ hidden_chunk).float()
        ctx.save_for_backward(grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype))
        return total / denominator

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        grad_hidden = None if grad_hidden is None else grad_hidden * grad_output
        grad_weight = None if grad_weight is None else grad_weight * grad_output
        return grad_hidden, grad_weight, None, None, None, None


def chunked_linear_cross_entropy(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    chunk_size: int = 1024,
    shift_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """transformers' `ForCausalLMLoss(logits=hidden_states @ weight.T, labels, ...)` without the logits: fp32 loss,
    labels shifted inside unless `shift_labels` is given, the summed NLL divided by `num_items_in_batch` or, without
    it, averaged over the tokens not labelled `ignore_index` (see `ChunkedLinearCrossEntropy`). No host sync."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size!r} must be a positive integer.")
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    targets = shift_labels.reshape(-1).to(hidden.device)
    if num_items_in_batch is None:
        denominator = (targets != ignore_index).sum().clamp(min=1)
    elif torch.is_tensor(num_items_in_batch):
        denominator = num_items_in_batch.to(hidden.device)
    else:
        denominator = num_items_in_batch
    return ChunkedLinearCrossEntropy.apply(hidden, weight, targets, denominator, ignore_index, chunk_size)


class TinyLLMForCausalLM(TinyLLMPreTrainedModel, GenerationMixin):
    """TinyLLM with a language-modelling head; `labels` (B, T) are the inputs themselves, shifted inside the loss."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: TinyLLMConfig) -> None:
        super().__init__(config)
        self.model = TinyLLMModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values, kwargs),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        whole_sequence = isinstance(logits_to_keep, int) and logits_to_keep == 0
        logits = loss = None
        if labels is not None and self.training and whole_sequence and self.config.cross_entropy_chunk_size > 0:
            # Training never reads the logits (transformers' Liger path skips them too): the loss alone, by chunks.
            loss = chunked_linear_cross_entropy(
                hidden_states,
                self.lm_head.weight,
                labels,
                num_items_in_batch=kwargs.get("num_items_in_batch"),
                chunk_size=self.config.cross_entropy_chunk_size,
                shift_labels=kwargs.get("shift_labels"),
            )
        else:
            logits = self.lm_head(hidden_states)  # (B, T', V)
            if labels is not None:
                # `**kwargs` carries the Trainer's `num_items_in_batch`, which makes gradient accumulation token-exact.
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            **{CACHE_OUTPUT_NAME: output_cache(outputs)},
        )

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """transformers' `generate`; with `fast_decode` on (`generation_config.fast_decode = True`, or
        `fast_decode=True` in the call) its decoding loop is generation_tinyllm's static-cache compiled one."""
        if fast_decode_requested(generation_config, self.generation_config, kwargs):
            blocker = fast_decode_blocker(generation_config or self.generation_config, kwargs)
            if blocker is None:
                kwargs["custom_generate"] = static_compiled_decode
                kwargs["fast_decode_streamer"] = kwargs.get("streamer")
            else:
                logger.warning_once(f"fast_decode does not support {blocker}; using transformers' decoding loop.")
        return super().generate(inputs, generation_config, **kwargs)


# The task heads are transformers' generic ones, as Llama's: each builds its base with `AutoModel.from_config(config)`
# (TinyLLMPreTrainedModel.__init__ makes that resolve to TinyLLMModel) and adds a freshly initialised head, so a
# causal-LM checkpoint loads into them with only the head new. Unlike Llama's, the two classification heads set
# `accepts_loss_kwargs = False`: their forward takes `**kwargs` but their loss drops the Trainer's
# `num_items_in_batch`, so the Trainer would skip its division by the accumulation steps and train with loss and
# gradients `gradient_accumulation_steps` times too large (transformers#47688).


class TinyLLMForSequenceClassification(GenericForSequenceClassification, TinyLLMPreTrainedModel):
    """TinyLLM with a linear `score` head (no bias) on the last non-pad token: logits (B, num_labels).

    The pooled token is the rightmost one that is not `config.pad_token_id`, so left and right padding both work;
    without a pad id only batches of one are accepted. The loss follows `config.problem_type` (regression,
    single- or multi-label classification).
    """

    accepts_loss_kwargs = False


class TinyLLMForTokenClassification(GenericForTokenClassification, TinyLLMPreTrainedModel):
    """TinyLLM with dropout (`config.classifier_dropout`, default 0.1) and a linear `score` head on every token:
    logits (B, T, num_labels); `labels` (B, T) with -100 where no label applies."""

    accepts_loss_kwargs = False


class TinyLLMForQuestionAnswering(GenericForQuestionAnswering, TinyLLMPreTrainedModel):
    """TinyLLM with a linear `qa_outputs` head giving span start and end logits, each (B, T).

    Llama names this base `transformer` for backward compatibility; TinyLLM has no old checkpoints, so it keeps
    `model` and a causal-LM checkpoint loads into it like into the other heads.
    """


__all__ = [
    "TinyLLMForCausalLM",
    "TinyLLMForQuestionAnswering",
    "TinyLLMForSequenceClassification",
    "TinyLLMForTokenClassification",
    "TinyLLMModel",
    "TinyLLMPreTrainedModel",
]
