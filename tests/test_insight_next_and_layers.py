"""Be the model (next-token distribution, sampling transform, guesses, surprise) and look inside it (logit lens,
attention maps): each number checked against a direct computation from the model's logits."""

import json
import math

import pytest
import torch
from conftest import ARCHITECTURES, cli_user_error, tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel
from transformers.generation import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from hf_tinyllm.convert import to_llama
from hf_tinyllm.explain import main
from hf_tinyllm.insight.layers import (
    attention_maps,
    lens_logits,
    logit_lens,
    plot_attention,
    plot_logit_lens,
    residual_streams,
)
from hf_tinyllm.insight.model_parts import InsightError, find_parts
from hf_tinyllm.insight.next_token import (
    greedy_continuation,
    next_token_distribution,
    plot_surprise,
    rank_guess,
    text_surprise,
)

PROMPT = "w5 w17 w33 w8"
VOCAB = 99


def last_probs(model, tokenizer, prompt: str) -> torch.Tensor:
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(ids).logits[0, -1].softmax(-1)


def full_distribution(top) -> torch.Tensor:
    """The (V,) distribution from a TopTokens listing every token of non-zero probability."""
    probs = torch.zeros(VOCAB)
    probs[top.token_ids] = torch.tensor(top.probabilities)
    return probs


def test_next_token_probabilities_are_the_softmax_of_the_logits_and_entropy_is_in_bits(word_tokenizer):
    model = tiny_model()
    result = next_token_distribution(model, word_tokenizer, PROMPT, k=7)
    probs = last_probs(model, word_tokenizer, PROMPT)
    top = probs.topk(7)
    assert result.model.token_ids == top.indices.tolist()
    assert result.model.tokens == [f"w{i}" for i in top.indices.tolist()]
    torch.testing.assert_close(torch.tensor(result.model.probabilities), top.values, rtol=0, atol=1e-6)
    entropy = -sum(p * math.log2(p) for p in probs.tolist())
    assert result.model.entropy_bits == pytest.approx(entropy, abs=1e-4)
    assert result.model.nonzero == VOCAB
    # No sampling settings: the sampled distribution is the model's.
    assert result.sampling.probabilities == pytest.approx(result.model.probabilities, abs=1e-6)


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.5),
        dict(top_k=5),
        dict(temperature=1.7, top_p=0.6),
        dict(temperature=0.8, top_k=20, top_p=0.9),
    ],
)
def test_sampling_distribution_is_what_transformers_processors_and_generate_give(word_tokenizer, settings):
    model = tiny_model()
    result = next_token_distribution(model, word_tokenizer, PROMPT, k=VOCAB, **settings)
    ids = word_tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits[:, -1]
    processors = LogitsProcessorList()
    if "temperature" in settings:
        processors.append(TemperatureLogitsWarper(settings["temperature"]))
    if "top_k" in settings:
        processors.append(TopKLogitsWarper(settings["top_k"]))
    if "top_p" in settings:
        processors.append(TopPLogitsWarper(settings["top_p"]))
    expected = processors(ids, logits.clone())[0].softmax(-1)
    torch.testing.assert_close(full_distribution(result.sampling), expected, rtol=0, atol=1e-6)
    assert result.sampling.nonzero == int((expected > 0).sum())
    assert (result.sampling.nonzero < VOCAB) == ("top_k" in settings or "top_p" in settings)
    # generate's own processed scores for one sampled token: the same distribution.
    out = model.generate(
        ids,
        max_new_tokens=1,
        output_scores=True,
        return_dict_in_generate=True,
        pad_token_id=0,
        **result.generate_kwargs,
    )
    torch.testing.assert_close(full_distribution(result.sampling), out.scores[0][0].softmax(-1), rtol=0, atol=1e-6)


def test_top_k_one_leaves_exactly_the_top_token(word_tokenizer):
    model = tiny_model()
    result = next_token_distribution(model, word_tokenizer, PROMPT, k=5, temperature=0.3, top_k=1)
    assert result.sampling.nonzero == 1
    assert result.sampling.token_ids == [int(last_probs(model, word_tokenizer, PROMPT).argmax())]
    assert result.sampling.probabilities == [1.0]
    assert result.sampling.entropy_bits == 0.0


def test_guess_rank_is_the_position_in_a_direct_argsort(word_tokenizer):
    model = tiny_model()
    probs = last_probs(model, word_tokenizer, PROMPT)
    order = probs.argsort(descending=True).tolist()
    for word in ("w4", "w50", "w98", f"w{order[0]}"):
        guess = rank_guess(model, word_tokenizer, PROMPT, word)
        token = int(word[1:])
        assert guess.rank == order.index(token) + 1
        assert guess.probability == pytest.approx(float(probs[token]), abs=1e-7)
        assert guess.word_probability == pytest.approx(guess.probability, abs=1e-7)  # one token
        assert (guess.top_token_id, guess.top_token) == (order[0], f"w{order[0]}")
    assert rank_guess(model, word_tokenizer, PROMPT, f"w{order[0]}").rank == 1


