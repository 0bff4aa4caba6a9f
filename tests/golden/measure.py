"""What the golden model must keep giving under every transformers release in the matrix: run without hf_tinyllm,
loading the folder as remote code (`trust_remote_code=True`), as a Hub user does.

`measure(folder)` returns JSON-able results; `record.py` stores them beside the folder, and
tests/test_golden_model.py compares a fresh measurement (in an interpreter where hf_tinyllm is not importable) with
them. Torch and transformers only: this file is executed by that interpreter.
"""

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

PROMPTS = ["two plus three equals", "the queen walked to the", "seven minus four equals"]
NEW_TOKENS = 8


def measure(folder: str) -> dict:
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer.padding_side = "left"
    alone = [tokenizer(prompt, return_tensors="pt") for prompt in PROMPTS]
    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    greedy = dict(max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    result = {
        "module": type(model).__module__.split(".")[0],
        "input_ids": [ids["input_ids"][0].tolist() for ids in alone],
        "last_logits": [],
        "greedy": {},
    }
    with torch.no_grad():
        for ids in alone:
            result["last_logits"].append([round(x, 6) for x in model(**ids).logits[0, -1].tolist()])
        for use_cache in (True, False):
            tokens = [model.generate(**ids, use_cache=use_cache, **greedy)[0].tolist() for ids in alone]
            result["greedy"][f"alone, use_cache={use_cache}"] = tokens
            out = model.generate(**batch, use_cache=use_cache, **greedy)
            width = batch["input_ids"].shape[1]
            rows = [row[:width][mask.bool()].tolist() + row[width:].tolist()
                    for row, mask in zip(out, batch["attention_mask"], strict=True)]  # fmt: skip
            result["greedy"][f"left-padded batch, use_cache={use_cache}"] = rows
    result["texts"] = [tokenizer.decode(row) for row in result["greedy"]["alone, use_cache=True"]]
    return result
