import pytest
from transformers import AutoConfig

from hf_tinyllm import TinyLLMConfig, TinyLLMForCausalLM
from hf_tinyllm.configuration_tinyllm import default_intermediate_size


def test_defaults_are_a_llama_family_model():
    config = TinyLLMConfig()
    assert (config.position_embedding_type, config.norm_type, config.mlp_type) == ("rope", "rmsnorm", "swiglu")
    assert config.hidden_act == "silu"
    assert config.head_dim == config.hidden_size // config.num_attention_heads
    assert config.num_key_value_heads == config.num_attention_heads
    assert config.tie_word_embeddings is True and config.use_cache is True
    assert config.is_llama_compatible


def test_derived_sizes():
    assert default_intermediate_size(768, "swiglu") == 2048  # 8/3 * 768 = 2048, already a multiple of 32
    assert default_intermediate_size(100, "swiglu") == 288  # 266 rounded up to a multiple of 32
    assert default_intermediate_size(100, "gelu") == 400
    assert TinyLLMConfig(mlp_type="gelu").hidden_act == "gelu_pytorch_tanh"
    assert TinyLLMConfig(mlp_type="relu2").hidden_act == "relu2"
    assert TinyLLMConfig(hidden_size=96, num_attention_heads=4, head_dim=16).head_dim == 16


def test_round_trips_through_dict_and_auto_config(tmp_path):
    config = TinyLLMConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=1, qk_norm=True, mlp_type="gelu")
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, TinyLLMConfig)
    ignored = {"_name_or_path"}
    assert {k: v for k, v in loaded.to_dict().items() if k not in ignored} == {
        k: v for k, v in config.to_dict().items() if k not in ignored
    }


BAD_CONFIGS = [
    (dict(hidden_size=100, num_attention_heads=3), "hidden_size=100 is not divisible by num_attention_heads=3"),
    (dict(num_attention_heads=4, num_key_value_heads=3), "num_attention_heads=4 is not divisible by num_key_value"),
    (dict(hidden_size=0), "hidden_size=0 must be a positive integer"),
    (dict(vocab_size=-5), "vocab_size=-5 must be a positive integer"),
    (dict(num_hidden_layers=0), "num_hidden_layers=0 must be a positive integer"),
    (dict(intermediate_size=0), "intermediate_size=0 must be a positive integer"),
    (dict(max_position_embeddings=0), "max_position_embeddings=0 must be a positive integer"),
    (dict(num_key_value_heads=0), "num_key_value_heads=0 must be a positive integer"),
    (dict(hidden_size=12.5), "hidden_size=12.5 must be a positive integer"),
    (dict(head_dim=-8), "head_dim=-8 must be a positive integer"),
    (dict(position_embedding_type="alibi"), "position_embedding_type='alibi' is not supported; choose one of"),
    (dict(norm_type="batchnorm"), "norm_type='batchnorm' is not supported"),
    (dict(mlp_type="moe"), "mlp_type='moe' is not supported"),
    (dict(hidden_act="swoosh"), "hidden_act='swoosh' is not a known activation"),
    (dict(hidden_size=36, num_attention_heads=4), "head_dim=9 is odd, but RoPE rotates pairs"),
    (dict(rope_theta=0.0), "rope_theta=0.0 must be a number > 0"),
    (dict(rms_norm_eps=0.0), "rms_norm_eps=0.0 must be > 0"),
    (dict(initializer_range=-0.02), "initializer_range=-0.02 must be > 0"),
    (dict(attention_dropout=1.0), "attention_dropout=1.0 must be in [0, 1)"),
    (dict(residual_dropout=-0.1), "residual_dropout=-0.1 must be in [0, 1)"),
    (dict(vocab_size=10, eos_token_id=10), "eos_token_id=10 is outside the vocabulary [0, 10)"),
    (dict(vocab_size=10, pad_token_id=-1), "pad_token_id=-1 is outside the vocabulary"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_CONFIGS, ids=[m.split(" ")[0] for _, m in BAD_CONFIGS])
def test_bad_config_raises_a_clear_error(fields, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        TinyLLMConfig(**fields)


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match=r"choose a head count that divides hidden_size \(e.g. 2\) or set head_dim"):
        TinyLLMConfig(hidden_size=100, num_attention_heads=3)
    with pytest.raises(ValueError, match=r"choose num_key_value_heads among \[1, 2, 4\]"):
        TinyLLMConfig(num_attention_heads=4, num_key_value_heads=3)
    with pytest.raises(ValueError, match="or position_embedding_type='learned'"):
        TinyLLMConfig(hidden_size=36, num_attention_heads=4)


def test_odd_head_dim_is_fine_with_learned_positions():
    assert TinyLLMConfig(hidden_size=36, num_attention_heads=4, position_embedding_type="learned").head_dim == 9


def test_model_revalidates_an_edited_config():
    config = TinyLLMConfig(hidden_size=32, num_attention_heads=4)
    config.num_key_value_heads = 3
    with pytest.raises(ValueError, match="num_key_value_heads=3"):
        TinyLLMForCausalLM(config)


def test_llama_incompatibilities_are_listed():
    config = TinyLLMConfig(norm_type="layernorm", qk_norm=True)
    problems = config.llama_incompatibilities()
    assert problems == ["norm_type='layernorm' (Llama needs 'rmsnorm')", "qk_norm=True (Llama needs False)"]
    assert not config.is_llama_compatible
