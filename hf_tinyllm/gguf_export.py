"""Write a transformers `LlamaForCausalLM` (and its byte-level BPE tokenizer) as one GGUF file: the format llama.cpp,
Ollama and LM Studio run, and that `AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)` loads back.

The layout follows llama.cpp's `convert_hf_to_gguf.py` (`LlamaModel`, `_set_vocab_gpt2`): llama.cpp's tensor
names, Q/K rows permuted to its rotary layout, norms kept in f32, the tokenizer as a "gpt2" vocabulary with merges.
`convert.export_gguf` is the entry point for a TinyLLM or a saved folder.
"""

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from .atomic import atomic_file

# The `general.file_type` of each choice; norms (1-D tensors) stay f32 in all of them, as in llama.cpp.
FILE_TYPES = ("f32", "f16", "q8_0")
# llama.cpp's names for a byte-level BPE vocabulary and for the GPT-2 split regex that `tokenizers`'
# `ByteLevel(use_regex=True)` applies before the merges.
TOKENIZER_MODEL = "gpt2"
TOKENIZER_PRE = "gpt-2"


def gguf_incompatibilities(config) -> list[str]:
    """Settings of a Llama or TinyLLM config that a GGUF "llama" file cannot state, each with the value it needs.

    llama.cpp's llama graph always uses SiLU; transformers' GGUF loader builds a Llama without biases or RoPE
    scaling, so a file holding them would load silently wrong."""
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    required = {"attention_bias": False, "mlp_bias": False, "hidden_act": "silu"}
    problems = [
        f"{k}={getattr(config, k)!r} (GGUF needs {v!r})" for k, v in required.items() if getattr(config, k) != v
    ]
    if rope_type != "default":
        problems.append(f"rope_type={rope_type!r} (GGUF export supports only 'default')")
    return problems


