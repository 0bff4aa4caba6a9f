"""Byte-level BPE tokenizer: training sources, AutoTokenizer loading, losslessness, special tokens, errors."""

import json

import pytest
from conftest import script_output
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_tinyllm import TinyLLMForCausalLM
from hf_tinyllm.presets import build_model
from hf_tinyllm.tokenization import (
    SPECIAL_TOKENS,
    match_model_to_tokenizer,
    model_overrides_for,
    save_tokenizer,
    train_tokenizer,
)

CORPUS = [
    "the king ruled wisely. the queen and her husband walked to the palace.",
    "two plus three equals five. seven minus four equals three.",
    "the capital of france is paris. a stitch in time saves nine.",
] * 40


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


def test_special_tokens_have_fixed_ids_and_pad_is_not_eos(tokenizer):
    assert [tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.pad_token_id == 0 and tokenizer.bos_token_id == 1 and tokenizer.eos_token_id == 2
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert len(tokenizer) == 320
    assert tokenizer("two plus").input_ids[0] == tokenizer.bos_token_id  # bos added on encode
    assert tokenizer("the king ruled").input_ids[1:] == tokenizer.encode("the king ruled", add_special_tokens=False)


def test_merges_are_learned_from_the_corpus(tokenizer):
    ids = tokenizer.encode(" the king ruled wisely", add_special_tokens=False)
    assert len(ids) < len(" the king ruled wisely") / 1.5  # frequent pairs were merged


def test_chat_template(tokenizer):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two plus two"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|bos|><|system|>be brief<|endoftext|><|user|>two plus two<|endoftext|><|assistant|>"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")
    with pytest.raises(Exception, match="Unknown role robot"):
        tokenizer.apply_chat_template([{"role": "robot", "content": "x"}], tokenize=False)


SPECIAL_CASES = [
    "",
    "😀👍🏽🇫🇷 emoji",
    "日本語と中文，한국어",
    "\x00\x01\x1b[31m\x7f control",
    "tab\tand\r\nnewline\n\n",
    "  leading and trailing  ",
    "a" * 20000,
    "<|endoftext|> inside text",
    "\u200b zero width \ufeff",
]


@pytest.mark.parametrize("text", SPECIAL_CASES, ids=range(len(SPECIAL_CASES)))
def test_round_trip_special_cases(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
def test_round_trip_any_unicode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    if not any(token in text for token in SPECIAL_TOKENS):  # a literal "<|pad|>" would be skipped as special
        assert tokenizer.decode(tokenizer(text).input_ids, skip_special_tokens=True) == text


LOAD_ELSEWHERE = """
from transformers import AutoTokenizer
tok = AutoTokenizer.from_pretrained({path!r})
text = "the queen walked to the palace 👑"
result = {{"ids": tok(text).input_ids, "decoded": tok.decode(tok(text).input_ids, skip_special_tokens=True),
          "pad": tok.pad_token, "eos": tok.eos_token, "chat": tok.chat_template is not None}}
"""


def test_saved_folder_loads_with_auto_tokenizer_without_the_package(tokenizer, tmp_path, without_package):
    path = save_tokenizer(tokenizer, tmp_path / "tok")
    assert sorted(p.name for p in path.iterdir()) == ["chat_template.jinja", "tokenizer.json", "tokenizer_config.json"]
    assert json.loads((path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    out = without_package.run(LOAD_ELSEWHERE.format(path=str(path)))
    assert out["ids"] == tokenizer("the queen walked to the palace 👑").input_ids
    assert out["decoded"] == "the queen walked to the palace 👑"
    assert (out["pad"], out["eos"], out["chat"]) == ("<|pad|>", "<|endoftext|>", True)


def test_trains_from_a_dataset_and_from_files(tmp_path):
    from_dataset = train_tokenizer(Dataset.from_dict({"story": CORPUS}), vocab_size=300, text_column="story")
    (tmp_path / "a.txt").write_text("\n".join(CORPUS[:60]), encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(CORPUS[60:]), encoding="utf-8")
    from_files = train_tokenizer([tmp_path / "a.txt", tmp_path / "b.txt"], vocab_size=300)
    from_one_file = train_tokenizer(str(tmp_path / "a.txt"), vocab_size=300)
    for tok in (from_dataset, from_files, from_one_file):
        assert len(tok) == 300
        assert tok.decode(tok.encode("the king ruled", add_special_tokens=False)) == "the king ruled"
    assert from_dataset.get_vocab() == train_tokenizer(CORPUS, vocab_size=300).get_vocab()  # same data, same result


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="The training corpus is empty"):
        train_tokenizer(["", ""], vocab_size=300)
    with pytest.raises(ValueError, match=r"vocab_size=100 is too small.*use vocab_size >= 262"):
        train_tokenizer(CORPUS, vocab_size=100)
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: no such file"):
        train_tokenizer(tmp_path / "missing.txt", vocab_size=300)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    with pytest.raises(ValueError, match="as UTF-8 text"):
        train_tokenizer(tmp_path / "latin1.txt", vocab_size=300)
    with pytest.raises(ValueError, match="no column 'text'"):
        train_tokenizer(Dataset.from_dict({"story": CORPUS}), vocab_size=300)


def test_special_token_ids_are_mirrored_into_the_model(tokenizer):
    overrides = model_overrides_for(tokenizer)
    assert overrides == {"vocab_size": 320, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    assert model_overrides_for(train_tokenizer(CORPUS, vocab_size=300))["vocab_size"] == 320  # multiple of 64
    model = build_model("debug", vocab_size=400, pad_token_id=5, bos_token_id=6, eos_token_id=7)
    match_model_to_tokenizer(model, tokenizer)
    assert (model.config.pad_token_id, model.config.bos_token_id, model.config.eos_token_id) == (0, 1, 2)
    generation = model.generation_config
    assert (generation.pad_token_id, generation.bos_token_id, generation.eos_token_id) == (0, 1, 2)
    with pytest.raises(ValueError, match="The tokenizer has 320 tokens but the model's vocab_size is 128"):
        match_model_to_tokenizer(build_model("debug"), tokenizer)
    assert isinstance(model, TinyLLMForCausalLM)


def test_train_tokenizer_script_writes_a_folder_auto_tokenizer_loads(tmp_path, capsys, without_package):
    data = tmp_path / "data"
    data.mkdir()
    (data / "part.jsonl").write_text("\n".join(json.dumps({"body": t}) for t in CORPUS) + "\n", encoding="utf-8")
    argv = ["--dataset", str(data), "--text_column", "body", "--vocab_size", "300",
            "--output_dir", str(tmp_path / "tok")]  # fmt: skip
    assert "Trained a 300-token byte-level BPE" in script_output("scripts/train_tokenizer.py", argv, capsys)
    out = without_package.run(LOAD_ELSEWHERE.format(path=str(tmp_path / "tok")))
    assert out["decoded"] == "the queen walked to the palace 👑" and out["pad"] == "<|pad|>"


@pytest.fixture(scope="module")
def prefixed():
    return train_tokenizer(CORPUS, vocab_size=320, add_prefix_space=True)


def test_prefix_space_makes_a_first_word_the_token_it_is_inside_a_text(tokenizer, prefixed):
    def pieces(tok, text):
        return tok.convert_ids_to_tokens(tok.encode(text, add_special_tokens=False))

    assert pieces(tokenizer, "seven minus four") != pieces(tokenizer, " seven minus four")  # the default: it differs
    assert pieces(prefixed, "seven minus four") == pieces(prefixed, " seven minus four")
    assert pieces(prefixed, "seven minus four")[0].startswith("Ġ")  # Ġ: the byte-level spelling of a space


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200).filter(lambda t: not t.startswith(" ")))
def test_prefix_space_round_trips_a_text_that_does_not_start_with_a_space(prefixed, text):
    if any(token in text for token in SPECIAL_TOKENS):
        return
    assert prefixed.decode(prefixed.encode(text, add_special_tokens=False)) == text
    assert prefixed.decode(prefixed(text).input_ids, skip_special_tokens=True) == text


def test_prefix_space_costs_a_leading_space_and_survives_save_and_load(prefixed, tmp_path):
    assert prefixed.decode(prefixed.encode(" seven", add_special_tokens=False)) == "seven"  # the documented loss
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(save_tokenizer(prefixed, tmp_path / "tok"))
    text = "seven minus four equals three."
    assert loaded(text).input_ids == prefixed(text).input_ids
    assert loaded.decode(loaded(text).input_ids, skip_special_tokens=True) == text
