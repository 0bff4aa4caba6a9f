"""The loop's speed and memory switches change how a step is computed, never what it computes (or, for bf16, only
within bf16's precision): --gradient_checkpointing, --torch_compile and --mixed_precision bf16, each against the
same run in plain fp32 eager mode, with evidence that the switch really took effect."""

import pytest
import torch
from test_training import final_weights, losses, run, small_run

from hf_tinyllm.modeling_tinyllm import TinyLLMAttention

STEPS = ["--max_steps", "3", "--warmup_steps", "0"]


@pytest.fixture(scope="module")
def eager(tmp_path_factory, tokenizer_dir):
    """The reference: 3 steps in fp32, eager, no checkpointing; its output folder."""
    output = tmp_path_factory.mktemp("eager")
    run(small_run(output, tokenizer_dir, *STEPS))
    return output


def test_gradient_checkpointing_recomputes_the_layers_and_changes_no_number(eager, tmp_path, tokenizer_dir,
                                                                            monkeypatch):  # fmt: skip
    calls = {"n": 0}
    forward = TinyLLMAttention.forward  # inside the checkpointed decoder layer (whose own forward is the wrapper)

    def counted(self, *args, **kwargs):
        calls["n"] += self.training  # the training forwards only (evaluation runs without checkpointing)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(TinyLLMAttention, "forward", counted)
    run(small_run(tmp_path, tokenizer_dir, *STEPS, "--gradient_checkpointing"))
    layers, steps = 2, 3  # the debug preset's layers; one micro-batch per step
    assert calls["n"] == 2 * layers * steps  # each layer ran again in the backward pass
    assert losses(tmp_path) == losses(eager) and losses(tmp_path, "grad_norm") == losses(eager, "grad_norm")
    a, b = final_weights(eager), final_weights(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torch_compile_traces_the_model_and_matches_eager(eager, tmp_path, tokenizer_dir):
    """aot_eager: dynamo's graph capture and AOTAutograd's joint graph, the parts where compiling can change the
    training step, without inductor's C++ build (issue 12 measures inductor's speed)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    run(small_run(tmp_path, tokenizer_dir, *STEPS, "--torch_compile", "--torch_compile_backend", "aot_eager"))
    assert counters["stats"]["unique_graphs"] >= 1  # the model really ran compiled
    for key in ("loss", "grad_norm"):
        left, right = losses(eager, key), losses(tmp_path, key)
        assert left.keys() == right.keys() == {1, 2, 3}
        assert right == pytest.approx(left, rel=1e-5), key
    a, b = final_weights(eager), final_weights(tmp_path)
    assert a.keys() == b.keys()  # the checkpoint holds the model's names, not the compiled wrapper's (_orig_mod.)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_trains_within_bf16_precision_and_keeps_fp32_weights(eager, tmp_path, tokenizer_dir):
    summary = run(small_run(tmp_path, tokenizer_dir, *STEPS, "--mixed_precision", "bf16"))
    assert summary["hardware"]["mixed_precision"] == "bf16"
    left, right = losses(eager), losses(tmp_path)
    assert right != left  # bf16 matmuls ran: the numbers moved ...
    assert right == pytest.approx(left, rel=2e-2)  # ... by bf16's precision (8 bits of mantissa), no more
    weights = final_weights(tmp_path)
    assert {w.dtype for w in weights.values()} == {torch.float32}  # the master weights stay in fp32


def test_an_unknown_compile_backend_is_a_clear_error(tmp_path, tokenizer_dir):
    from hf_tinyllm.training import parse_train_arguments

    argv = small_run(tmp_path, tokenizer_dir, "--torch_compile", "--torch_compile_backend", "nope")
    with pytest.raises(ValueError, match=r"--torch_compile_backend 'nope' is not a torch.compile backend; .*aot_eager"):
        parse_train_arguments(argv)
