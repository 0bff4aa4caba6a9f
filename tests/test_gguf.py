"""GGUF export: the file loads back into transformers as the same function (exactly in f32, as the model with rounded
weights in f16 / q8_0), with the same tokenizer, in llama.cpp's Q/K layout; non-Llama configs are refused."""

import math

import pytest
import torch
from conftest import ARCHITECTURES, cli_user_error, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

import hf_tinyllm  # noqa: F401  (registers TinyLLM with the Auto classes)
from hf_tinyllm.cli import main as cli_main
from hf_tinyllm.convert import export_gguf
from hf_tinyllm.gguf_export import _permute_rotary

pytest.importorskip("gguf")

SENTENCES = [
    "two plus three equals five.",
    "the queen walked to the palace.",
    "the capital of france is paris.",
    "<|user|>who is the king?<|endoftext|>",
]
Q8_BLOCK = 32


@pytest.fixture(scope="module")
def original(trained_tiny_dir):
    return AutoModelForCausalLM.from_pretrained(trained_tiny_dir).eval(), AutoTokenizer.from_pretrained(
        trained_tiny_dir
    )


def load_gguf(path):
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


def logits(model, tokenizer) -> torch.Tensor:
    """Logits (sum of T over SENTENCES, V) of each sentence, concatenated."""
    with torch.no_grad():
        return torch.cat([model(**tokenizer(s, return_tensors="pt")).logits[0] for s in SENTENCES])


def with_rounded_matrices(model, round_fn):
    """A copy of `model` whose matrices (not the 1-D norms, which GGUF keeps in f32) went through `round_fn`."""
    copy = type(model)(model.config).eval()
    copy.load_state_dict(model.state_dict())
    with torch.no_grad():
        for p in copy.parameters():
            if p.ndim >= 2:
                p.copy_(round_fn(p))
    return copy


def q8_0_by_hand(w: torch.Tensor) -> torch.Tensor:
    """llama.cpp's Q8_0 round trip: per block of 32 along a row, scale d = max|x| / 127 stored as f16, and
    q = x / d rounded half away from zero to int8; the loader reads back q * d."""
    blocks = w.reshape(-1, Q8_BLOCK)
    d = blocks.abs().amax(dim=1, keepdim=True) / 127
    scaled = torch.where(d > 0, blocks / d, 0.0)
    q = torch.sign(scaled) * torch.floor(scaled.abs() + 0.5)
    return (q * d.half().float()).reshape(w.shape)


def test_f32_round_trip_is_exact(original, trained_tiny_dir, tmp_path):
    model, tokenizer = original
    path = export_gguf(trained_tiny_dir, tmp_path / "tiny-f32.gguf", file_type="f32")
    loaded = load_gguf(path)
    assert isinstance(loaded, LlamaForCausalLM)
    for name in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "head_dim", "max_position_embeddings", "vocab_size", "tie_word_embeddings",
                 "bos_token_id", "eos_token_id", "pad_token_id"):  # fmt: skip
        assert getattr(loaded.config, name) == getattr(model.config, name), name
    assert loaded.config.rope_parameters["rope_theta"] == model.config.rope_theta
    assert loaded.config.num_key_value_heads < loaded.config.num_attention_heads  # GQA: K permuted by kv heads
    torch.testing.assert_close(logits(loaded, tokenizer), logits(model, tokenizer), atol=1e-5, rtol=0)


def test_f16_is_the_model_with_f16_matrices(original, tmp_path):
    model, tokenizer = original
    path = export_gguf(model, tmp_path / "tiny-f16.gguf", file_type="f16", tokenizer=tokenizer)
    got = logits(load_gguf(path), tokenizer)
    expected = logits(with_rounded_matrices(model, lambda p: p.half().float()), tokenizer)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # f16 keeps 11 significant bits: the logits move by a small fraction of their spread.
    exact = logits(model, tokenizer)
    assert (got - exact).abs().max() < 1e-2 * exact.abs().max()
    assert path.stat().st_size < 0.6 * export_gguf(model, tmp_path / "f32.gguf", tokenizer=tokenizer).stat().st_size


def test_q8_0_is_the_model_with_block_quantized_matrices(original, tmp_path):
    model, tokenizer = original
    path = export_gguf(model, tmp_path / "tiny-q8_0.gguf", file_type="q8_0", tokenizer=tokenizer)
    expected = logits(with_rounded_matrices(model, q8_0_by_hand), tokenizer)
    torch.testing.assert_close(logits(load_gguf(path), tokenizer), expected, atol=1e-5, rtol=0)


def test_tokenizer_round_trip(original, trained_tiny_dir, tmp_path):
    _, tokenizer = original
    path = export_gguf(trained_tiny_dir, tmp_path / "tiny.gguf")
    loaded = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    for text in SENTENCES:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        assert loaded(text)["input_ids"] == ids, text
        assert loaded.decode(ids) == tokenizer.decode(ids)
    special = ("bos_token", "eos_token", "pad_token")
    assert [getattr(loaded, s) for s in special] == [getattr(tokenizer, s) for s in special]
    assert loaded.chat_template == tokenizer.chat_template


