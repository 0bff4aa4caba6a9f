"""TinyLLM configuration: sizes, architecture switches and their validation, in one place.

Self-contained (transformers only) because it is copied next to the weights and runs as remote code.
"""

from transformers import PreTrainedConfig
from transformers.activations import ACT2FN

# The hf_tinyllm release this file belongs to (the package's `__version__`). Saved folders record it in config.json
# as `tinyllm_code_version`, so `tinyllm refresh-code` can tell which code a folder or Hub repository carries.
TINYLLM_CODE_VERSION = "0.3.0"
# The oldest and newest transformers releases this code is tested on (CI: constraints/, README "Tested versions").
TESTED_TRANSFORMERS = ("5.23.0", "5.25.0")

POSITION_EMBEDDING_TYPES = ("rope", "learned")
NORM_TYPES = ("rmsnorm", "layernorm")
MLP_TYPES = ("swiglu", "gelu", "relu2")
# The activation each MLP type uses unless `hidden_act` says otherwise. `swiglu` is the gated MLP of Llama
# (act(gate) * up); `gelu` is GPT-2's (tanh approximation, as `gelu_new`); `relu2` is squared ReLU (Primer, nanochat).
DEFAULT_ACTIVATIONS = {"swiglu": "silu", "gelu": "gelu_pytorch_tanh", "relu2": "relu2"}
# The RoPE variants TinyLLM computes with transformers' own initialisation functions, exactly as Llama does.
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")
# Variants that stretch the frequencies by `factor` (>= 1: a factor below 1 would shrink the context instead).
SCALED_ROPE_TYPES = ("linear", "dynamic", "yarn", "llama3")
_ROPE_EXAMPLE = {"rope_type": "linear", "factor": 2.0}


