"""Registration, save_pretrained -> from_pretrained, and loading as remote code without the package."""

import ast
import json

import pytest
import torch
from conftest import padded_batch, tiny_model
from safetensors import safe_open
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from hf_tinyllm import TinyLLMConfig, TinyLLMForCausalLM, TinyLLMModel
from hf_tinyllm.modeling_tinyllm import TinyLLMRotaryEmbedding


def test_auto_classes_resolve_tinyllm():
    config = AutoConfig.for_model("tinyllm", vocab_size=99, hidden_size=32, num_attention_heads=4)
    assert isinstance(config, TinyLLMConfig)
    assert type(AutoModel.from_config(config)) is TinyLLMModel
    assert type(AutoModelForCausalLM.from_config(config)) is TinyLLMForCausalLM


def test_v5_contract_of_the_model_classes():
    model = tiny_model()
    # v4's list form crashes v5's post_init; the dict maps target -> source.
    assert TinyLLMForCausalLM._tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}
    assert model.all_tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}  # set by post_init
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.can_generate()  # GenerationMixin inherited explicitly
    assert model.loss_type == "ForCausalLM"
    assert model.config._attn_implementation == "sdpa"


@pytest.fixture
def saved(tmp_path, arch):
    model = tiny_model(**arch)
    model.save_pretrained(tmp_path)
    return model, tmp_path


def test_save_then_from_pretrained_gives_identical_logits_and_buffers(saved):
    model, path = saved
    loaded = AutoModelForCausalLM.from_pretrained(path).eval()
    assert type(loaded) is TinyLLMForCausalLM
    ids, mask = padded_batch()
    torch.testing.assert_close(
        loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits, rtol=0, atol=0
    )
    expected_buffers = dict(model.named_buffers())
    loaded_buffers = dict(loaded.named_buffers())
    assert loaded_buffers.keys() == expected_buffers.keys()
    for name, buffer in expected_buffers.items():
        torch.testing.assert_close(loaded_buffers[name], buffer, rtol=0, atol=0)
    assert loaded.config.tie_word_embeddings == (loaded.lm_head.weight is loaded.model.embed_tokens.weight)


def test_rope_buffer_is_recomputed_after_meta_device_loading(tmp_path):
    """transformers 5.x materialises non-persistent buffers empty; _init_weights must recompute inv_freq."""
    tiny_model().save_pretrained(tmp_path)
    loaded = TinyLLMForCausalLM.from_pretrained(tmp_path)
    inv_freq = loaded.model.rotary_emb.inv_freq
    assert inv_freq.device.type == "cpu"
    torch.testing.assert_close(inv_freq, TinyLLMRotaryEmbedding.compute_frequencies(loaded.config)[0], rtol=0, atol=0)
    assert inv_freq[0].item() == 1.0  # 1 / theta^0


def test_saved_folder_contents(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [
        "config.json",
        "configuration_tinyllm.py",
        "generation_config.json",
        "generation_tinyllm.py",
        "model.safetensors",
        "modeling_tinyllm.py",
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "tinyllm"
    assert config["architectures"] == ["TinyLLMForCausalLM"]
    assert config["auto_map"] == {
        "AutoConfig": "configuration_tinyllm.TinyLLMConfig",
        "AutoModel": "modeling_tinyllm.TinyLLMModel",
        "AutoModelForCausalLM": "modeling_tinyllm.TinyLLMForCausalLM",
        "AutoModelForSequenceClassification": "modeling_tinyllm.TinyLLMForSequenceClassification",
        "AutoModelForTokenClassification": "modeling_tinyllm.TinyLLMForTokenClassification",
        "AutoModelForQuestionAnswering": "modeling_tinyllm.TinyLLMForQuestionAnswering",
    }
    generation = json.loads((tmp_path / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"], generation["pad_token_id"]) == (1, 2, 0)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys
    assert "lm_head.weight" not in keys  # the tied head is stored once
    assert not any("inv_freq" in k for k in keys)
    for name in ("modeling_tinyllm.py", "configuration_tinyllm.py", "generation_tinyllm.py"):
        tree = ast.parse((tmp_path / name).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}  # fmt: skip
        imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom) and node.level == 0}  # fmt: skip
        assert imported <= {"torch", "transformers", "math", "inspect", "functools", "typing", "collections"}, (
            name, imported)  # fmt: skip
    modeling = (tmp_path / "modeling_tinyllm.py").read_text()
    assert "from .configuration_tinyllm import TESTED_TRANSFORMERS, TINYLLM_CODE_VERSION, TinyLLMConfig" in modeling


def test_untied_model_stores_its_head(tmp_path):
    model = tiny_model(tie_word_embeddings=False)
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert "lm_head.weight" in set(f.keys())
    loaded = TinyLLMForCausalLM.from_pretrained(tmp_path)
    assert loaded.lm_head.weight is not loaded.model.embed_tokens.weight
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight, rtol=0, atol=0)


def test_auto_model_loads_the_base_of_a_causal_lm_checkpoint(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path)
    base = AutoModel.from_pretrained(tmp_path).eval()
    assert type(base) is TinyLLMModel
    ids, mask = padded_batch()
    torch.testing.assert_close(
        base(ids, attention_mask=mask).last_hidden_state,
        model.model(ids, attention_mask=mask).last_hidden_state,
        rtol=0,
        atol=0,
    )


REMOTE_LOAD = """
import torch
from transformers import AutoModel, AutoModelForCausalLM
path = {path!r}
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
base = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
ids, mask = torch.tensor({ids}), torch.tensor({mask})
with torch.no_grad():
    logits = model(ids, attention_mask=mask).logits
generated = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
fast = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, fast_decode=True)
result = {{"logits": logits.tolist(), "base": type(base).__name__, "module": type(model).__module__,
          "inv_freq": model.model.rotary_emb.inv_freq.tolist(), "generated": generated.tolist(),
          "fast": fast.tolist(), "fast_used": bool(model.__dict__.get("_fast_decode_caches"))}}
"""


def test_loads_with_trust_remote_code_where_the_package_is_not_importable(tmp_path, without_package):
    # With RoPE scaling, so the remote code's copy of the config and rotary embedding is checked on it too.
    model = tiny_model(rope_parameters={"rope_type": "linear", "factor": 2.0})
    model.save_pretrained(tmp_path / "model")
    ids, mask = padded_batch()
    code = REMOTE_LOAD.format(path=str(tmp_path / "model"), ids=ids.tolist(), mask=mask.tolist())
    out = without_package.run(code)
    assert out["base"] == "TinyLLMModel"
    assert out["module"].startswith("transformers_modules")
    with torch.no_grad():
        expected = model(ids, attention_mask=mask).logits
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.tensor(out["inv_freq"]), model.model.rotary_emb.inv_freq)
    expected_generated = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert out["generated"] == expected_generated.tolist()
    assert out["fast_used"] and out["fast"] == expected_generated.tolist()  # generation_tinyllm.py came along


def test_dtype_is_kept_on_save_and_can_be_chosen_on_load(tmp_path):
    """v5 loads with dtype="auto": a bf16 checkpoint comes back bf16 unless dtype=torch.float32 is asked for."""
    tiny_model().to(torch.bfloat16).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(tmp_path).dtype == torch.bfloat16
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    assert loaded.dtype == torch.float32
    assert loaded.model.rotary_emb.inv_freq.dtype == torch.float32
