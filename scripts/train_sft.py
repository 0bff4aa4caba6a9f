"""Supervised fine-tuning of a saved TinyLLM with TRL on TinyWorld questions and answers (assistant-only loss);
prints the held-out arithmetic exact match before and after (all `trl.SFTConfig` flags work).

    python scripts/train_sft.py --model outputs/demo/model --output_dir outputs/sft --max_steps 600
"""

from hf_tinyllm.commands import train_sft
from hf_tinyllm.errors import entry_point

main = entry_point(train_sft)  # the job lives in the package: `tinyllm train-sft` runs it too

if __name__ == "__main__":
    main()
