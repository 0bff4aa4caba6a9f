"""Push a saved TinyLLM folder to the Hugging Face Hub with its model card (same options as `tinyllm push`).

python scripts/push_to_hub.py outputs/demo/model your-name/tinyllm-demo [--private] [--revision v2] [--llama]
"""

import sys

from hf_tinyllm.cli import main

if __name__ == "__main__":
    main(["push", *sys.argv[1:]])
