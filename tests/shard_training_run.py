"""`scripts/train.py` with every process's micro-batches recorded, for the shard training tests: each step appends
`{"step", "blocks": [sha256 of each block's input ids, micro-batch after micro-batch]}` to `$BATCH_LOG.rank<R>.jsonl`
(the real loop through its `StepHooks`, under `accelerate launch` like any run)."""

import hashlib
import json
import os
import sys

from hf_tinyllm.training import parse_train_arguments, train
from hf_tinyllm.training.loop import StepHooks


def block_digest(input_ids) -> str:
    return hashlib.sha256(input_ids.cpu().numpy().tobytes()).hexdigest()[:16]


class BatchLog(StepHooks):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_micro_batches(self, step: int, micro_batches: list[dict]) -> None:
        blocks = [block_digest(row) for batch in micro_batches for row in batch["input_ids"]]
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, "blocks": blocks}) + "\n")


if __name__ == "__main__":
    log = f"{os.environ['BATCH_LOG']}.rank{os.environ.get('RANK', '0')}.jsonl"
    train(*parse_train_arguments(sys.argv[1:]), hooks=[BatchLog(log)])
