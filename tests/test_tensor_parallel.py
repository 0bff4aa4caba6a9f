"""Tensor parallelism with the declared plan: 2 CPU processes (gloo) under torchrun load a saved TinyLLM with
`DistributedConfig(tp_plan="auto")`, each holding half of every planned matrix, and compute the same logits and
greedy tokens as the whole model in one process. The pipeline plan names real modules and their real inputs."""

import inspect
import json
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_tinyllm import TinyLLMConfig, TinyLLMForCausalLM, TinyLLMModel

TP_SCRIPT = """
import json, os, sys
import torch
import hf_tinyllm  # noqa: F401  (registers the auto classes)
from transformers import AutoModelForCausalLM
from transformers.distributed import DistributedConfig

model = AutoModelForCausalLM.from_pretrained(sys.argv[1], distributed_config=DistributedConfig(tp_plan="auto"))
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    logits = model(ids).logits
    generated = model.generate(ids, max_new_tokens=8, do_sample=False)
layer = model.model.layers[0]
local = {name: list(getattr(module.weight, "to_local", lambda: module.weight)().shape)
         for name, module in [("q_proj", layer.self_attn.q_proj), ("o_proj", layer.self_attn.o_proj),
                              ("gate_proj", layer.mlp.gate_proj), ("down_proj", layer.mlp.down_proj)]}
if int(os.environ["RANK"]) == 0:
    print(json.dumps({"tp_size": model.tp_size, "local_shapes": local, "logits": logits.tolist(),
                      "generated": generated.tolist()}))
"""


def test_two_cpu_processes_with_the_tp_plan_match_one_process(tmp_path, trained_tiny_dir):
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    ids = tokenizer(["the king and the queen", "one plus two equals"], padding=False)["input_ids"]
    ids = [row[:5] for row in ids]  # equal lengths: no padding, so the comparison is about the sharding alone
    script = tmp_path / "tp.py"
    script.write_text(TP_SCRIPT)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
           str(trained_tiny_dir), json.dumps(ids)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir).eval()
    config = model.config
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits
        expected_generated = model.generate(torch.tensor(ids), max_new_tokens=8, do_sample=False)
    assert out["tp_size"] == 2
    q_width, inner = config.num_attention_heads * config.head_dim, config.intermediate_size
    assert out["local_shapes"] == {
        "q_proj": [q_width // 2, config.hidden_size],  # colwise: half of the heads on each rank
        "o_proj": [config.hidden_size, q_width // 2],  # rowwise
        "gate_proj": [inner // 2, config.hidden_size],
        "down_proj": [config.hidden_size, inner // 2],
    }
    torch.testing.assert_close(torch.tensor(out["logits"]), expected, rtol=0, atol=1e-5)
    assert out["generated"] == expected_generated.tolist()


def test_parallel_plans_name_real_modules_and_inputs():
    model = TinyLLMForCausalLM(TinyLLMConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, qk_norm=True))
    names = {name for name, _ in model.model.named_modules()}
    for pattern in TinyLLMConfig.base_model_tp_plan:
        assert pattern.replace("*", "0") in names, pattern
    assert set(TinyLLMForCausalLM._tp_plan) | set(TinyLLMForCausalLM._pp_plan) == {"lm_head"}
    assert all(hasattr(model.model, stage) for stage in TinyLLMConfig.base_model_pp_plan)
    forward_inputs = set(inspect.signature(TinyLLMModel.forward).parameters)
    assert set(TinyLLMConfig.base_model_pp_plan["embed_tokens"][0]) <= forward_inputs
