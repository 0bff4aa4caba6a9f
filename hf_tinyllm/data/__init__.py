"""Corpora and the `datasets` pipeline: the embedded TinyWorld generator, loading, tokenising and packing."""