def test_word_probability_of_a_multi_token_word_is_the_chain_rule_product(trained_tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    prompt, word = "the queen walked to the", "xylophone"
    guess = rank_guess(model, tokenizer, prompt, word)
    word_ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
    assert guess.token_ids == word_ids and len(word_ids) > 2
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"][0].tolist()
    product = 1.0
    for token in word_ids:  # one forward pass per token, without a cache: p(t_i | prompt, t_<i)
        with torch.no_grad():
            product *= float(model(torch.tensor([ids])).logits[0, -1].softmax(-1)[token])
        ids.append(token)
    assert guess.word_probability == pytest.approx(product, rel=1e-4)
    assert guess.word_probability < guess.probability


def test_surprise_bits_sum_to_minus_log2_of_the_sequence_probability(trained_tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    text = "the king walked to the market."
    result = text_surprise(model, tokenizer, text)
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tokenizer.bos_token_id and result.context_token == tokenizer.bos_token
    assert result.token_ids == ids[0, 1:].tolist() and len(result.bits) == ids.shape[1] - 1
    with torch.no_grad():
        mean_nats = float(model(ids, labels=ids).loss)  # mean -ln p over the T - 1 predicted tokens
    total_bits = mean_nats * (ids.shape[1] - 1) / math.log(2)
    assert result.total_bits == pytest.approx(total_bits, rel=1e-5)
    assert sum(result.bits) == pytest.approx(total_bits, rel=1e-5)
    assert result.mean_bits == pytest.approx(mean_nats / math.log(2), rel=1e-5)
    assert min(result.bits) >= 0


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_logit_lens_last_row_is_the_model_output_and_first_row_the_embeddings(word_tokenizer, name):
    model = tiny_model(num_hidden_layers=3, **ARCHITECTURES[name])
    ids = word_tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    rows = lens_logits(model, ids)
    parts = find_parts(model)
    with torch.no_grad():
        logits = model(ids).logits[0]
        embeddings = parts.embed_tokens(ids)
        if model.model.embed_positions is not None:  # GPT-2-style learned positions are part of the input stream
            embeddings = embeddings + model.model.embed_positions(torch.arange(ids.shape[1]))[None]
        first = parts.lm_head(parts.final_norm(embeddings))[0]
    assert rows.shape == (4, ids.shape[1], VOCAB)
    torch.testing.assert_close(rows[-1], logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(rows[0], first, rtol=0, atol=1e-5)
    assert not torch.allclose(rows[1], rows[2], atol=1e-3)  # each layer's row is its own stream

    result = logit_lens(model, word_tokenizer, PROMPT, k=3)
    assert result.layer_names == ["embeddings", "layer 1", "layer 2", "layer 3"]
    probs = logits.softmax(-1)
    torch.testing.assert_close(torch.tensor(result.top_probabilities[-1]), probs.topk(3).values, rtol=0, atol=1e-6)
    assert result.final_token_id == int(probs[-1].argmax())
    assert result.final_token_probabilities[-1] == pytest.approx(float(probs[-1].max()), abs=1e-6)
    assert result.kl_bits[-1] == pytest.approx([0.0] * ids.shape[1], abs=1e-5)
    p_final, p_first = probs, rows[0].softmax(-1)
    kl_first = (p_final * (p_final.log() - p_first.log())).sum(-1) / math.log(2)
    assert result.kl_bits[0] == pytest.approx(kl_first.tolist(), rel=1e-3, abs=1e-5)


def test_logit_lens_works_on_transformers_llama_and_gpt2():
    ids = torch.tensor([[1, 5, 17, 33, 8]])
    llama = to_llama(tiny_model())
    torch.manual_seed(0)
    gpt2 = GPT2LMHeadModel(
        GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=1, eos_token_id=2)
    ).eval()
    for model in (llama, gpt2):
        with torch.no_grad():
            logits = model(ids).logits[0]
        rows = lens_logits(model, ids)
        assert rows.shape == (3, 5, VOCAB)
        torch.testing.assert_close(rows[-1], logits, rtol=0, atol=1e-5)
        assert len(residual_streams(model, ids)) == 3


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_insight_leaves_train_mode_attention_implementation_and_weights_as_found(word_tokenizer, implementation):
    model = tiny_model(**ARCHITECTURES["gpt2"]).train()
    model.set_attn_implementation(implementation)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    calls = [
        lambda: next_token_distribution(model, word_tokenizer, PROMPT, temperature=0.5, top_k=3),
        lambda: rank_guess(model, word_tokenizer, PROMPT, "w9"),
        lambda: text_surprise(model, word_tokenizer, PROMPT),
        lambda: greedy_continuation(model, word_tokenizer, PROMPT, max_new_tokens=3),
        lambda: logit_lens(model, word_tokenizer, PROMPT),
        lambda: attention_maps(model, word_tokenizer, PROMPT),
    ]
    for call in calls:
        call()
        assert model.training and all(m.training for m in model.modules())
        assert model.config._attn_implementation == implementation
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_attention_rows_sum_to_one_and_are_causal(word_tokenizer):
    model = tiny_model(num_hidden_layers=3)
    result = attention_maps(model, word_tokenizer, PROMPT)
    weights = torch.tensor(result.weights)
    T = len(result.tokens)
    assert weights.shape == (3, 4, T, T) and result.tokens == PROMPT.split()
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, T), rtol=0, atol=1e-5)
    assert torch.all(weights.triu(diagonal=1) == 0)
    assert torch.all(weights[..., 0, 0] == 1)  # the first token can only look at itself
    # The weights are the ones that make the model's output: eager logits with them equal sdpa logits.
    eager = tiny_model(num_hidden_layers=3)
    eager.set_attn_implementation("eager")
    ids = word_tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        direct = eager(ids, output_attentions=True).attentions
    torch.testing.assert_close(weights, torch.cat(direct), rtol=0, atol=1e-6)


