"""`scripts/train_trainer.py` with every process's training batches recorded, for the shard training tests: each
optimizer step appends `{"blocks": [sha256 of each block's input ids]}` to `$BATCH_LOG.rank<R>.jsonl`. The Trainer's
own `training_step` is wrapped here, in the launched process; nothing of the library is replaced."""

import json
import os
import sys

from shard_training_run import block_digest

from hf_tinyllm.commands import train_trainer
from hf_tinyllm.training.trainer import TinyLLMTrainer

LOG = f"{os.environ['BATCH_LOG']}.rank{os.environ.get('RANK', '0')}.jsonl"
original = TinyLLMTrainer.training_step


def recording(self, model, inputs, *args, **kwargs):
    with open(LOG, "a") as f:
        f.write(json.dumps({"blocks": [block_digest(row) for row in inputs["input_ids"]]}) + "\n")
    return original(self, model, inputs, *args, **kwargs)


if __name__ == "__main__":
    TinyLLMTrainer.training_step = recording
    train_trainer(sys.argv[1:])
