"""Train a byte-level BPE tokenizer and save it as a folder that `AutoTokenizer.from_pretrained` loads.

python scripts/train_tokenizer.py --dataset tinyworld --vocab_size 2048 --output_dir outputs/tokenizer
python scripts/train_tokenizer.py --dataset path/to/texts/ --text_column text --output_dir my-tokenizer
"""

from hf_tinyllm.commands import tokenizer
from hf_tinyllm.errors import entry_point

main = entry_point(tokenizer)  # the job lives in the package: `tinyllm tokenizer` runs it too

if __name__ == "__main__":
    main()
