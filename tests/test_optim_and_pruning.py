"""Weight-decay groups by parameter name, for every architecture, and `save_total_limit` pruning."""

import re

import pytest
from conftest import ARCHITECTURES, tiny_model

from hf_tinyllm.training.arguments import OptimArguments
from hf_tinyllm.training.optim import build_optimizers

# The 2-D weights inside the decoder blocks; never embeddings (or the head tied to them), norms or biases.
DECAYED = re.compile(r"^model\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight$")


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_weight_decay_lands_on_the_block_matrices_only(arch):
    model = tiny_model(**ARCHITECTURES[arch])
    (adamw,) = build_optimizers(model, OptimArguments(weight_decay=0.1))
    names = {id(p): n for n, p in model.named_parameters()}
    by_decay = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in adamw.param_groups}
    expected = {n for n in names.values() if DECAYED.match(n)}
    assert by_decay[0.1] == expected and expected
    assert by_decay[0.0] == set(names.values()) - expected
    assert any("embed_tokens" in n for n in by_decay[0.0]) and any("norm" in n for n in by_decay[0.0])
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(names)  # a tied head is counted once


def test_save_total_limit_keeps_the_newest_checkpoints(tmp_path, tokenizer_dir):
    from test_training import checkpoints, run, small_run

    run(small_run(tmp_path / "run", tokenizer_dir, "--save_steps", "2", "--save_total_limit", "2"))
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-6", "checkpoint-8"]
    on_disk = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert on_disk == ["checkpoint-6", "checkpoint-8"]  # pruned from the disk, no temporary folders left
