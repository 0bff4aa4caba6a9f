"""Train or fine-tune a TinyLLM through `transformers.Trainer` (all the usual TrainingArguments flags work).

    python scripts/train_trainer.py --preset nano --output_dir outputs/trainer --max_steps 300 --eval_strategy steps
    # fine-tune a saved model on arithmetic only, optionally with LoRA:
    python scripts/train_trainer.py --init_from outputs/demo/model --tokenizer outputs/demo/model \
        --tinyworld_weights '{"arithmetic": 1}' --lora_r 8 --output_dir outputs/arith-lora --max_steps 200
"""

import json

from transformers import HfArgumentParser, TrainingArguments

from hf_tinyllm.errors import entry_point
from hf_tinyllm.training import DataArguments, ModelArguments, ProbeArguments
from hf_tinyllm.training.trainer import LoraArguments, run_trainer


@entry_point
def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, LoraArguments, TrainingArguments, ProbeArguments))
    metrics = run_trainer(*parser.parse_args_into_dataclasses())
    print(json.dumps(metrics, indent=2, default=str))


if __name__ == "__main__":
    main()
