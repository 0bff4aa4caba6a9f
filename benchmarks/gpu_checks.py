"""The checks of the training step that only a GPU can run, printed as JSON lines (the CPU tests cover the rest).

    python benchmarks/gpu_checks.py

1. Packed documents stay apart under every attention kernel on the device: for a batch of packed blocks, each
   document's logits (bf16 autocast) against the document run alone, per implementation (sdpa and eager stacked with
   their block mask, flex_attention with its block mask, torch_varlen and flash_attention_2 flattened with
   cu_seq_lens), and the leak that stacked rows under a flash kernel would have had.
2. Host syncs per step of the real Accelerate loop on CUDA (eager; a dispatch mode cannot watch a compiled graph),
   ordinary steps and logging steps apart.
"""

import itertools
import json
import tempfile

import numpy as np
import torch

from hf_tinyllm.data.packing import DataCollatorForCausalLM, document_position_ids
from hf_tinyllm.presets import build_model
from hf_tinyllm.training.varlen_attention import register_varlen_attention, varlen_attention_available


def packed_examples(rng: np.random.Generator, rows: int, width: int, vocab: int) -> list[dict]:
    examples = []
    for _ in range(rows):
        ids = rng.integers(3, vocab, size=width)
        ids[0] = 1
        ids[rng.choice(np.arange(8, width - 8), size=5, replace=False)] = 1
        examples.append({"input_ids": ids.tolist(), "position_ids": document_position_ids(ids, 1).tolist()})
    return examples


def isolation() -> list[dict]:
    register_varlen_attention()
    rng = np.random.default_rng(0)
    model = build_model("micro").cuda().eval()
    examples = packed_examples(rng, rows=4, width=256, vocab=model.config.vocab_size)
    implementations = ["eager", "sdpa", "flex_attention"]
    implementations += ["torch_varlen"] if varlen_attention_available() else []
    try:
        import flash_attn  # noqa: F401

        implementations.append("flash_attention_2")
    except ImportError:
        pass
    results = []
    for implementation in implementations:
        flatten = implementation in ("torch_varlen", "flash_attention_2")
        model.set_attn_implementation(implementation)
        batch = DataCollatorForCausalLM(0, flatten=flatten, max_documents=64)(examples)
        batch = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items() if k != "labels"}
        worst = 0.0
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(**batch).logits.float().reshape(len(examples), 256, -1)
            model.set_attn_implementation("sdpa")  # the reference: each document alone, one row, no mask needed
            for row, example in enumerate(examples):
                ids = np.array(example["input_ids"])
                starts = [*np.flatnonzero(ids == 1), len(ids)]
                for a, b in itertools.pairwise(starts):
                    alone = model(torch.tensor([ids[a:b]], device="cuda")).logits.float()[0]
                    worst = max(worst, (logits[row, a:b] - alone).abs().max().item())
        results.append({"check": "isolation", "attn_implementation": implementation, "flattened": flatten,
                        "max_abs_logit_diff_vs_alone": worst})  # fmt: skip
    model.set_attn_implementation("sdpa")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        stacked = DataCollatorForCausalLM(0)(examples)
        leaky = model(stacked["input_ids"].cuda()).logits.float()  # no positions: every block one sequence
        ids = np.array(examples[0]["input_ids"])
        second = np.flatnonzero(ids == 1)[1:3]
        alone = model(torch.tensor([ids[second[0] : second[1]]], device="cuda")).logits.float()[0]
        leak = (leaky[0, second[0] : second[1]] - alone).abs().max().item()
    results.append({"check": "isolation", "attn_implementation": "sdpa without document positions (the leak)",
                    "max_abs_logit_diff_vs_alone": leak})  # fmt: skip
    return results


def syncs_per_step() -> dict:
    from hf_tinyllm.training import parse_train_arguments, train
    from hf_tinyllm.training.syncs import HostSyncCounter, SyncsPerStep

    out = tempfile.mkdtemp()
    argv = ["--preset", "micro", "--tinyworld_documents", "4000", "--vocab_size", "1024", "--block_size", "256",
            "--per_device_batch_size", "8", "--gradient_accumulation_steps", "2", "--max_steps", "12",
            "--logging_steps", "4", "--eval_steps", "0", "--eval_documents", "20", "--report_to", "none",
            "--mixed_precision", "bf16", "--torch_compile", "false", "--output_dir", out]  # fmt: skip
    with HostSyncCounter() as counter:
        hooks = SyncsPerStep(counter)
        train(*parse_train_arguments(argv), hooks=[hooks])
    return {"check": "host syncs (CUDA, micro, bf16, 2 micro-batches per step)", "inside_steps": hooks.step,
            "after_steps": hooks.after, "origins": dict(counter.origins)}  # fmt: skip


if __name__ == "__main__":
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__}), flush=True)
    for check in (isolation, syncs_per_step):
        try:
            for record in (lambda r: r if isinstance(r, list) else [r])(check()):
                print(json.dumps(record), flush=True)
        except Exception as error:  # one check failing must not hide the other's figures
            print(json.dumps({"check": check.__name__, "failed": f"{type(error).__name__}: {error}"}), flush=True)
