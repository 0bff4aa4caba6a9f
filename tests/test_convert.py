"""Exact interop with transformers' Llama and GPT-2, and export to a plain Llama folder."""

import json

import pytest
import torch
from conftest import padded_batch, script_output, tiny_model
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from hf_tinyllm import TinyLLMForCausalLM
from hf_tinyllm.convert import export_llama, from_gpt2, from_llama, from_pretrained_any, to_llama

TOL = 1e-5
LLAMA_VARIANTS = {
    "tied_gqa": dict(tie_word_embeddings=True, num_key_value_heads=2),
    "untied_mha_bias": dict(tie_word_embeddings=False, num_key_value_heads=4, attention_bias=True, mlp_bias=True),
    "wide_heads": dict(
        head_dim=16, num_key_value_heads=1, rope_parameters={"rope_type": "default", "rope_theta": 500.0}
    ),
}


def random_llama(seed=0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    fields = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(LlamaConfig(**{**fields, **overrides})).eval()


def random_gpt2(seed=0, **overrides) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    fields = dict(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=1, eos_token_id=2)
    return GPT2LMHeadModel(GPT2Config(**{**fields, **overrides})).eval()


def assert_same_logits(a, b, ids, mask):
    with torch.no_grad():
        for m in (None, mask):
            la, lb = a(ids, attention_mask=m).logits, b(ids, attention_mask=m).logits
            real = torch.ones_like(ids, dtype=torch.bool) if m is None else m.bool()
            assert torch.equal(la[real], lb[real]), (la - lb)[real].abs().max().item()


@pytest.mark.parametrize("variant", sorted(LLAMA_VARIANTS))
def test_llama_converts_exactly(variant):
    llama = random_llama(**LLAMA_VARIANTS[variant])
    tiny = from_llama(llama)
    assert isinstance(tiny, TinyLLMForCausalLM)
    assert tiny.config.tie_word_embeddings == llama.config.tie_word_embeddings
    assert tiny.num_parameters() == llama.num_parameters()
    assert_same_logits(llama, tiny, *padded_batch())


@pytest.mark.parametrize("overrides", [dict(), dict(n_inner=40, activation_function="gelu", tie_word_embeddings=False)])
def test_gpt2_converts_exactly(overrides):
    gpt2 = random_gpt2(**overrides)
    tiny = from_gpt2(gpt2)
    assert tiny.config.position_embedding_type == "learned" and tiny.config.norm_type == "layernorm"
    assert tiny.num_parameters() == gpt2.num_parameters()
    assert_same_logits(gpt2, tiny, *padded_batch())
    # Greedy generation (with GPT-2's padding-aware positions) matches too.
    ids, mask = padded_batch()
    kw = dict(max_new_tokens=5, min_new_tokens=5, do_sample=False, pad_token_id=0)
    assert torch.equal(gpt2.generate(ids, attention_mask=mask, **kw), tiny.generate(ids, attention_mask=mask, **kw))


def test_gpt2_options_without_an_equivalent_are_refused():
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True has no TinyLLM equivalent"):
        from_gpt2(random_gpt2(scale_attn_by_inverse_layer_idx=True))


def test_tinyllm_to_llama_is_exact():
    tiny = tiny_model()
    llama = to_llama(tiny)
    assert type(llama) is LlamaForCausalLM
    assert_same_logits(tiny, llama, *padded_batch())


LOAD_PLAIN = """
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({path!r}).eval()
with torch.no_grad():
    logits = model(torch.tensor({ids}), attention_mask=torch.tensor({mask})).logits
result = {{"class": type(model).__name__, "module": type(model).__module__, "logits": logits.tolist()}}
"""


def test_exported_llama_folder_loads_without_remote_code_and_round_trips(tmp_path, without_package):
    tiny = tiny_model()
    path = export_llama(tiny, tmp_path / "llama")
    files = sorted(p.name for p in path.iterdir())
    assert files == ["config.json", "generation_config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config

    ids, mask = padded_batch()
    out = without_package.run(LOAD_PLAIN.format(path=str(path), ids=ids.tolist(), mask=mask.tolist()))
    assert out["class"] == "LlamaForCausalLM" and out["module"].startswith("transformers.models.llama")
    with torch.no_grad():
        expected = tiny(ids, attention_mask=mask).logits
    real = mask.bool()
    assert (torch.tensor(out["logits"]) - expected)[real].abs().max().item() <= TOL

    back = from_pretrained_any(path)
    assert isinstance(back, TinyLLMForCausalLM)
    assert_same_logits(tiny, back.eval(), ids, mask)


def test_from_pretrained_any_reads_gpt2_and_tinyllm_folders(tmp_path):
    gpt2 = random_gpt2()
    gpt2.save_pretrained(tmp_path / "gpt2")
    assert_same_logits(gpt2, from_pretrained_any(tmp_path / "gpt2").eval(), *padded_batch())
    tiny = tiny_model()
    tiny.save_pretrained(tmp_path / "tiny")
    assert_same_logits(tiny, from_pretrained_any(tmp_path / "tiny").eval(), *padded_batch())


def test_export_refuses_a_non_llama_architecture_and_keeps_the_old_folder(tmp_path):
    good = export_llama(tiny_model(), tmp_path / "llama")
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    with pytest.raises(ValueError, match="norm_type='layernorm' \\(Llama needs 'rmsnorm'\\)"):
        export_llama(tiny_model(norm_type="layernorm"), tmp_path / "llama")
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before


def test_a_failed_export_leaves_the_previous_folder_intact(tmp_path, monkeypatch):
    good = export_llama(tiny_model(seed=1), tmp_path / "llama")
    before = {p.name: p.read_bytes() for p in good.iterdir()}

    def crash(self, directory, *args, **kwargs):
        (directory / "model.safetensors").write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(LlamaForCausalLM, "save_pretrained", crash)
    with pytest.raises(OSError, match="disk full"):
        export_llama(tiny_model(seed=2), tmp_path / "llama")
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["llama"]  # no temporary folder left behind
    monkeypatch.undo()
    AutoModelForCausalLM.from_pretrained(good)


def test_convert_script_carries_the_tokenizer_and_writes_loadable_folders(tmp_path, word_tokenizer, capsys):
    gpt2 = random_gpt2()
    gpt2.save_pretrained(tmp_path / "gpt2")
    word_tokenizer.save_pretrained(tmp_path / "gpt2")
    tiny = tiny_model()
    tiny.save_pretrained(tmp_path / "tiny")

    def convert(*argv):
        return script_output("scripts/convert.py", list(argv), capsys)

    assert "tokenizer.json" in convert("--source", str(tmp_path / "gpt2"), "--output_dir", str(tmp_path / "out"))
    converted = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    assert isinstance(converted, TinyLLMForCausalLM)
    assert_same_logits(gpt2, converted, *padded_batch())

    convert("--source", str(tmp_path / "tiny"), "--output_dir", str(tmp_path / "llama"), "--to_llama")
    llama = AutoModelForCausalLM.from_pretrained(tmp_path / "llama").eval()
    assert type(llama) is LlamaForCausalLM
    assert_same_logits(tiny, llama, *padded_batch())
