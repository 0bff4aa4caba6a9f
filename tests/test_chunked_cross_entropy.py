"""The chunked linear cross-entropy (`cross_entropy_chunk_size`): transformers' causal-LM loss and its gradients,
computed without ever holding fp32 logits over the whole vocabulary."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers.loss.loss_utils import ForCausalLMLoss

from hf_tinyllm.configuration_tinyllm import TinyLLMConfig
from hf_tinyllm.modeling_tinyllm import TinyLLMForCausalLM, chunked_linear_cross_entropy

B, T, H, V = 3, 7, 8, 13


def _inputs(seed: int = 0, vocab: int = V) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=generator)
    weight = torch.randn(vocab, H, generator=generator) * 0.5
    labels = torch.randint(0, vocab, (B, T), generator=generator)
    labels[torch.rand(B, T, generator=generator) < 0.3] = -100
    return hidden, weight, labels


def _loss_and_grads(loss_fn, hidden: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, ...]:
    hidden, weight = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = loss_fn(hidden, weight)
    # a grad_output other than 1 checks that backward scales the gradients stored in forward
    return (loss.detach(), *torch.autograd.grad(loss, (hidden, weight), grad_outputs=torch.tensor(2.5)))


CASES = {
    "mean, chunk not dividing N": dict(chunk_size=5),
    "num_items int": dict(chunk_size=5, num_items_in_batch=11),
    "num_items tensor": dict(chunk_size=4, num_items_in_batch=torch.tensor(9)),
    "chunk larger than N": dict(chunk_size=64),
    "chunk of one token": dict(chunk_size=1, num_items_in_batch=torch.tensor(5)),
    "shift_labels given": dict(chunk_size=6, shift_labels=True),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_transformers_loss_and_autograd(case):
    hidden, weight, labels = _inputs()
    options = dict(case)
    chunk_size = options.pop("chunk_size")
    if options.pop("shift_labels", False):
        options["shift_labels"] = torch.roll(labels, 2, dims=-1)  # anything but the shifted labels
    expected = _loss_and_grads(
        lambda h, w: ForCausalLMLoss(logits=h @ w.T, labels=labels, vocab_size=V, **options), hidden, weight
    )
    actual = _loss_and_grads(
        lambda h, w: chunked_linear_cross_entropy(h, w, labels, chunk_size=chunk_size, **options), hidden, weight
    )
    assert actual[0].dtype == torch.float32 and actual[0].shape == ()
    for name, got, want in zip(("loss", "grad hidden", "grad weight"), actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def test_gradients_only_for_inputs_that_require_them():
    hidden, weight, labels = _inputs()
    hidden.requires_grad_()
    loss = chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    loss.backward()
    expected = ForCausalLMLoss(logits=hidden.detach() @ weight.T, labels=labels, vocab_size=V)
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    assert hidden.grad is not None and weight.grad is None
    assert not chunked_linear_cross_entropy(hidden.detach(), weight, labels, chunk_size=4).requires_grad


def test_bf16_autocast_stays_close_to_the_plain_path():
    hidden, weight, labels = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _loss_and_grads(
            lambda h, w: ForCausalLMLoss(logits=h @ w.T, labels=labels, vocab_size=V), hidden, weight
        )
        actual = _loss_and_grads(lambda h, w: chunked_linear_cross_entropy(h, w, labels, chunk_size=5), hidden, weight)
    for got, want in zip(actual, expected, strict=True):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)


def test_chunk_size_must_be_positive():
    hidden, weight, labels = _inputs()
    with pytest.raises(ValueError, match="chunk_size=0"):
        chunked_linear_cross_entropy(hidden, weight, labels, chunk_size=0)


def _tiny_model(vocab_size: int = 97) -> TinyLLMForCausalLM:
    torch.manual_seed(0)
    config = TinyLLMConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return TinyLLMForCausalLM(config)


def _batch(vocab_size: int, batch: int = 2, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, vocab_size, (batch, length), generator=generator)
    labels = input_ids.clone()
    labels[:, :3] = -100
    return input_ids, labels


MODEL_KWARGS = {
    "mean": lambda labels: {},
    "num_items_in_batch": lambda labels: {"num_items_in_batch": torch.tensor(13)},
    "shift_labels": lambda labels: {"shift_labels": torch.roll(labels, 2, dims=-1)},  # not the labels shifted
}


@pytest.mark.parametrize("make_kwargs", MODEL_KWARGS.values(), ids=MODEL_KWARGS.keys())
def test_model_training_loss_and_gradients_match_the_plain_path(make_kwargs):
    model = _tiny_model()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    input_ids, labels = _batch(model.config.vocab_size)
    results = {}
    for chunk_size in (0, 16):
        model.config.cross_entropy_chunk_size = chunk_size
        model.train()
        model.zero_grad(set_to_none=True)
        output = model(input_ids=input_ids, labels=labels, **make_kwargs(labels))
        output.loss.backward()
        grads = {name: param.grad.clone() for name, param in model.named_parameters()}
        results[chunk_size] = output, grads
    (plain, plain_grads), (chunked, chunked_grads) = results[0], results[16]
    assert plain.logits is not None and chunked.logits is None
    torch.testing.assert_close(chunked.loss, plain.loss, rtol=1e-5, atol=1e-6)
    assert chunked_grads.keys() == plain_grads.keys() and "model.embed_tokens.weight" in chunked_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_model_keeps_the_plain_path_outside_training_and_for_logits_to_keep():
    model = _tiny_model()
    model.config.cross_entropy_chunk_size = 16
    input_ids, labels = _batch(model.config.vocab_size)
    with torch.no_grad():
        output = model.eval()(input_ids=input_ids, labels=labels)
        assert output.logits is not None
        expected = ForCausalLMLoss(logits=output.logits, labels=labels, vocab_size=model.config.vocab_size)
        torch.testing.assert_close(output.loss, expected)
        last = model.train()(input_ids=input_ids, labels=labels[:, -1:], logits_to_keep=1)
        assert last.logits.shape == (2, 1, model.config.vocab_size)


class _OutputRecorder(TorchDispatchMode):
    """Records the (number of elements, dtype) of every tensor each op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[tuple[int, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        self.outputs += [(t.numel(), t.dtype) for t in tree_leaves(result) if isinstance(t, torch.Tensor)]
        return result


def test_chunked_path_never_holds_fp32_logits_over_the_whole_vocabulary():
    vocab_size, batch, length = 997, 3, 41  # N * V = 123 * 997: no other tensor of the model has that size
    model = _tiny_model(vocab_size).train()
    input_ids, labels = _batch(vocab_size, batch, length)
    full_logits = (batch * length * vocab_size, torch.float32)
    for chunk_size, expect_full_logits in ((0, True), (16, False)):
        model.config.cross_entropy_chunk_size = chunk_size
        recorder = _OutputRecorder()
        with recorder:
            model(input_ids=input_ids, labels=labels).loss.backward()
        assert (full_logits in recorder.outputs) == expect_full_logits, f"cross_entropy_chunk_size={chunk_size}"


def test_config_validates_the_chunk_size():
    assert TinyLLMConfig().cross_entropy_chunk_size == 0
    with pytest.raises(ValueError, match=r"cross_entropy_chunk_size=-1 must be an integer >= 0"):
        TinyLLMConfig(cross_entropy_chunk_size=-1)