def default_intermediate_size(hidden_size: int, mlp_type: str, multiple_of: int = 32) -> int:
    """The MLP width used when `intermediate_size` is not given.

    4 * hidden for plain MLPs (GPT-2); 8/3 * hidden for the gated MLP so that its three matrices hold the same
    parameters as the plain MLP's two (Llama), rounded up to a multiple of `multiple_of` for efficient matmuls.
    """
    if mlp_type != "swiglu":
        return 4 * hidden_size
    width = int(8 * hidden_size / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


class TinyLLMConfig(PreTrainedConfig):
    r"""Configuration of a TinyLLM decoder.

    The defaults describe a Llama-family model (RoPE, RMSNorm, SwiGLU, no biases, tied embeddings); the switches cover
    GPT-2 (`position_embedding_type="learned"`, `norm_type="layernorm"`, `mlp_type="gelu"`, biases on) so that both
    families convert into TinyLLM exactly (see `hf_tinyllm.convert`).

    Args:
        vocab_size: number of tokens.
        hidden_size: width of the residual stream.
        intermediate_size: MLP width; default from `default_intermediate_size`.
        num_hidden_layers: number of decoder layers.
        num_attention_heads: query heads.
        num_key_value_heads: key/value heads (grouped-query attention); default = `num_attention_heads`.
        head_dim: width of one head; default `hidden_size // num_attention_heads`.
        max_position_embeddings: longest sequence; the size of the table for learned positions.
        rope_theta: RoPE base frequency; kept in `rope_parameters["rope_theta"]` (`config.rope_theta` reads it there).
        rope_parameters: transformers' RoPE dict: `rope_type` (one of `ROPE_TYPES`), `rope_theta` and the type's
            scaling fields, e.g. `{"rope_type": "linear", "factor": 4.0}` or `{"rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 512}`. The legacy name `rope_scaling` is accepted too.
        rms_norm_eps: epsilon of the normalisation layers (RMSNorm or LayerNorm, by `norm_type`).
        initializer_range: standard deviation of the normal initialisation (see `TinyLLMPreTrainedModel._init_weights`).
        tie_word_embeddings: share the input embedding with the output projection.
        use_cache: return a KV cache from the forward pass (generation).
        pad_token_id / bos_token_id / eos_token_id: special token ids.
        attention_dropout: dropout on attention probabilities (training only).
        residual_dropout: dropout on the embedding output and on each sub-layer's output before it joins the residual
            stream (GPT-2's `embd_pdrop`/`resid_pdrop`; training only).
        position_embedding_type: `"rope"` (rotary, Llama) or `"learned"` (absolute table, GPT-2).
        norm_type: `"rmsnorm"` (Llama) or `"layernorm"` (GPT-2, with bias).
        mlp_type: `"swiglu"` (gated, Llama), `"gelu"` (GPT-2) or `"relu2"` (squared ReLU).
        hidden_act: activation name from `transformers.activations.ACT2FN`; default by `mlp_type`.
        attention_bias: biases on q/k/v/o projections.
        mlp_bias: biases on the MLP projections.
        qk_norm: normalise queries and keys per head before RoPE (OLMo-2 / Qwen3 style), which steadies training.
        cross_entropy_chunk_size: in training with labels, compute the loss from the hidden states this many tokens
            at a time (`chunked_linear_cross_entropy`), never holding fp32 logits over the whole vocabulary, and
            return no logits; 0 (default) computes the full logits and transformers' loss.
    """

    model_type = "tinyllm"
    # Output keys the Trainer's evaluation leaves out of the predictions: the KV cache, under its name before and
    # after transformers 5.24.
    keys_to_ignore_at_inference = ["cache", "past_key_values"]
    # Tensor parallelism (`from_pretrained(..., tp_plan="auto")` under torchrun), as Llama declares it: q/k/v and the
    # MLP's input projections split by output columns (whole heads per rank), o_proj and down_proj by input rows,
    # followed by an all-reduce. `gate_proj` exists only in the gated MLP; a plan entry without a module is unused.
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    # Pipeline parallelism: the inputs and outputs of each stage of the base model.
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    def __init__(
        self,
        vocab_size=8192,
        hidden_size=256,
        intermediate_size=None,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=None,
        head_dim=None,
        max_position_embeddings=512,
        rope_theta=10000.0,
        rope_parameters=None,
        rms_norm_eps=1e-6,
        initializer_range=0.02,
        tie_word_embeddings=True,
        use_cache=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        attention_dropout=0.0,
        residual_dropout=0.0,
        position_embedding_type="rope",
        norm_type="rmsnorm",
        mlp_type="swiglu",
        hidden_act=None,
        attention_bias=False,
        mlp_bias=False,
        qk_norm=False,
        cross_entropy_chunk_size=0,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.mlp_type = mlp_type
        self.intermediate_size = intermediate_size
        if intermediate_size is None and mlp_type in MLP_TYPES and isinstance(hidden_size, int):
            self.intermediate_size = default_intermediate_size(hidden_size, mlp_type)
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        # Left None when heads do not divide the width: validate_architecture then explains the fix.
        self.head_dim = head_dim if head_dim is not None else _exact_quotient(hidden_size, num_attention_heads)
        self.max_position_embeddings = max_position_embeddings
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        # transformers 5.x: tie_word_embeddings, use_cache and the token ids are no longer base-config fields; a model
        # config must declare them or embeddings are silently untied.
        self.tie_word_embeddings = tie_word_embeddings
        self.use_cache = use_cache
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.attention_dropout = attention_dropout
        self.residual_dropout = residual_dropout
        self.position_embedding_type = position_embedding_type
        self.norm_type = norm_type
        self.hidden_act = DEFAULT_ACTIVATIONS.get(mlp_type) if hidden_act is None else hidden_act
        self.attention_bias = attention_bias
        self.mlp_bias = mlp_bias
        self.qk_norm = qk_norm
        self.cross_entropy_chunk_size = cross_entropy_chunk_size
        rope_scaling = kwargs.pop("rope_scaling", None)
        if rope_scaling is not None and rope_parameters is not None and rope_scaling != rope_parameters:
            raise ValueError(
                "Both rope_parameters and its legacy name rope_scaling were given, with different values; pass only "
                "rope_parameters."
            )
        for value in (rope_parameters, rope_scaling):
            if value is not None and not isinstance(value, dict):
                raise ValueError(f"rope_parameters={value!r} must be a dict such as {_ROPE_EXAMPLE}.")
        # One dict holds every RoPE setting; transformers' `standardize_rope_params` fills in `rope_type` and, for
        # llama3/yarn/longrope, `original_max_position_embeddings`. Validated with the other fields before
        # `super().__init__` runs transformers' own checks, which raise a bare KeyError for a missing field.
        # Learned positions have no RoPE, so no `rope_parameters` attribute: transformers then skips its RoPE checks.
        if position_embedding_type != "learned":
            self.rope_parameters = {"rope_theta": rope_theta, **dict(rope_parameters or rope_scaling or {})}
            self.standardize_rope_params()
        elif rope_parameters or rope_scaling:
            raise ValueError(
                "rope_parameters applies only to position_embedding_type='rope'; remove it for learned positions."
            )
        self.validate_architecture()
        kwargs.pop("tinyllm_code_version", None)  # what wrote a loaded config; to_dict writes this file's own
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        """transformers' dict of the config, plus the hf_tinyllm release whose code wrote it (`tinyllm_code_version`,
        beside transformers' own `transformers_version`)."""
        output = super().to_dict()
        output["tinyllm_code_version"] = TINYLLM_CODE_VERSION
        return output

    @property
    def rope_theta(self) -> float:
        """The RoPE base frequency, stored in `rope_parameters` (transformers 5.x keeps it there)."""
        return (getattr(self, "rope_parameters", None) or {}).get("rope_theta", self.default_theta)

    @rope_theta.setter
    def rope_theta(self, value: float) -> None:
        self.rope_parameters = {**(getattr(self, "rope_parameters", None) or {}), "rope_theta": value}

    def validate_architecture(self) -> None:
        """Raise a `ValueError` naming the field and the fix for any size or switch combination that cannot work.

        Runs when the config is built and again when a model is built from it (fields may be edited in between).
        """
        _check_choice("position_embedding_type", self.position_embedding_type, POSITION_EMBEDDING_TYPES)
        _check_choice("norm_type", self.norm_type, NORM_TYPES)
        _check_choice("mlp_type", self.mlp_type, MLP_TYPES)
        positive = (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer; set {name} to a value >= 1.")
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads
        if self.head_dim is None:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={heads}; choose a head count "
                f"that divides hidden_size (e.g. {_largest_divisor_at_most(self.hidden_size, heads)}) or set head_dim "
                "explicitly."
            )
        if isinstance(self.head_dim, bool) or not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise ValueError(f"head_dim={self.head_dim!r} must be a positive integer; set head_dim to a value >= 1.")
        if heads % kv_heads != 0:
            raise ValueError(
                f"num_attention_heads={heads} is not divisible by num_key_value_heads={kv_heads}; each key/value head "
                f"must serve a whole group of query heads: choose num_key_value_heads among {_divisors(heads)}."
            )
        if self.position_embedding_type == "rope":
            if self.head_dim % 2 != 0:
                raise ValueError(
                    f"head_dim={self.head_dim} is odd, but RoPE rotates pairs of dimensions; use an even head_dim "
                    "(adjust hidden_size or num_attention_heads) or position_embedding_type='learned'."
                )
            self.validate_rope_parameters()
        if not self.rms_norm_eps > 0:
            raise ValueError(f"rms_norm_eps={self.rms_norm_eps!r} must be > 0; use e.g. 1e-6 (RMSNorm) or 1e-5.")
        if not self.initializer_range > 0:
            raise ValueError(f"initializer_range={self.initializer_range!r} must be > 0; the usual value is 0.02.")
        chunk = self.cross_entropy_chunk_size
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 0:
            raise ValueError(
                f"cross_entropy_chunk_size={chunk!r} must be an integer >= 0; use e.g. 4096 to compute the training "
                "loss by chunks of tokens, or 0 for the full logits."
            )
        for name in ("attention_dropout", "residual_dropout"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r} must be in [0, 1); use 0.0 to disable dropout.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not a known activation; choose one of {sorted(ACT2FN)} or leave it "
                f"unset for the {self.mlp_type} default ({DEFAULT_ACTIVATIONS[self.mlp_type]!r})."
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            ids = getattr(self, name)
            for token_id in ids if isinstance(ids, (list, tuple)) else [ids]:
                if token_id is not None and not 0 <= token_id < self.vocab_size:
                    raise ValueError(
                        f"{name}={token_id} is outside the vocabulary [0, {self.vocab_size}); use an id below "
                        f"vocab_size={self.vocab_size} or set {name}=None."
                    )

    def validate_rope_parameters(self) -> None:
        """Check `rope_parameters` with transformers' own per-type validation, raising `ValueError` with the fix."""
        rope = self.rope_parameters
        if not isinstance(rope, dict):
            raise ValueError(f"rope_parameters={rope!r} must be a dict such as {_ROPE_EXAMPLE}.")
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ROPE_TYPES:
            raise ValueError(
                f"rope_type={rope_type!r} is not supported by TinyLLM; choose one of {list(ROPE_TYPES)} (transformers' "
                "RoPE initialisation functions) or remove rope_parameters for plain RoPE."
            )
        theta = rope.get("rope_theta")
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 0:
            raise ValueError(f"rope_theta={theta!r} must be a number > 0; the usual value is 10000.0.")
        if rope_type in SCALED_ROPE_TYPES:
            factor = rope.get("factor")
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or factor < 1:
                raise ValueError(
                    f"rope_parameters['factor']={factor!r} must be a number >= 1 for rope_type={rope_type!r}: the "
                    "ratio of the new context length to the trained one (e.g. 4.0 for 4x longer sequences)."
                )
        try:
            self.validate_rope()
        except KeyError as err:
            raise ValueError(f"{err.args[0]}; add them to rope_parameters (see RopeParameters).") from None

    @property
    def is_llama_compatible(self) -> bool:
        """Whether this architecture is exactly a transformers `LlamaForCausalLM` (see `convert.to_llama`)."""
        return not self.llama_incompatibilities()

    def llama_incompatibilities(self) -> list[str]:
        """The settings that keep this config from being a plain Llama, each with the value Llama needs."""
        required = {
            "position_embedding_type": "rope",
            "norm_type": "rmsnorm",
            "mlp_type": "swiglu",
            "qk_norm": False,
        }
        return [f"{k}={getattr(self, k)!r} (Llama needs {v!r})" for k, v in required.items() if getattr(self, k) != v]


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not supported; choose one of {list(allowed)}.")


def _exact_quotient(n: object, d: object) -> int | None:
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (n, d))
    return n // d if ints and d > 0 and n % d == 0 else None


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in _divisors(n) if d <= max(limit, 1))


__all__ = ["TinyLLMConfig"]
