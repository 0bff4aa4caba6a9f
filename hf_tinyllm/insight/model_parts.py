"""What every insight needs from a causal LM: its parts (input embedding, decoder layers, final norm, head), its
prompt encoding with checked ids, words as token ids, and a guard that leaves the model's train/eval mode as found.

The parts are found by structure, not by class name: TinyLLM and Llama keep them at `model.model.{embed_tokens,
layers,norm}` + `lm_head`, GPT-2 at `transformer.{wte,h,ln_f}` + `lm_head`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..tokenization import check_token_ids


class InsightError(ValueError):
    """A bad input to an insight function (a word, a prompt, a model without a needed part), said in one line."""


@dataclass
class DecoderParts:
    embed_tokens: nn.Embedding  # (V, C) input embedding
    layers: list[nn.Module]  # the decoder blocks, in order; each maps the residual stream (B, T, C) to (B, T, C)
    final_norm: nn.Module  # applied to the last residual stream before the head
    lm_head: nn.Module  # (B, T, C) -> (B, T, V)

    @property
    def tied(self) -> bool:
        head = getattr(self.lm_head, "weight", None)
        return head is not None and head.data_ptr() == self.embed_tokens.weight.data_ptr()


_LAYOUTS = (("model", "layers", "norm"), ("transformer", "h", "ln_f"))


def find_parts(model: PreTrainedModel) -> DecoderParts:
    """The embedding, decoder layers, final norm and head of a TinyLLM, Llama- or GPT-2-like causal LM."""
    head = model.get_output_embeddings()
    for base_name, layers_name, norm_name in _LAYOUTS:
        base = getattr(model, base_name, None)
        layers, norm = getattr(base, layers_name, None), getattr(base, norm_name, None)
        if isinstance(layers, nn.ModuleList) and isinstance(norm, nn.Module) and head is not None:
            return DecoderParts(model.get_input_embeddings(), list(layers), norm, head)
    raise InsightError(
        f"Cannot find the decoder layers, final norm and head of {type(model).__name__}; insight supports TinyLLM "
        "and Llama- or GPT-2-like causal LMs (model.model.layers/norm or model.transformer.h/ln_f, plus lm_head)."
    )


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model.eval()` for the block, then the caller's mode back (insight never flips it behind their back)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def encode_prompt(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> torch.Tensor:
    """(1, T) ids of `prompt` as the model saw documents in training (with the tokenizer's bos when it adds one),
    on the model's device; an empty prompt, one longer than the model's context, or an id outside the model's
    vocabulary is an `InsightError`."""
    if not prompt or not prompt.strip():
        raise InsightError("The prompt is empty; give some text, e.g. 'two plus three equals'.")
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    context = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if context is not None and ids.shape[1] > context:
        raise InsightError(
            f"The prompt is {ids.shape[1]} tokens, longer than the model's context of {context}; shorten it."
        )
    check_ids(model, ids)
    return ids.to(model.device)


def check_ids(model: PreTrainedModel, ids: torch.Tensor) -> None:
    try:
        check_token_ids(model, ids.tolist())
    except ValueError as err:
        raise InsightError(str(err)) from None


def word_token_ids(tokenizer: PreTrainedTokenizerBase, word: str) -> list[int]:
    """The token ids of `word` as it appears inside a sentence (after a space, for byte-level BPE tokenizers).

    A word the tokenizer cannot spell without its unknown token (word-level vocabularies) is an `InsightError`; a
    word of several tokens is returned as several ids, and each insight says how it uses them."""
    word = word.strip()
    if not word or " " in word:
        raise InsightError(f"{word!r} is not a single word; give one word such as 'queen'.")
    ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    if not ids or (tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids):
        raise InsightError(f"The word {word!r} is not in the tokenizer's vocabulary; try a word from the corpus.")
    return ids


def token_text(tokenizer: PreTrainedTokenizerBase, token_id: int) -> str:
    """A token as readable text (its decoded string; special tokens by name)."""
    return tokenizer.decode([token_id])


__all__ = [
    "DecoderParts",
    "InsightError",
    "check_ids",
    "encode_prompt",
    "eval_mode",
    "find_parts",
    "token_text",
    "word_token_ids",
]
