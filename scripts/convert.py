"""Convert a saved Llama or GPT-2 checkpoint into TinyLLM, or a TinyLLM into a plain Llama folder.

python scripts/convert.py --source path/to/gpt2 --output_dir tinyllm-gpt2
python scripts/convert.py --source path/to/tinyllm --output_dir tinyllm-as-llama --to_llama
"""

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from hf_tinyllm.convert import convert_folder
from hf_tinyllm.errors import entry_point


@dataclass
class ConvertArguments:
    source: str = field(metadata={"help": "Folder or Hub id of a Llama, GPT-2 or TinyLLM checkpoint."})
    output_dir: str = field(metadata={"help": "Where the converted folder is written (atomically)."})
    to_llama: bool = field(default=False, metadata={"help": "Write a plain LlamaForCausalLM instead of TinyLLM."})


@entry_point
def main() -> None:
    (args,) = HfArgumentParser(ConvertArguments).parse_args_into_dataclasses()
    path = convert_folder(args.source, args.output_dir, to_llama=args.to_llama)
    print(f"Wrote {path}: {', '.join(sorted(p.name for p in path.iterdir()))}")


if __name__ == "__main__":
    main()