def test_bad_inputs_are_one_line_insight_errors(word_tokenizer):
    model = tiny_model()
    cases = [
        lambda: next_token_distribution(model, word_tokenizer, "  "),
        lambda: next_token_distribution(model, word_tokenizer, PROMPT, temperature=0),
        lambda: next_token_distribution(model, word_tokenizer, PROMPT, top_p=1.5),
        lambda: rank_guess(model, word_tokenizer, PROMPT, "zebra"),
        lambda: rank_guess(model, word_tokenizer, PROMPT, "w5 w6"),
        lambda: text_surprise(model, word_tokenizer, "w5"),
        lambda: logit_lens(model, word_tokenizer, ""),
        lambda: attention_maps(model, word_tokenizer, ""),
    ]
    for case in cases:
        with pytest.raises(InsightError) as err:
            case()
        assert "\n" not in str(err.value)


def test_plots_are_written(word_tokenizer, tmp_path):
    model = tiny_model()
    long_text = " ".join(f"w{i}" for i in range(4, 60))  # wraps over several lines of the strip
    paths = [
        plot_surprise(text_surprise(model, word_tokenizer, long_text), tmp_path / "surprise.png"),
        plot_logit_lens(logit_lens(model, word_tokenizer, PROMPT), tmp_path / "lens.png"),
        plot_attention(attention_maps(model, word_tokenizer, PROMPT), tmp_path / "attention.png"),
        plot_attention(attention_maps(model, word_tokenizer, PROMPT), tmp_path / "attention1.png", layers=[1]),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 2_000 < path.stat().st_size < 150_000


def test_cli_next_and_layers_report_and_json(trained_tiny_dir, tmp_path, capsys):
    out_dir = tmp_path / "explain"
    model_dir = str(trained_tiny_dir)
    main(["next", model_dir, "--output_dir", str(out_dir), "--guess", "queen", "--top_k", "3"])
    report = capsys.readouterr().out
    vocab_size = AutoModelForCausalLM.from_pretrained(trained_tiny_dir).config.vocab_size
    assert "entropy" in report and "Your guess 'queen'" in report and f"3 of {vocab_size} tokens" in report
    assert str(out_dir / "surprise.png") in report and (out_dir / "surprise.png").stat().st_size > 0

    main(["next", model_dir, "--output_dir", str(out_dir), "--k", "4", "--text", "the queen walked.", "--json"])
    data = json.loads(capsys.readouterr().out)
    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    probs = last_probs(model, tokenizer, "two plus three equals")
    assert data["next_token"]["model"]["probabilities"] == pytest.approx(probs.topk(4).values.tolist(), abs=1e-6)
    assert data["guess"] is None and data["surprise"]["text"] == "the queen walked."

    main(["layers", model_dir, "--output_dir", str(out_dir), "--position", "2"])
    report = capsys.readouterr().out
    assert "Logit lens after position 2" in report and "layer 2" in report and "embeddings" in report
    assert (out_dir / "logit_lens.png").stat().st_size > 0 and (out_dir / "attention.png").stat().st_size > 0
    main(["layers", model_dir, "--output_dir", str(out_dir), "--json"])
    data = json.loads(capsys.readouterr().out)
    lens = logit_lens(model, tokenizer, "two plus three equals")
    assert data["logit_lens"]["final_token_probabilities"] == pytest.approx(lens.final_token_probabilities, abs=1e-6)
    assert len(data["attention"]["weights"]) == model.config.num_hidden_layers


def test_cli_bad_input_is_one_error_line(trained_tiny_dir, word_tokenizer, tmp_path, capsys):
    word_dir = tmp_path / "word_model"
    tiny_model().save_pretrained(word_dir)
    word_tokenizer.save_pretrained(word_dir)
    out = str(tmp_path / "out")
    bad = [
        ["next", str(trained_tiny_dir), "--prompt", "", "--output_dir", out],
        ["layers", str(trained_tiny_dir), "--prompt", "", "--output_dir", out],
        ["layers", str(trained_tiny_dir), "--position", "99", "--output_dir", out],
        ["next", str(word_dir), "--prompt", "w5 w6", "--guess", "zebra", "--text", "w5 w6", "--output_dir", out],
    ]
    for argv in bad:
        message = cli_user_error(["explain", *argv], capsys)
    assert "zebra" in message
