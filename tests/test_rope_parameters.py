"""RoPE parameters (`rope_parameters`, legacy `rope_scaling`): every supported type computes what transformers' Llama
computes, scaling really changes the model, Llama checkpoints with scaling convert exactly both ways, and anything
unsupported or incomplete is refused with the fix."""

import pytest
import torch
from conftest import tiny_model
from test_convert import random_llama
from transformers import AutoModelForCausalLM

from hf_tinyllm import TinyLLMConfig, TinyLLMForCausalLM
from hf_tinyllm.configuration_tinyllm import ROPE_TYPES
from hf_tinyllm.convert import from_llama, to_llama
from hf_tinyllm.modeling_tinyllm import TinyLLMRotaryEmbedding

# random_llama: head_dim 8 (LongRoPE needs head_dim / 2 = 4 factors), max_position_embeddings 64.
# original_max_position_embeddings 32 < the 80-token inputs below, so every type runs its long-context branch
# (dynamic NTK grows past max_position_embeddings = 64).
SCALED = {
    "linear": {"rope_type": "linear", "factor": 4.0},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32},
    "longrope": {
        "rope_type": "longrope",
        "short_factor": [1.0, 1.1, 1.3, 1.6],
        "long_factor": [1.0, 2.0, 4.0, 8.0],
        "original_max_position_embeddings": 32,
    },
    "llama3": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32,
    },
}
LONG = 80


def test_every_supported_type_is_tested():
    assert set(SCALED) | {"default"} == set(ROPE_TYPES)


def long_batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 99, (2, LONG), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("rope_type", sorted(SCALED))
def test_llama_with_rope_scaling_converts_exactly_both_ways(rope_type):
    rope = {"rope_theta": 500.0, **SCALED[rope_type]}
    llama = random_llama(rope_parameters=dict(rope))
    tiny = from_llama(llama)
    assert tiny.config.rope_parameters["rope_type"] == rope_type
    back = to_llama(tiny)
    ids = long_batch()
    with torch.no_grad():
        expected = llama(ids).logits
        torch.testing.assert_close(tiny(ids).logits, expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(back(ids).logits, expected, rtol=0, atol=1e-5)
    for key, value in rope.items():
        assert back.config.rope_parameters[key] == value
    # The scaled model differs from the same weights with plain RoPE: the parameters are not ignored.
    plain = TinyLLMForCausalLM(TinyLLMConfig(**{**tiny.config.to_dict(), "rope_parameters": {"rope_theta": 500.0}}))
    plain.load_state_dict(tiny.state_dict())
    with torch.no_grad():
        assert (plain.eval()(ids).logits - expected).abs().max() > 1e-4  # 10x the parity tolerance


def test_dynamic_rope_generates_the_same_tokens_as_llama_past_the_trained_length():
    llama = random_llama(rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0})
    tiny = from_llama(llama)
    prompt = long_batch(1)[:1, :60]
    kwargs = dict(max_new_tokens=12, do_sample=False, min_new_tokens=12, pad_token_id=0)
    with torch.no_grad():
        assert tiny.generate(prompt, **kwargs).tolist() == llama.generate(prompt, **kwargs).tolist()
    # Past max_position_embeddings = 64 the frequencies were recomputed for the longer sequence.
    assert tiny.model.rotary_emb.max_seq_len_cached > 64


def test_linear_factor_stretches_positions():
    """Linear RoPE with factor f at positions f * p equals plain RoPE at positions p (position interpolation)."""
    plain = tiny_model()
    config = TinyLLMConfig(**{**plain.config.to_dict(), "rope_parameters": {"rope_type": "linear", "factor": 4.0}})
    scaled = TinyLLMForCausalLM(config).eval()
    scaled.load_state_dict(plain.state_dict())
    ids = long_batch(2)[:, :12]
    positions = torch.arange(12).expand(2, -1)
    with torch.no_grad():
        mask = torch.ones_like(ids)  # with a mask, non-consecutive positions are not read as packed documents
        expected = plain(ids, attention_mask=mask, position_ids=positions).logits
        torch.testing.assert_close(
            scaled(ids, attention_mask=mask, position_ids=4 * positions).logits, expected, rtol=0, atol=1e-5
        )
        assert (
            scaled(ids, attention_mask=mask, position_ids=positions).logits - expected
        ).abs().max() > 1e-4  # 10x the parity tolerance


