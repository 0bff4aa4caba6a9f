"""The fast decoding loop (generation_tinyllm): a static cache and a compiled decode step behind `generate`.

One model serves the module, so the compiled graphs (batch 1 and batch 3, one cache length) are built once.
"""

import logging

import pytest
import torch
from conftest import padded_batch, tiny_model
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from hf_tinyllm import TinyLLMForCausalLM

NEW = 6
GREEDY = dict(max_new_tokens=NEW, do_sample=False, pad_token_id=0)


@pytest.fixture(scope="module")
def model() -> TinyLLMForCausalLM:
    return tiny_model()


def used_fast_loop(model) -> bool:
    return bool(model.__dict__.get("_fast_decode_caches"))


def forget_fast_loop(model) -> None:
    model.__dict__.pop("_fast_decode_caches", None)


def test_greedy_tokens_equal_generate_left_padded_and_alone(model):
    ids, mask = padded_batch()
    for prompt, prompt_mask in ((ids, mask), (ids[:1], mask[:1])):
        expected = model.generate(prompt, attention_mask=prompt_mask, min_new_tokens=NEW, **GREEDY)
        forget_fast_loop(model)
        fast = model.generate(prompt, attention_mask=prompt_mask, min_new_tokens=NEW, fast_decode=True, **GREEDY)
        assert used_fast_loop(model)
        assert fast.shape == (prompt.shape[0], 9 + NEW)
        assert torch.equal(fast, expected)


def test_eos_stops_rows_and_pads_them_as_generate_does(model):
    ids, mask = padded_batch()
    free = model.generate(ids, attention_mask=mask, min_new_tokens=NEW, **GREEDY)
    eos = int(free[0, 9 + 1])  # row 0's second new token: that row stops there, the others run on or stop later
    expected = model.generate(ids, attention_mask=mask, eos_token_id=eos, **GREEDY)
    fast = model.generate(ids, attention_mask=mask, eos_token_id=eos, fast_decode=True, **GREEDY)
    assert torch.equal(fast, expected)
    stop = 9 + fast[0, 9:].tolist().index(eos)  # row 0 stops at its first eos (at most the second new token)
    assert stop <= 9 + 1 and (fast[0, stop + 1 :] == 0).all()  # and is padded after it


def test_sampling_draws_the_tokens_of_generate_for_a_seed(model):
    ids, mask = padded_batch()
    sample = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, min_new_tokens=NEW, max_new_tokens=NEW)
    torch.manual_seed(3)
    expected = model.generate(ids, attention_mask=mask, pad_token_id=0, **sample)
    torch.manual_seed(3)
    fast = model.generate(ids, attention_mask=mask, pad_token_id=0, fast_decode=True, **sample)
    assert torch.equal(fast, expected)
    torch.manual_seed(4)
    other = model.generate(ids, attention_mask=mask, pad_token_id=0, fast_decode=True, **sample)
    assert not torch.equal(other, fast)  # it does sample


def test_the_switch_lives_in_the_saved_generation_config(model, tmp_path):
    ids, mask = padded_batch()
    expected = model.generate(ids[:1], attention_mask=mask[:1], min_new_tokens=NEW, **GREEDY)
    model.generation_config.fast_decode = True
    try:
        model.save_pretrained(tmp_path)
    finally:
        del model.generation_config.fast_decode
    assert '"fast_decode": true' in (tmp_path / "generation_config.json").read_text()
    assert (tmp_path / "generation_tinyllm.py").is_file()  # shipped with the remote code
    loaded = TinyLLMForCausalLM.from_pretrained(tmp_path).eval()
    out = loaded.generate(ids[:1], attention_mask=mask[:1], min_new_tokens=NEW, **GREEDY)
    assert used_fast_loop(loaded)
    assert torch.equal(out, expected)
    plain = loaded.generate(ids[:1], attention_mask=mask[:1], min_new_tokens=NEW, fast_decode=False, **GREEDY)
    assert torch.equal(plain, expected)
    forget_fast_loop(loaded)
    loaded.generate(ids[:1], attention_mask=mask[:1], generation_config=GenerationConfig(**GREEDY))
    assert not used_fast_loop(loaded)  # a generation config passed in the call decides for itself


def test_streamer_receives_the_prompt_then_each_token(model):
    class Recorder(BaseStreamer):
        def __init__(self):
            self.chunks, self.ended = [], False

        def put(self, value):
            self.chunks.append(value.tolist())

        def end(self):
            self.ended = True

    ids, mask = padded_batch()
    recorder = Recorder()
    out = model.generate(ids[:1], attention_mask=mask[:1], min_new_tokens=NEW, fast_decode=True, streamer=recorder,
                         **GREEDY)  # fmt: skip
    assert recorder.ended
    assert recorder.chunks[0] == ids[:1].tolist()
    assert [chunk[0] for chunk in recorder.chunks[1:]] == out[0, 9:].tolist()


def test_what_the_fast_loop_lacks_runs_transformers_loop(model, caplog):
    ids, mask = padded_batch()
    beams = dict(num_beams=2, min_new_tokens=NEW, **GREEDY)
    expected = model.generate(ids, attention_mask=mask, **beams)
    forget_fast_loop(model)
    logger = logging.getLogger("transformers")
    logger.addHandler(caplog.handler)
    try:
        out = model.generate(ids, attention_mask=mask, fast_decode=True, **beams)
    finally:
        logger.removeHandler(caplog.handler)
    assert torch.equal(out, expected)
    assert not used_fast_loop(model)
    assert "fast_decode does not support beam search" in caplog.text


def test_too_long_for_the_positions_is_a_clear_error(model):
    ids, mask = padded_batch()
    room = model.config.max_position_embeddings - ids.shape[1]
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.generate(ids, attention_mask=mask, max_new_tokens=room + 5, fast_decode=True, do_sample=False)
