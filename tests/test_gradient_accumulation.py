"""One optimizer step's gradients are those of the full batch, whatever the split: the loop's
`accumulate_gradients` over micro-batches (in this process) and over micro-batches on 2 processes (torchrun, gloo),
with ragged labels, -100 spans of different lengths in every row, so micro-batches and processes hold different
numbers of labels. A mean of per-micro-batch means, or a gradient scaled by a constant, fails these tests."""

import copy
import itertools
import json
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from conftest import tiny_model

from hf_tinyllm.training import accumulate_gradients

ROWS, WIDTH = 8, 24

# Runs under torchrun: rank r trains on rows [4r, 4r + 4) in 2 micro-batches of 2, as the loop does with DDP, and
# reports how far its gradients are from the full batch's computed alone on an identical copy of the model.
TWO_RANKS = """
import copy, json, sys
import torch
from accelerate import Accelerator
sys.path.insert(0, sys.argv[1])
from conftest import tiny_model
from test_gradient_accumulation import ragged_batch, relative_gaps
from hf_tinyllm.training import accumulate_gradients

accelerator = Accelerator(cpu=True)
rank = accelerator.process_index
batch = ragged_batch()
reference = tiny_model(seed=0).train()
reference(**batch).loss.backward()
model = accelerator.prepare(copy.deepcopy(tiny_model(seed=0).train()))
mine = {k: v[4 * rank : 4 * rank + 4] for k, v in batch.items()}
micro = [{k: v[:2] for k, v in mine.items()}, {k: v[2:] for k, v in mine.items()}]
loss = accumulate_gradients(accelerator, model, micro)
labels = int((mine["labels"][:, 1:] != -100).sum())
report = {"rank": rank, "world": accelerator.num_processes, "labels": labels, "loss": loss.item(),
          "full_loss": reference(**batch).loss.item(),
          "gaps": relative_gaps(accelerator.unwrap_model(model), reference)}
with open(f"rank{rank}.json", "w") as f:  # a file per rank: two ranks' prints can interleave on the shared stdout
    json.dump(report, f)
"""


def ragged_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """ROWS x WIDTH token ids whose labels start with a -100 span of a different length in each row (a prompt)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (ROWS, WIDTH), generator=gen)
    labels = ids.clone()
    for row, masked in enumerate([0, 20, 3, 17, 21, 1, 12, 6][:ROWS]):
        labels[row, :masked] = -100
    return {"input_ids": ids, "labels": labels}


def relative_gaps(model: torch.nn.Module, reference: torch.nn.Module) -> dict[str, float]:
    """max |g - g_ref| / max |g_ref| per parameter."""
    ref = dict(reference.named_parameters())
    return {name: ((p.grad - ref[name].grad).abs().max() / ref[name].grad.abs().max()).item()
            for name, p in model.named_parameters()}  # fmt: skip


@pytest.fixture
def reference():
    """The full batch's loss and gradients, computed in one forward and backward."""
    model = tiny_model(seed=0).train()
    loss = model(**ragged_batch()).loss
    loss.backward()
    return model, loss.item()


@pytest.mark.parametrize("split", [[2, 2, 2, 2], [1, 3, 4], [8]])
def test_accumulated_micro_batches_give_the_full_batch_gradient(reference, split):
    full, full_loss = reference
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True)
    model = copy.deepcopy(tiny_model(seed=0).train())
    batch = ragged_batch()
    bounds = torch.tensor([0, *split]).cumsum(0).tolist()
    micro = [{k: v[a:b] for k, v in batch.items()} for a, b in itertools.pairwise(bounds)]
    loss = accumulate_gradients(accelerator, model, micro)
    assert loss.item() == pytest.approx(full_loss, rel=1e-6)
    assert max(relative_gaps(model, full).values()) < 1e-5
    # The test can tell: weighting each micro-batch's own mean equally gives other gradients.
    naive = copy.deepcopy(tiny_model(seed=0).train())
    for m in micro:
        (naive(**m).loss / len(micro)).backward()
    assert len(micro) == 1 or max(relative_gaps(naive, full).values()) > 1e-2


def test_two_processes_with_ragged_labels_give_the_full_batch_gradient(tmp_path):
    from conftest import REPO_ROOT

    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
           str(REPO_ROOT / "tests")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["rank"] for r in reports] == [0, 1] and reports[0]["world"] == 2
    assert reports[0]["labels"] != reports[1]["labels"]  # the processes hold different numbers of labels
    for report in reports:
        assert report["loss"] == pytest.approx(report["full_loss"], rel=1e-6)
        assert max(report["gaps"].values()) < 1e-5, report["rank"]