def test_padded_vocabulary_rows_become_unused_tokens(tokenizer_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)  # 300 tokens; models round the vocabulary up to 320
    model = tiny_model(vocab_size=320, **{k: getattr(tokenizer, k) for k in ("pad_token_id", "bos_token_id",
                                                                             "eos_token_id")})  # fmt: skip
    path = export_gguf(model, tmp_path / "padded.gguf", tokenizer=tokenizer)
    loaded = AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    assert len(loaded) == 320 and loaded.convert_ids_to_tokens(319) == "[PAD319]"
    assert all(loaded(s)["input_ids"] == tokenizer(s)["input_ids"] for s in SENTENCES)
    torch.testing.assert_close(logits(load_gguf(path), tokenizer), logits(model, tokenizer), atol=1e-5, rtol=0)


def test_q_k_permutation_turns_rotate_half_rope_into_llama_cpp_interleaved_rope():
    """transformers rotates the pairs (i, i + d/2) of a head, llama.cpp the pairs (2i, 2i + 1): projecting with the
    permuted rows and rotating interleaved gives the permuted result of rotating the original rows half-wise."""
    n_head, d, hidden, position, theta = 2, 8, 16, 5, 10000.0
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(n_head * d, hidden, generator=gen), torch.randn(hidden, generator=gen)
    angles = position * theta ** (-torch.arange(0, d, 2) / d)  # (d/2,)
    q = (w @ x).view(n_head, d)
    half = torch.cat([-q[:, d // 2 :], q[:, : d // 2]], dim=-1)
    hf_rotated = q * torch.cat([angles, angles]).cos() + half * torch.cat([angles, angles]).sin()
    q_cpp = torch.from_numpy(_permute_rotary(w.numpy(), n_head)) @ x
    pairs = torch.view_as_complex(q_cpp.view(n_head, d // 2, 2).contiguous())
    cpp_rotated = torch.view_as_real(pairs * torch.polar(torch.ones(d // 2), angles)).reshape(-1)
    expected = torch.from_numpy(_permute_rotary(hf_rotated.reshape(-1, 1).numpy(), n_head)).reshape(-1)
    torch.testing.assert_close(cpp_rotated, expected)


@pytest.mark.parametrize("overrides, field", [(ARCHITECTURES["gpt2"], "position_embedding_type"),
                                              (dict(attention_bias=True), "attention_bias"),
                                              (dict(rope_parameters={"rope_type": "linear", "factor": 2.0}),
                                               "rope_type")])  # fmt: skip
def test_non_llama_configs_are_refused(overrides, field, tmp_path):
    with pytest.raises(ValueError, match=f"{field}=.*Llama settings"):
        export_gguf(tiny_model(**overrides), tmp_path / "model.gguf")
    assert not any(tmp_path.iterdir())


def test_failed_write_keeps_the_previous_file(original, tmp_path, monkeypatch):
    import gguf

    model, tokenizer = original
    path = tmp_path / "model.gguf"
    path.write_bytes(b"previous")

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_gguf(model, path, tokenizer=tokenizer)
    assert path.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["model.gguf"]


def test_cli_export(trained_tiny_dir, tmp_path, capsys):
    out = tmp_path / "cli.gguf"
    cli_main(["export", str(trained_tiny_dir), str(out), "--file_type", "f16"])
    assert capsys.readouterr().out.startswith(f"Wrote {out} (")
    from gguf import GGUFReader

    fields = GGUFReader(out).fields
    file_type = fields["general.file_type"]
    assert int(file_type.parts[file_type.data[0]][0]) == 1  # LlamaFileType.MOSTLY_F16
    assert math.isclose(load_gguf(out).config.rms_norm_eps, 1e-6, rel_tol=1e-6)  # stored as f32

    gpt2_dir = tmp_path / "gpt2"
    tiny_model(**ARCHITECTURES["gpt2"]).save_pretrained(gpt2_dir)
    assert "position_embedding_type" in cli_user_error(["export", str(gpt2_dir), str(tmp_path / "x.gguf")], capsys)
    assert not (tmp_path / "x.gguf").exists()


def test_a_prefix_space_tokenizer_is_refused_with_the_way_out(original, tmp_path, capsys):
    """GGUF's byte-level readers ignore add_space_prefix (checked with transformers' gguf_file= loader), so the
    first word would be split differently: refused, the weights alone still export."""
    from hf_tinyllm.tokenization import train_tokenizer

    model, _ = original
    prefixed = train_tokenizer(["seven minus four equals three."] * 20, vocab_size=300, add_prefix_space=True)
    with pytest.raises(ValueError, match=r"adds a prefix space.*weights alone"):
        export_gguf(model, tmp_path / "model.gguf", tokenizer=prefixed)
    assert not any(tmp_path.iterdir())
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    prefixed.save_pretrained(folder)
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export", str(folder), str(tmp_path / "model.gguf")])
    assert exit_info.value.code == 2 and "--without_tokenizer" in capsys.readouterr().err
    cli_main(["export", str(folder), str(tmp_path / "weights.gguf"), "--without_tokenizer"])
    from gguf import GGUFReader

    assert "tokenizer.ggml.tokens" not in GGUFReader(tmp_path / "weights.gguf").fields  # the weights alone
