"""Train or fine-tune a TinyLLM through `transformers.Trainer` (all the usual TrainingArguments flags work).

    python scripts/train_trainer.py --preset nano --output_dir outputs/trainer --max_steps 300 --eval_strategy steps
    # fine-tune a saved model on arithmetic only, optionally with LoRA:
    python scripts/train_trainer.py --init_from outputs/demo/model --tokenizer outputs/demo/model \
        --tinyworld_weights '{"arithmetic": 1}' --lora_r 8 --output_dir outputs/arith-lora --max_steps 200
"""

from hf_tinyllm.commands import train_trainer
from hf_tinyllm.errors import entry_point

main = entry_point(train_trainer)  # the job lives in the package: `tinyllm train-trainer` runs it too

if __name__ == "__main__":
    main()
