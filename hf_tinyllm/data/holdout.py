"""The validation hold-out of a streamed corpus without a validation split: one rule for both ways of reading text
as a stream, `tinyllm tokenize` (token shards) and `--streaming`. A document is held out when a seeded hash of its
text falls below the fraction, so the rule needs no document count, a duplicated document never has one copy in
training and another in validation, and the same source with the same seed and fraction gives the same validation
documents whichever way it is read."""

import hashlib

HOLDOUT_RULE = "blake2b-64 of '<seed>:<text>' below the fraction"  # recorded in token shards' settings


def held_out(text: str, seed: int, fraction: float) -> bool:
    """Whether the document `text` belongs to the validation hold-out of `fraction` under `seed`."""
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < fraction


__all__ = ["HOLDOUT_RULE", "held_out"]
