"""Packed documents stay apart under every attention implementation, stacked (B, T) or flattened into one row."""

import itertools

import numpy as np
import pytest
import torch
from conftest import tiny_model
from datasets import Dataset
from transformers.utils import is_torch_flex_attn_available

from hf_tinyllm.data.packing import (
    DataCollatorForCausalLM,
    document_position_ids,
    documents_per_block,
    flatten_packed_batch,
)
from hf_tinyllm.training.syncs import HostSyncCounter
from hf_tinyllm.training.varlen_attention import register_varlen_attention

IMPLEMENTATIONS = ["eager", "sdpa"] + (["flex_attention"] if is_torch_flex_attn_available() else [])
BOS, EOS = 1, 2
# Two blocks of 12 tokens: documents of 5, 4 and 3 tokens; then documents of 7 and 3 tokens and the start of a third.
DOCUMENTS = [[BOS, 17, 23, 45, EOS], [BOS, 30, 31, EOS], [BOS, 60, 61], [BOS, 70, 71, 72, 73, 74, EOS], [BOS, 8, 9]]
BLOCKS = [[t for d in DOCUMENTS[:3] for t in d], [*(t for d in DOCUMENTS[3:] for t in d), BOS, 40]]


def packed_examples() -> list[dict]:
    return [{"input_ids": b, "position_ids": document_position_ids(np.array(b), BOS).tolist()} for b in BLOCKS]


def documents_of(block: list[int]) -> list[list[int]]:
    starts = [i for i, token in enumerate(block) if token == BOS] + [len(block)]
    return [block[a:b] for a, b in itertools.pairwise(starts)]


@pytest.mark.parametrize("flatten", [False, True], ids=["stacked", "flattened"])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_packed_logits_equal_each_document_alone(implementation, flatten):
    model = tiny_model(vocab_size=99)
    model.set_attn_implementation(implementation)
    batch = DataCollatorForCausalLM(pad_token_id=0, flatten=flatten)(packed_examples())
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.reshape(len(BLOCKS), 12, -1)
        for row, block in enumerate(BLOCKS):
            start = 0
            for document in documents_of(block):
                alone = model(torch.tensor([document])).logits[0]
                torch.testing.assert_close(logits[row, start : start + len(document)], alone, rtol=0, atol=1e-5)
                start += len(document)
        leaky = model(batch["input_ids"]).logits.reshape(len(BLOCKS), 12, -1)  # positions left out: one sequence
        assert not torch.allclose(leaky[0, 5:9], model(torch.tensor([DOCUMENTS[1]])).logits[0], atol=1e-3)


def test_flattened_batch_has_the_stacked_batchs_loss_and_gradients():
    model = tiny_model(vocab_size=99)
    stacked = DataCollatorForCausalLM(pad_token_id=0)(packed_examples())
    flat = DataCollatorForCausalLM(pad_token_id=0, flatten=True)(packed_examples())
    losses, grads = [], []
    for batch in (stacked, flat):
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-6, atol=0)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_boundary_tensors_agree_with_the_position_resets():
    flat = DataCollatorForCausalLM(pad_token_id=0, flatten=True, max_documents=10)(packed_examples())
    positions = flat["position_ids"][0].tolist()
    resets = [i for i, p in enumerate(positions) if p == 0]
    assert resets == [0, 5, 9, 12, 19, 22]  # every document start, the second block's start among them
    total = len(positions)
    assert flat["cu_seq_lens_q"].tolist() == [*resets, total, total, total, total, total]  # padded to 10 + 1
    assert flat["cu_seq_lens_q"].dtype == torch.int32 and flat["cu_seq_lens_k"] is flat["cu_seq_lens_q"]
    assert flat["max_length_q"] == flat["max_length_k"] == 12
    assert flat["input_ids"].shape == flat["labels"].shape == (1, 24)
    assert flat["labels"][0, 12] == -100 and flat["labels"][0, 0] == BOS  # no prediction across blocks
    # Every document's length is a difference of consecutive boundaries.
    lengths = np.diff(flat["cu_seq_lens_q"].numpy())
    assert lengths[:6].tolist() == [5, 4, 3, 7, 3, 2] and not lengths[6:].any()
    blocks = Dataset.from_list(packed_examples())
    assert documents_per_block(blocks) == 3
    with pytest.raises(ValueError, match="holds 6 documents, more than max_documents=5"):
        DataCollatorForCausalLM(pad_token_id=0, flatten=True, max_documents=5)(packed_examples())
    with pytest.raises(ValueError, match="needs packed blocks with document positions"):
        flatten_packed_batch({"input_ids": torch.ones(2, 3, dtype=torch.long)})


@pytest.mark.parametrize("implementation", ["flash_attention_2", "torch_varlen"])
def test_flash_attention_refuses_packed_rows_without_boundaries(implementation):
    register_varlen_attention()
    model = tiny_model(vocab_size=99)
    model.config._attn_implementation = implementation  # the kernels are not installed here; the check comes first
    batch = DataCollatorForCausalLM(pad_token_id=0)(packed_examples())
    with pytest.raises(ValueError, match=f"{implementation} cannot keep packed documents apart in a batch of 2 rows"):
        model(**batch)


# FlexAttention is left out: torch.compile refuses to run it under a TorchDispatchMode (and it has no CPU backward).
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_packed_forward_and_backward_never_wait_for_the_device(implementation):
    model = tiny_model(vocab_size=99).train()
    model.set_attn_implementation(implementation)
    batch = DataCollatorForCausalLM(pad_token_id=0)(packed_examples())
    with HostSyncCounter() as syncs:
        model(**batch).loss.backward()
    assert syncs.total == 0, syncs.origins


def test_a_forward_without_position_ids_never_waits_for_the_device():
    """Positions the model makes itself are one sequence per row: transformers is not asked to look for packing."""
    model = tiny_model(vocab_size=99).train()
    model.set_attn_implementation("sdpa")
    batch = DataCollatorForCausalLM(pad_token_id=0)([{"input_ids": b} for b in BLOCKS])
    with HostSyncCounter() as syncs:
        model(**batch).loss.backward()
    assert syncs.total == 0, syncs.origins


def test_the_runs_collator_has_room_for_the_validation_blocks_too():
    """The Trainer evaluates with the training collator: its fixed boundary size must hold validation batches."""
    from types import SimpleNamespace

    from hf_tinyllm.training.arguments import DataArguments
    from hf_tinyllm.training.data import training_collator

    few = Dataset.from_list(packed_examples()[1:])  # 3 documents in its block
    many = [1, 5, 1, 6, 1, 7, 1, 8, 1, 9, 1, 4]  # 6 documents in one block
    validation = Dataset.from_list([{"input_ids": many, "position_ids": document_position_ids(np.array(many), 1)}])
    data = SimpleNamespace(tokenizer=SimpleNamespace(pad_token_id=0), train_blocks=few, validation_blocks=validation)
    collate = training_collator(data, DataArguments(flatten_batches=True), "sdpa", batch_size=1)
    assert collate.max_documents == 6
    assert collate([validation[0]])["cu_seq_lens_q"].tolist() == [0, 2, 4, 6, 8, 10, 12]
