"""Supervised fine-tuning of a saved TinyLLM with TRL on TinyWorld questions and answers (assistant-only loss);
prints the held-out arithmetic exact match before and after (all `trl.SFTConfig` flags work).

    python scripts/train_sft.py --model outputs/demo/model --output_dir outputs/sft --max_steps 600
"""

import json

from hf_tinyllm.errors import entry_point
from hf_tinyllm.training.sft import parse_sft_arguments, run_sft


@entry_point
def main() -> None:
    print(json.dumps(run_sft(*parse_sft_arguments()), indent=2))


if __name__ == "__main__":
    main()
