"""The training step a GPU never waits in: no host sync in an ordinary step of the Accelerate loop (counted by
ATen operation, on CPU tensors), flattened batches that train exactly like stacked ones, and a compiled step with
no graph breaks or recompiles as the documents per block change."""

import json

import numpy as np
import pytest
import torch
import torch._dynamo
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from conftest import tiny_model
from safetensors.torch import load_file
from test_training import assert_same_steps, losses, small_run

from hf_tinyllm.data.packing import DataCollatorForCausalLM, document_position_ids
from hf_tinyllm.training import parse_train_arguments, train
from hf_tinyllm.training.loop import apply_update, training_step
from hf_tinyllm.training.syncs import HostSyncCounter, SyncsPerStep


@pytest.mark.parametrize("extra", [[], ["--gradient_accumulation_steps", "2"]], ids=["one", "accumulated"])
def test_an_ordinary_step_never_waits_for_the_device(tmp_path, tokenizer_dir, extra, capsys):
    AcceleratorState._reset_state(reset_partial_state=True)
    argv = small_run(tmp_path / "run", tokenizer_dir, "--logging_steps", "4", *extra)
    with HostSyncCounter() as counter:
        per_step = SyncsPerStep(counter)
        train(*parse_train_arguments(argv), hooks=[per_step])
    assert per_step.step == dict.fromkeys(range(1, 9), 0), counter.origins  # data, forward, backward, clip, update
    ordinary = {step: n for step, n in per_step.after.items() if step % 4}
    assert ordinary == dict.fromkeys([1, 2, 3, 5, 6, 7], 0), counter.origins
    logging_syncs = per_step.after[4]  # loss, grad norm, the non-finite check: read back at logging steps only
    assert 0 < logging_syncs <= 4
    with capsys.disabled():
        print(f"\nhost syncs: 0 per ordinary step, {logging_syncs} at a logging step")


def test_flattened_batches_train_exactly_like_stacked_ones(tmp_path, tokenizer_dir):
    runs = {}
    for name, flag in (("stacked", "false"), ("flattened", "true")):
        AcceleratorState._reset_state(reset_partial_state=True)
        runs[name] = tmp_path / name
        train(*parse_train_arguments(small_run(runs[name], tokenizer_dir, "--flatten_batches", flag)))
    assert_same_steps(runs["stacked"], runs["flattened"], rel=1e-5)


def packed_batch(rng: np.random.Generator, rows: int = 2, width: int = 24, flatten: bool = False) -> dict:
    """Blocks of random documents: a different number of documents per block on every call."""
    examples = []
    for _ in range(rows):
        ids = rng.integers(3, 99, size=width)
        ids[0] = 1
        ids[rng.choice(np.arange(2, width), size=rng.integers(1, 6), replace=False)] = 1  # more document starts
        examples.append({"input_ids": ids.tolist(), "position_ids": document_position_ids(ids, 1).tolist()})
    return DataCollatorForCausalLM(pad_token_id=0, flatten=flatten, max_documents=rows * width)(examples)


@pytest.mark.parametrize("flatten", [False, True], ids=["stacked", "flattened"])
def test_the_compiled_step_has_no_graph_breaks_or_recompiles(flatten):
    """The loop's step (forward, backward, clipping, AdamW) with the model compiled as the loop compiles it
    (backend aot_eager: the graphs are dynamo's whatever the backend; inductor would only add minutes here)."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    model = tiny_model(vocab_size=99).train()
    model.set_attn_implementation("sdpa")
    model.config.use_cache = False
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer = accelerator.prepare(model, optimizer)
    compiled = torch.compile(model, backend="aot_eager")
    rng = np.random.default_rng(0)
    documents = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for _ in range(4):
            batch = packed_batch(rng, flatten=flatten)
            documents.add(int((batch["position_ids"] == 0).sum()))
            result = training_step(accelerator, compiled, [batch], max_grad_norm=1.0)
            apply_update([optimizer], [scheduler])
            assert bool(result.finite)
    assert len(documents) > 1, "the batches must differ in their number of documents"
    counters = torch._dynamo.utils.counters
    assert sum(counters["graph_break"].values()) == 0, dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])


def test_warmup_default_follows_the_runs_length():
    assert parse_train_arguments(["--max_steps", "2"])[2].warmup_steps == 0
    assert parse_train_arguments(["--max_steps", "100"])[2].warmup_steps == 10
    assert parse_train_arguments(["--max_steps", "500"])[2].warmup_steps == 20
    with pytest.raises(ValueError, match="--warmup_steps=5 must be below --max_steps=2"):
        parse_train_arguments(["--max_steps", "2", "--warmup_steps", "5"])


@pytest.mark.parametrize("implementation", ["flash_attention_2", "torch_varlen"])
def test_flash_kernels_flatten_by_default_and_refuse_stacked_documents(implementation):
    args = parse_train_arguments(["--attn_implementation", implementation])
    assert args[1].flattens(implementation)
    with pytest.raises(ValueError, match=f"--attn_implementation {implementation} with --document_positions true "
                       "needs --flatten_batches true"):  # fmt: skip
        parse_train_arguments(["--attn_implementation", implementation, "--flatten_batches", "false"])
    assert not parse_train_arguments(["--attn_implementation", "sdpa"])[1].flattens("sdpa")


def test_chunked_cross_entropy_trains_like_the_plain_loss(tmp_path, tokenizer_dir, monkeypatch):
    import hf_tinyllm.modeling_tinyllm as modeling

    calls = []
    chunked = modeling.chunked_linear_cross_entropy
    monkeypatch.setattr(modeling, "chunked_linear_cross_entropy", lambda *a, **k: calls.append(1) or chunked(*a, **k))
    runs = {}
    for name, size in (("plain", "0"), ("chunked", "40")):  # 4 x 32 tokens per micro-batch: 4 chunks, one short
        AcceleratorState._reset_state(reset_partial_state=True)
        runs[name] = tmp_path / name
        train(*parse_train_arguments(small_run(runs[name], tokenizer_dir, "--cross_entropy_chunk_size", size)))
        assert len(calls) == (8 if name == "chunked" else 0), name  # one loss per training step, in training only
    assert_same_steps(runs["plain"], runs["chunked"], rel=1e-5)
    saved = json.loads((runs["chunked"] / "model" / "config.json").read_text())
    assert saved.get("cross_entropy_chunk_size", 0) == 0  # a training-time choice, not saved with the model


def test_bf16_weights_train_within_bf16_precision_of_fp32(tmp_path, tokenizer_dir):
    runs = {}
    for name, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        AcceleratorState._reset_state(reset_partial_state=True)
        runs[name] = tmp_path / name
        argv = small_run(runs[name], tokenizer_dir, "--param_dtype", dtype, "--mixed_precision", "bf16")
        summary = train(*parse_train_arguments(argv))
        assert summary["finished"]
    plain, half = losses(runs["fp32"]), losses(runs["bf16"])
    assert plain.keys() == half.keys()
    for step in plain:
        assert half[step] == pytest.approx(plain[step], rel=2e-2), step  # bf16 keeps 8 bits of mantissa
    assert half != plain  # the switch does change the arithmetic
    weights = load_file(runs["bf16"] / "model" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.bfloat16}