def test_rope_scaling_survives_save_and_load(tmp_path):
    model = tiny_model(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.rope_parameters == model.config.rope_parameters
    assert loaded.config.rope_parameters["original_max_position_embeddings"] == model.config.max_position_embeddings
    rotary = loaded.model.rotary_emb
    expected_freq, expected_scaling = TinyLLMRotaryEmbedding.compute_frequencies(model.config)
    torch.testing.assert_close(rotary.inv_freq, expected_freq, rtol=0, atol=0)
    torch.testing.assert_close(rotary.original_inv_freq, expected_freq, rtol=0, atol=0)
    assert rotary.attention_scaling == expected_scaling > 1.0  # YaRN scales attention; a lost factor would give 1.0
    ids = long_batch(3)[:, :16]
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, rtol=0, atol=0)


def test_rope_theta_keeps_working():
    config = TinyLLMConfig(rope_theta=500000.0)
    assert config.rope_parameters == {"rope_theta": 500000.0, "rope_type": "default"}
    assert config.rope_theta == 500000.0
    config.rope_theta = 1000.0
    assert config.rope_parameters["rope_theta"] == 1000.0
    # A config.json written before rope_parameters existed carries only rope_theta.
    old = {k: v for k, v in TinyLLMConfig().to_dict().items() if k != "rope_parameters"}
    assert TinyLLMConfig.from_dict({**old, "rope_theta": 123.0}).rope_parameters["rope_theta"] == 123.0
    # An explicit rope_theta inside rope_parameters wins over the top-level default.
    assert TinyLLMConfig(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 7.0}).rope_theta == 7.0


BAD_ROPE = [
    (dict(rope_parameters={"rope_type": "su"}), "rope_type='su' is not supported by TinyLLM; choose one of"),
    (dict(rope_parameters={"rope_type": "linear"}), "rope_parameters['factor']=None must be a number >= 1"),
    (dict(rope_scaling={"rope_type": "dynamic", "factor": 0.5}), "rope_parameters['factor']=0.5 must be a number >= 1"),
    (dict(rope_parameters={"rope_type": "llama3", "factor": 8.0}), "Missing required keys in `rope_parameters`"),
    (dict(rope_parameters=[("rope_type", "linear")]), "must be a dict such as"),
    (dict(rope_parameters={"rope_theta": -1.0}), "rope_theta=-1.0 must be a number > 0"),
    (
        dict(rope_parameters={"rope_type": "linear", "factor": 2.0}, rope_scaling={"rope_type": "linear", "factor": 4}),
        "pass only rope_parameters",
    ),
    (
        dict(position_embedding_type="learned", rope_parameters={"rope_type": "linear", "factor": 2.0}),
        "rope_parameters applies only to position_embedding_type='rope'",
    ),
]


@pytest.mark.parametrize(("fields", "message"), BAD_ROPE, ids=[m.split(" ")[0] for _, m in BAD_ROPE])
def test_bad_rope_parameters_are_refused_with_the_fix(fields, message):
    with pytest.raises(ValueError) as info:
        TinyLLMConfig(**fields)
    assert message in str(info.value)


def test_an_unsupported_llama_rope_type_is_refused_by_from_llama():
    llama = random_llama()
    llama.config.rope_parameters = {"rope_type": "proportional", "rope_theta": 10000.0}
    with pytest.raises(ValueError, match="rope_type='proportional' is not supported by TinyLLM"):
        from_llama(llama)
