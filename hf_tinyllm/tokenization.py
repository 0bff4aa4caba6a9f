"""Byte-level BPE tokenizers trained with `tokenizers`, wrapped as `PreTrainedTokenizerFast` for `AutoTokenizer`.

Byte-level means every Unicode string round-trips exactly: `decode(encode(text)) == text` (no normaliser, no
unknown token, no clean-up of spaces). Special tokens: a dedicated pad (not eos, so the language-modelling collator
never masks the end-of-text labels the model must learn), bos (added in front of every encoded text), eos /
end-of-text (separates documents when packing), and the role tokens of the chat template.
"""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

from .atomic import atomic_directory
from .data.loading import unix_newlines
from .errors import UserError

PAD_TOKEN = "<|pad|>"
BOS_TOKEN = "<|bos|>"
EOS_TOKEN = "<|endoftext|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, *ROLE_TOKENS.values()]  # ids 0, 1, 2, ... in this order
BYTE_ALPHABET_SIZE = 256

# Each message is its role token, its content, then end-of-text; a generation prompt opens the assistant's turn.
# An assistant's content and its end-of-text sit inside `{% generation %}` markers, so that
# `apply_chat_template(..., return_assistant_tokens_mask=True)` (and TRL's `assistant_only_loss`) train exactly the
# tokens the model must produce after a generation prompt, the stop token included; the rendered text is unchanged.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role ' + message['role'] + '; use system, user or assistant.') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)

TextSource = Iterable[str] | str | Path | list[Path]


def train_tokenizer(
    source: TextSource,
    vocab_size: int = 4096,
    min_frequency: int = 2,
    text_column: str = "text",
    model_max_length: int = 1024,
    add_prefix_space: bool = False,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `source` and wrap it for transformers.

    `source` is an iterable of texts, a `datasets.Dataset` / `IterableDataset` (its `text_column` is read), the path
    (`str` or `Path`) of a plain-text file, or a list of `Path`s. For json/csv/parquet files, load them with
    `hf_tinyllm.data.load_text_dataset` first.

    `add_prefix_space`: encode a text's first word (and the first word after a special token) as if a space preceded
    it, as SentencePiece tokenizers do, so a word is the same token at the start of a document as inside it ("four"
    "teen" at the start and " fourteen" inside become " fourteen" everywhere); decoding drops that one added space.
    The price: a text that itself begins with a space loses it on the round trip, a special token is followed by a
    space when decoded with special tokens, and llama.cpp's byte-level tokenizer ignores the GGUF flag that says so.
    """
    minimum = BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)
    if vocab_size < minimum:
        raise ValueError(
            f"vocab_size={vocab_size} is too small: a byte-level BPE needs the {BYTE_ALPHABET_SIZE} byte tokens and "
            f"{len(SPECIAL_TOKENS)} special tokens; use vocab_size >= {minimum} (a few thousand for real text)."
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    if add_prefix_space:  # the decoded pieces fused into one string, then its one leading space dropped
        tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    texts = _CountingTexts(_iter_texts(source, text_column))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if texts.characters == 0:
        raise ValueError("The training corpus is empty (no non-empty text); pass documents to train the tokenizer on.")
    bos_id = tokenizer.token_to_id(BOS_TOKEN)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B", special_tokens=[(BOS_TOKEN, bos_id)]
    )
    return wrap_tokenizer(tokenizer, model_max_length=model_max_length)


def wrap_tokenizer(tokenizer: Tokenizer, model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """A `PreTrainedTokenizerFast` around a trained `tokenizers.Tokenizer` with this project's special tokens."""
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=list(ROLE_TOKENS.values()),
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, path: str | Path) -> Path:
    """Save to a folder of its own, atomically (see `write_tokenizer_files`)."""
    path = Path(path)
    with atomic_directory(path) as tmp:
        write_tokenizer_files(tokenizer, tmp)
    return path


