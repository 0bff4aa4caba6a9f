"""Generation through GenerationMixin: caches, padding, pipeline, sampling."""

import torch
from conftest import padded_batch, tiny_model
from transformers import pipeline

NEW = 6
GREEDY = dict(max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False)  # min = max: no early stop at eos


def test_greedy_with_cache_equals_without_cache(arch):
    model = tiny_model(**arch)
    ids, mask = padded_batch()
    cached = model.generate(ids, attention_mask=mask, use_cache=True, **GREEDY)
    uncached = model.generate(ids, attention_mask=mask, use_cache=False, **GREEDY)
    assert cached.shape == (3, 9 + NEW)
    assert torch.equal(cached, uncached)


def test_left_padded_batch_equals_each_prompt_alone(arch):
    model = tiny_model(**arch)
    ids, mask = padded_batch()
    batched = model.generate(ids, attention_mask=mask, **GREEDY)
    for row in range(ids.shape[0]):
        prompt = ids[row][mask[row].bool()].unsqueeze(0)
        alone = model.generate(prompt, attention_mask=torch.ones_like(prompt), **GREEDY)
        assert torch.equal(batched[row, -NEW:], alone[0, -NEW:]), f"row {row}"


def test_static_cache_equals_dynamic_cache(arch):
    model = tiny_model(**arch)
    ids, mask = padded_batch()
    dynamic = model.generate(ids, attention_mask=mask, **GREEDY)
    static = model.generate(ids, attention_mask=mask, cache_implementation="static", **GREEDY)
    assert torch.equal(static, dynamic)


def test_sampling_is_reproducible_for_a_seed():
    model = tiny_model()
    ids, mask = padded_batch()
    sample = dict(max_new_tokens=8, do_sample=True, top_k=0, temperature=1.5)

    def draw(seed):
        torch.manual_seed(seed)
        return model.generate(ids, attention_mask=mask, **sample)

    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))


def test_text_generation_pipeline(word_tokenizer):
    model = tiny_model()
    generator = pipeline("text-generation", model=model, tokenizer=word_tokenizer)
    prompts = ["w5 w6 w7", "w9"]
    outputs = generator(prompts, max_new_tokens=4, min_new_tokens=4, do_sample=False, return_full_text=False)
    assert len(outputs) == 2
    for prompt, out in zip(prompts, outputs, strict=True):
        # The pipeline's continuation is exactly the model's greedy continuation of the prompt alone.
        ids = word_tokenizer(prompt, return_tensors="pt").input_ids
        new_ids = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)[0, ids.shape[1] :]
        assert len(new_ids) == 4
        assert out[0]["generated_text"] == word_tokenizer.decode(new_ids, skip_special_tokens=True)
    full = generator("w9", max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert full[0]["generated_text"] == "w9" + outputs[1][0]["generated_text"]


def test_static_cache_decoding_compiles_without_graph_breaks():
    model = tiny_model()
    ids, mask = padded_batch()
    expected = model.generate(ids, attention_mask=mask, cache_implementation="static", **GREEDY)
    model.forward = torch.compile(model.forward, backend="eager", fullgraph=True)
    compiled = model.generate(ids, attention_mask=mask, cache_implementation="static", **GREEDY)
    assert torch.equal(compiled, expected)
