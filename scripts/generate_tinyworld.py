"""Generate the TinyWorld corpus and write it to disk (one file per split), printing its exact entropy floor.

python scripts/generate_tinyworld.py --output_dir outputs/tinyworld --format parquet
"""

import json
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_tinyllm.data.tinyworld import TinyWorld, TinyWorldConfig, save_tinyworld, tinyworld_dataset
from hf_tinyllm.errors import entry_point


@dataclass
class TinyWorldArguments:
    output_dir: str = field(metadata={"help": "Folder for train/validation/heldout_arithmetic files."})
    format: str = field(default="jsonl", metadata={"help": "jsonl or parquet."})
    seed: int = field(default=0, metadata={"help": "Corpus seed (the held-out problems do not depend on it)."})
    num_train_documents: int = field(default=40_000)
    num_validation_documents: int = field(default=2_000)
    max_operand: int = field(default=20, metadata={"help": "Largest operand of plus/minus problems."})
    max_factor: int = field(default=12, metadata={"help": "Largest factor of times problems."})
    heldout_fraction: float = field(default=0.1, metadata={"help": "Share of arithmetic problems held out."})


@entry_point
def main() -> None:
    (args,) = HfArgumentParser(TinyWorldArguments).parse_args_into_dataclasses()
    fields = {k: v for k, v in vars(args).items() if k not in ("output_dir", "format")}
    config = TinyWorldConfig(**fields)
    path = save_tinyworld(tinyworld_dataset(config), args.output_dir, format=args.format)
    summary = {k: v for k, v in TinyWorld(config).summary().items() if k != "config"}
    print(f"Wrote TinyWorld to {path}:\n{json.dumps(summary, indent=2)}")


if __name__ == "__main__":
    main()
