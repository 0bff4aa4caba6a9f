"""Train a TinyLLM with the Accelerate loop; runs unchanged under `python` and `accelerate launch`.

python scripts/train.py --preset nano --max_steps 300 --output_dir outputs/nano
python scripts/train.py configs/runs/demo.yaml
accelerate launch --config_file configs/accelerate/ddp.yaml scripts/train.py --config configs/runs/demo.yaml
"""

import json

from accelerate import PartialState

from hf_tinyllm.errors import entry_point
from hf_tinyllm.training import parse_train_arguments, train


@entry_point
def main() -> None:
    summary = train(*parse_train_arguments())
    if PartialState().is_main_process:  # one summary per run, not one per process
        print(json.dumps({k: v for k, v in summary.items() if k != "arithmetic_examples"}, indent=2, default=str))


if __name__ == "__main__":
    main()
