"""Convert a saved Llama or GPT-2 checkpoint into TinyLLM, or a TinyLLM into a plain Llama folder.

python scripts/convert.py --source path/to/gpt2 --output_dir tinyllm-gpt2
python scripts/convert.py --source path/to/tinyllm --output_dir tinyllm-as-llama --to_llama
"""

from hf_tinyllm.commands import convert
from hf_tinyllm.errors import entry_point

main = entry_point(convert)  # the job lives in the package: `tinyllm convert` runs it too

if __name__ == "__main__":
    main()
