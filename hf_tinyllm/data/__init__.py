"""Corpora and the `datasets` pipeline: the embedded TinyWorld generator, loading, tokenising and packing."""

from .loading import load_text_dataset
from .packing import (
    DataCollatorForCausalLM,
    check_block_size,
    document_position_ids,
    pack_dataset,
    split_train_validation,
    tokenize_dataset,
)
from .tinyworld import TinyWorld, TinyWorldConfig, save_tinyworld, tinyworld_dataset, tinyworld_floor

__all__ = [
    "DataCollatorForCausalLM",
    "TinyWorld",
    "TinyWorldConfig",
    "check_block_size",
    "document_position_ids",
    "load_text_dataset",
    "pack_dataset",
    "save_tinyworld",
    "split_train_validation",
    "tinyworld_dataset",
    "tinyworld_floor",
    "tokenize_dataset",
]