def write_gguf(
    model: LlamaForCausalLM, path: str | Path, file_type: str = "f32", tokenizer: PreTrainedTokenizerBase | None = None
) -> Path:
    """Write `model` (and `tokenizer`, a byte-level BPE, if given) to the GGUF file `path`, atomically.

    `file_type`: "f32" (exact), "f16" or "q8_0" (llama.cpp's 8-bit blocks of 32; a matrix whose rows are not a
    multiple of 32 falls back to f16, as in `convert_hf_to_gguf.py`)."""
    try:
        import gguf
    except ImportError as err:
        raise ImportError("Writing GGUF needs the gguf package: pip install 'gguf>=0.19,<1'.") from err

    if file_type not in FILE_TYPES:
        raise ValueError(f"file_type={file_type!r} is not supported; choose one of {list(FILE_TYPES)}.")
    config = model.config
    problems = gguf_incompatibilities(config)
    if problems:
        raise ValueError(f"This model cannot be written as GGUF: {'; '.join(problems)}. Train with those settings.")
    vocab = _tokenizer_metadata(tokenizer, config.vocab_size) if tokenizer is not None else None
    path = Path(path)
    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
        try:
            _add_hyperparameters(writer, config, file_type, name=Path(config.name_or_path or "tinyllm").name)
            if vocab is not None:
                _add_tokenizer(writer, vocab)
            for name, data, qtype in _gguf_tensors(model, file_type):
                writer.add_tensor(name, data, raw_dtype=qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return path


def _add_hyperparameters(writer, config, file_type: str, name: str) -> None:
    import gguf

    head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
    writer.add_name(name)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    if head_dim * config.num_attention_heads != config.hidden_size:
        # llama.cpp derives the head size from embedding_length / head_count unless these say otherwise.
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_file_type(
        {
            "f32": gguf.LlamaFileType.ALL_F32,
            "f16": gguf.LlamaFileType.MOSTLY_F16,
            "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        }[file_type]
    )
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _permute_rotary(weight: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder each head's rows from transformers' rotate-half RoPE layout (pairs (i, i + d/2)) to llama.cpp's
    interleaved one (pairs (2i, 2i + 1)): `LlamaModel.permute` in llama.cpp's `convert_hf_to_gguf.py`, undone by
    `LlamaTensorProcessor._reverse_permute_weights` in transformers. weight: (n_head * head_dim, hidden)."""
    return (
        weight.reshape(n_head, 2, weight.shape[0] // n_head // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def _gguf_tensors(model: LlamaForCausalLM, file_type: str) -> Iterator[tuple[str, np.ndarray, object]]:
    """(llama.cpp name, data, raw dtype or None) for every weight; the tied lm_head is left out, as llama.cpp does
    (a file without `output.weight` ties the output to `token_embd.weight`)."""
    import gguf

    config = model.config
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ValueError(f"{hf_name} has no llama.cpp tensor name; only a plain LlamaForCausalLM exports to GGUF.")
        data = tensor.detach().to("cpu").float().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute_rotary(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute_rotary(data, config.num_key_value_heads)
        yield (name, *_encode(data, file_type))


def _encode(data: np.ndarray, file_type: str) -> tuple[np.ndarray, object]:
    import gguf

    if data.ndim == 1 or file_type == "f32":
        return data.astype(np.float32), None
    if file_type == "q8_0":
        try:
            return gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
        except gguf.QuantError:
            pass  # rows not a multiple of the block size: f16 below
    return data.astype(np.float16), None


def _tokenizer_metadata(tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> dict:
    """The "gpt2" vocabulary llama.cpp reads: one token per model row (ids the tokenizer never produces become
    unused `[PADi]` tokens), their types, the merges, the special ids and whether encoding adds bos / eos."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else {}
    pre = spec.get("pre_tokenizer") or {}
    byte_level = (
        spec.get("model", {}).get("type") == "BPE"
        and spec.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and pre.get("use_regex", True)
    )
    if byte_level and pre.get("add_prefix_space", False):
        raise ValueError(
            "This tokenizer adds a prefix space (train_tokenizer(add_prefix_space=True)): GGUF readers of byte-level "
            "vocabularies (llama.cpp, transformers' gguf_file=) ignore that flag and would split the first word of a "
            "text differently. Export the weights alone (`tinyllm export --without_tokenizer`, "
            "export_gguf(..., with_tokenizer=False)) or use a tokenizer trained without it."
        )
    if not byte_level:
        raise ValueError(
            "Only a fast byte-level BPE tokenizer (GPT-2 pre-tokenizer, no normalizer) exports to "
            "GGUF; this one is not. Train one with `hf_tinyllm.tokenization.train_tokenizer`, or pass tokenizer=None "
            "to write the model only."
        )
    if len(tokenizer) > vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but the model only {vocab_size} rows.")
    id_to_token = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in id_to_token:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added:
            tokens.append(added[i].content)
            types.append(gguf.TokenType.CONTROL if added[i].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(id_to_token[i])
            types.append(gguf.TokenType.NORMAL)
    probe = tokenizer("a")["input_ids"]
    return {
        "tokens": tokens,
        "types": types,
        "merges": [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]],
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "pad": tokenizer.pad_token_id,
        "add_bos": tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id],
        "add_eos": tokenizer.eos_token_id is not None and probe[-1:] == [tokenizer.eos_token_id],
        "chat_template": tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None,
    }


def _add_tokenizer(writer, vocab: dict) -> None:
    writer.add_tokenizer_model(TOKENIZER_MODEL)
    writer.add_tokenizer_pre(TOKENIZER_PRE)
    writer.add_token_list(vocab["tokens"])
    writer.add_token_types(vocab["types"])
    writer.add_token_merges(vocab["merges"])
    for key, add in (
        ("bos", writer.add_bos_token_id),
        ("eos", writer.add_eos_token_id),
        ("pad", writer.add_pad_token_id),
    ):
        if vocab[key] is not None:
            add(vocab[key])
    writer.add_add_bos_token(vocab["add_bos"])
    writer.add_add_eos_token(vocab["add_eos"])
    if vocab["chat_template"]:
        writer.add_chat_template(vocab["chat_template"])


__all__ = ["FILE_TYPES", "gguf_incompatibilities", "write_gguf"]