def write_tokenizer_files(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    """`save_pretrained` into `folder` (e.g. beside a model), with `tokenizer_config.json` naming
    `PreTrainedTokenizerFast` so that transformers 4.x and other tools load it too (transformers 5.x writes
    `TokenizersBackend`, which they do not know)."""
    tokenizer.save_pretrained(folder)
    config_file = Path(folder) / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


TOKENIZER_FILE = "tokenizer.json"


class TokenizerLoadError(UserError, ValueError):
    """A tokenizer that cannot be loaded, naming the folder, the missing file and the fix."""


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """The tokenizer of a local folder or Hub repository (its `tokenizer.json`).

    Loaded as `PreTrainedTokenizerFast`, not through `AutoTokenizer`: transformers' `AutoTokenizer` reads the
    folder's `config.json` first, and a TinyLLM config's `auto_map` makes it ask to run the model's remote code (or,
    answered no, warn about an unknown model type), although a tokenizer needs none.
    """
    folder = Path(path)
    if folder.is_dir() and not (folder / TOKENIZER_FILE).is_file():
        raise TokenizerLoadError(
            f"{folder} holds no tokenizer ({TOKENIZER_FILE} is missing): pass the folder `tinyllm tokenizer` wrote, or "
            "a model folder saved with its tokenizer (a training run's model folder holds one)."
        )
    if not folder.exists() and str(path).count("/") != 1:
        raise TokenizerLoadError(
            f"{path} is neither a folder nor a Hub repository id (user/name): pass a tokenizer folder, e.g. the "
            "one `tinyllm tokenizer --output_dir DIR` wrote."
        )
    try:
        return PreTrainedTokenizerFast.from_pretrained(path)
    except (OSError, ValueError, KeyError) as err:
        first_line = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise TokenizerLoadError(
            f"cannot load a tokenizer from {path} ({first_line.strip()}): pass a folder or repository with a "
            f"{TOKENIZER_FILE} written by `tinyllm tokenizer` or saved beside a model."
        ) from err


def special_token_ids(tokenizer: PreTrainedTokenizerFast) -> dict[str, int]:
    """The ids a model config and generation config must carry to match `tokenizer`."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def model_overrides_for(tokenizer: PreTrainedTokenizerFast, pad_to_multiple_of: int = 64) -> dict[str, int]:
    """Config fields for a model built for `tokenizer`: its special-token ids and a vocabulary that covers it,
    rounded up to a multiple of `pad_to_multiple_of` for efficient matmuls (the extra rows are never produced by
    the tokenizer). Use as `build_model("nano", **model_overrides_for(tokenizer))`."""
    vocab = len(tokenizer)
    vocab = pad_to_multiple_of * -(-vocab // pad_to_multiple_of) if pad_to_multiple_of else vocab
    return {"vocab_size": vocab, **special_token_ids(tokenizer)}


def match_model_to_tokenizer(model: PreTrainedModel | PreTrainedConfig, tokenizer: PreTrainedTokenizerFast) -> None:
    """Mirror the tokenizer's special-token ids into a model's config and generation config (in place)."""
    config = model if isinstance(model, PreTrainedConfig) else model.config
    if len(tokenizer) > config.vocab_size:
        raise ValueError(
            f"The tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {config.vocab_size}; build the "
            "model with `**model_overrides_for(tokenizer)` or call `model.resize_token_embeddings(len(tokenizer))`."
        )
    for name, value in special_token_ids(tokenizer).items():
        setattr(config, name, value)
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            setattr(generation_config, name, value)


class _CountingTexts:
    """Iterates texts for the trainer while counting characters, so an empty corpus is reported, not trained on."""

    def __init__(self, texts: Iterator[str]) -> None:
        self.texts = texts
        self.characters = 0

    def __iter__(self) -> Iterator[str]:
        for text in map(unix_newlines, self.texts):  # no tokenizer learns carriage returns from Windows files
            self.characters += len(text)
            yield text


def check_token_ids(model: PreTrainedModel, token_ids: Iterable[Iterable[int]]) -> None:
    """Raise a `ValueError` if any id (in sequences of ids, or a tensor of them) lies outside the model's vocabulary:
    the tokenizer does not belong to the model. `forward` would fail with an IndexError deep in torch."""
    vocab_size = model.config.get_text_config().vocab_size
    flat = [int(i) for row in token_ids for i in row]
    bad = [i for i in flat if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(
            f"Token id {max(bad, key=abs)} is outside the model's vocabulary of {vocab_size}; the tokenizer does not "
            "match the model (load both from the same folder)."
        )


def _iter_texts(source: TextSource, text_column: str) -> Iterator[str]:
    if isinstance(source, (str, Path)):
        source = [Path(source)]
    if _is_dataset(source):
        if text_column not in (source.column_names or []):
            raise ValueError(
                f"The dataset has no column {text_column!r} (columns: {source.column_names}); pass text_column=..."
            )
        for batch in source.iter(batch_size=1000):
            yield from (text for text in batch[text_column] if text)
        return
    if isinstance(source, list) and source and all(isinstance(item, Path) for item in source):
        yield from _iter_files(source)
        return
    for text in source:
        if not isinstance(text, str):
            raise TypeError(f"Expected strings to train the tokenizer on, got {type(text).__name__}.")
        if text:
            yield text


def _iter_files(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"Cannot read {path}: no such file. Pass existing plain-text files.")
        try:
            with path.open(encoding="utf-8") as f:
                yield from (line for line in f if line.strip())
        except UnicodeDecodeError as err:
            raise ValueError(f"Cannot read {path} as UTF-8 text ({err}); convert it to UTF-8 first.") from err


def _is_dataset(source: object) -> bool:
    return hasattr(source, "column_names") and hasattr(source, "iter")


__all__ = [
    "CHAT_TEMPLATE",
    "SPECIAL_TOKENS",
    "check_token_ids",
    "load_tokenizer",
    "match_model_to_tokenizer",
    "model_overrides_for",
    "save_tokenizer",
    "special_token_ids",
    "train_tokenizer",
    "wrap_tokenizer",
    "write_tokenizer_files",
]
