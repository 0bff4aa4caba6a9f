"""Forward-pass behaviour: shapes, outputs, causality, loss, attention backends, checkpointing, init."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import padded_batch, tiny_model
from transformers.utils import is_torch_flex_attn_available

BACKENDS = ["eager", "sdpa"] + (["flex_attention"] if is_torch_flex_attn_available() else [])


def test_output_shapes_hidden_states_and_attentions(arch):
    model = tiny_model(**arch)
    model.set_attn_implementation("eager")
    ids, mask = padded_batch()
    out = model(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert out.logits.shape == (3, 9, 99)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert all(h.shape == (3, 9, 32) for h in out.hidden_states)
    torch.testing.assert_close(out.hidden_states[-1], model.model(ids, attention_mask=mask).last_hidden_state)
    assert len(out.attentions) == model.config.num_hidden_layers
    probs = out.attentions[0]  # (B, H, T, S)
    assert probs.shape == (3, 4, 9, 9)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3, 4, 9))
    assert probs[0].triu(diagonal=1).abs().max() == 0  # causal: no weight on future positions
    assert probs[2, :, -1, :6].abs().max() == 0  # padding (left of the 3 real tokens) gets no weight


def test_logits_to_keep_and_return_tuple():
    model = tiny_model()
    ids, mask = padded_batch()
    full = model(ids, attention_mask=mask).logits
    last = model(ids, attention_mask=mask, logits_to_keep=1).logits
    assert last.shape == (3, 1, 99)
    torch.testing.assert_close(last, full[:, -1:])
    as_tuple = model(ids, attention_mask=mask, return_dict=False, use_cache=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[0], full)


def test_is_causal(arch):
    model = tiny_model(**arch)
    ids, _ = padded_batch(lengths=(9, 9))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 7) % 99
    torch.testing.assert_close(model(ids).logits[:, :5], model(changed).logits[:, :5])
    assert not torch.allclose(model(ids).logits[:, 5:], model(changed).logits[:, 5:])


def test_position_ids_default_and_shift(arch):
    model = tiny_model(**arch)
    ids, _ = padded_batch(lengths=(8, 8))
    explicit = torch.arange(8).unsqueeze(0).expand(2, -1)
    torch.testing.assert_close(model(ids, position_ids=explicit).logits, model(ids).logits)
    gapped = explicit.clone()
    gapped[:, 4:] += 5
    assert not torch.allclose(model(ids, position_ids=gapped).logits[:, 4:], model(ids).logits[:, 4:])


def test_rope_sees_only_relative_positions_and_learned_positions_are_absolute():
    ids, _ = padded_batch(lengths=(8, 8))
    shifted = torch.arange(8).unsqueeze(0).expand(2, -1) + 3
    rope = tiny_model()
    torch.testing.assert_close(rope(ids, position_ids=shifted).logits, rope(ids).logits, rtol=0, atol=1e-5)
    learned = tiny_model(position_embedding_type="learned")
    assert not torch.allclose(learned(ids, position_ids=shifted).logits, learned(ids).logits)


def test_loss_is_shifted_cross_entropy_and_ignores_minus_100():
    model = tiny_model()
    ids, mask = padded_batch()
    labels = ids.masked_fill(mask == 0, -100)
    out = model(ids, attention_mask=mask, labels=labels)
    expected = F.cross_entropy(out.logits[:, :-1].reshape(-1, 99), labels[:, 1:].reshape(-1), ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)


def test_gradient_accumulation_with_num_items_in_batch_equals_the_full_batch():
    """What the Trainer does: sum-reduced micro-batch losses divided by the token count of the whole batch."""
    model = tiny_model().train()
    ids, mask = padded_batch(lengths=(9, 2, 7, 4))
    labels = ids.masked_fill(mask == 0, -100)

    model.zero_grad()
    full_loss = model(ids, attention_mask=mask, labels=labels).loss
    full_loss.backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    model.zero_grad()
    num_items = (labels[:, 1:] != -100).sum()
    accumulated = 0.0
    for row in range(4):
        sl = slice(row, row + 1)
        loss = model(ids[sl], attention_mask=mask[sl], labels=labels[sl], num_items_in_batch=num_items).loss
        loss.backward()
        accumulated += loss.detach()
    torch.testing.assert_close(accumulated, full_loss.detach())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, full_grads[name], msg=name)
    # Without num_items_in_batch the micro-batch means would weigh short rows too much (the bug this guards against).
    naive = sum(model(ids[r : r + 1], attention_mask=mask[r : r + 1], labels=labels[r : r + 1]).loss for r in range(4))
    assert not torch.allclose(naive / 4, full_loss)


@pytest.mark.parametrize("backend", BACKENDS[1:])
@torch.no_grad()  # FlexAttention has no backward on CPU
def test_attention_backends_agree_with_eager_on_a_masked_batch(arch, backend):
    model = tiny_model(**arch)
    ids, mask = padded_batch()
    model.set_attn_implementation("eager")
    reference = model(ids, attention_mask=mask).logits
    model.set_attn_implementation(backend)
    assert model.config._attn_implementation == backend
    logits = model(ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(logits[real], reference[real], rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(arch):
    model = tiny_model(**arch).train()
    ids, mask = padded_batch()
    labels = ids.masked_fill(mask == 0, -100)

    def grads():
        model.zero_grad()
        model(ids, attention_mask=mask, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = grads()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing
    checkpointed = grads()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


def test_resize_token_embeddings_keeps_tying():
    model = tiny_model()
    model.resize_token_embeddings(130, pad_to_multiple_of=64)
    assert model.config.vocab_size == 192
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.lm_head.weight.shape == (192, 32)
    assert model(torch.tensor([[150, 191]])).logits.shape == (1, 2, 192)


def test_initialisation_follows_the_documented_rules():
    model = tiny_model(
        seed=0,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=8,
        num_attention_heads=4,
        num_key_value_heads=4,
        vocab_size=2048,
        attention_bias=True,
        mlp_bias=True,
        qk_norm=True,
        norm_type="layernorm",
    )
    std = model.config.initializer_range
    residual_std = std / math.sqrt(2 * 8)
    layer = model.model.layers[3]
    for weight, expected in [
        (model.model.embed_tokens.weight, std),
        (layer.self_attn.q_proj.weight, std),
        (layer.self_attn.v_proj.weight, std),
        (layer.mlp.gate_proj.weight, std),
        (layer.self_attn.o_proj.weight, residual_std),
        (layer.mlp.down_proj.weight, residual_std),
    ]:
        assert weight.mean().abs() < 3 * expected / math.sqrt(weight.numel())
        assert weight.std().item() == pytest.approx(expected, rel=0.05)
    assert torch.all(layer.self_attn.q_proj.bias == 0) and torch.all(layer.mlp.down_proj.bias == 0)
    for norm in (layer.input_layernorm, layer.self_attn.q_norm, model.model.norm):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)


def test_learned_position_table_is_initialised_and_used():
    model = tiny_model(position_embedding_type="learned")
    assert model.model.rotary_emb is None
    table = model.model.embed_positions.weight
    assert table.shape == (64, 32)
    assert table.std().item() == pytest.approx(0.02, rel=0.15)


def test_dropout_is_active_only_in_training():
    model = tiny_model(residual_dropout=0.5, attention_dropout=0.5)
    ids, _ = padded_batch(lengths=(9, 9))
    torch.testing.assert_close(model(ids).logits, model(ids).logits)
    model.train()
    assert not torch.allclose(model(ids).logits, model(ids).logits)


def test_compiles_without_graph_breaks():
    model = tiny_model()
    ids, mask = padded_batch()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
