"""The README's main job: `python scripts/demo.py` (TinyWorld -> tokenizer -> train -> evaluate -> save -> reload)."""

from transformers import HfArgumentParser

from hf_tinyllm.demo import DemoArguments, run_demo
from hf_tinyllm.errors import entry_point


@entry_point
def main() -> None:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses()
    run_demo(args)


if __name__ == "__main__":
    main()
