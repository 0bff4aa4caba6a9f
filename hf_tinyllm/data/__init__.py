"""Corpora and the `datasets` pipeline: the embedded TinyWorld generator, loading, tokenising and packing, and token
shards for corpora larger than memory."""

from .loading import load_text_dataset
from .packing import (
    DataCollatorForCausalLM,
    check_block_size,
    document_position_ids,
    pack_dataset,
    split_train_validation,
    tokenize_dataset,
)
from .shard_writer import write_token_shards
from .shards import TokenBlocks, TokenShards
from .tinyworld import TinyWorld, TinyWorldConfig, save_tinyworld, tinyworld_dataset, tinyworld_floor

__all__ = [
    "DataCollatorForCausalLM",
    "TinyWorld",
    "TinyWorldConfig",
    "TokenBlocks",
    "TokenShards",
    "check_block_size",
    "document_position_ids",
    "load_text_dataset",
    "pack_dataset",
    "save_tinyworld",
    "split_train_validation",
    "tinyworld_dataset",
    "tinyworld_floor",
    "tokenize_dataset",
    "write_token_shards",
]
