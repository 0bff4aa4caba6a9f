"""The project's `evaluate` metric modules and `evaluate_model` (perplexity, bits per byte vs the floor, accuracy,
held-out arithmetic exact match)."""

import math

import pytest
import torch
from conftest import tiny_model

from hf_tinyllm.data.tinyworld import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.evaluation import arithmetic_exact_match, evaluate_model, score_documents
from hf_tinyllm.metrics import load_metric
from hf_tinyllm.presets import build_model
from hf_tinyllm.tokenization import model_overrides_for, train_tokenizer


def test_perplexity_is_token_weighted_not_a_mean_of_means():
    result = load_metric("perplexity").compute(nll_sum=[2.0, 30.0], num_tokens=[1, 10])
    assert result["loss"] == pytest.approx(32 / 11)
    assert result["perplexity"] == pytest.approx(math.exp(32 / 11))
    assert result["loss"] != pytest.approx((2.0 / 1 + 30.0 / 10) / 2)


def test_bits_per_byte_accuracy_and_exact_match():
    bpb = load_metric("bits_per_byte").compute(nll_sum=[math.log(2) * 6, math.log(2) * 2], num_bytes=[3, 1])
    assert bpb["bits_per_byte"] == pytest.approx(2.0)
    accuracy = load_metric("next_token_accuracy")
    accuracy.add_batch(num_correct=[3], num_tokens=[4])
    accuracy.add_batch(num_correct=[0, 1], num_tokens=[1, 3])
    assert accuracy.compute()["accuracy"] == pytest.approx(0.5)
    em = load_metric("exact_match").compute(
        predictions=[" seven", "twenty  one", "Six"], references=["seven", "twenty one", "six"]
    )
    assert em["exact_match"] == pytest.approx(2 / 3)


def test_metric_errors():
    with pytest.raises(ValueError, match="No predicted tokens"):
        load_metric("perplexity").compute(nll_sum=[0.0], num_tokens=[0])
    with pytest.raises(ValueError, match="Unknown metric 'rouge'"):
        load_metric("rouge")


@pytest.fixture(scope="module")
def tinyworld():
    return tinyworld_dataset(TinyWorldConfig(num_train_documents=400, num_validation_documents=40))


@pytest.fixture(scope="module")
def tokenizer(tinyworld):
    return train_tokenizer(tinyworld["train"], vocab_size=400)


def test_document_scores_match_the_models_own_loss(tokenizer):
    torch.manual_seed(0)
    model = build_model("debug", **model_overrides_for(tokenizer)).eval()
    text = "the king ruled the kingdom wisely."
    (score,) = score_documents(model, tokenizer, [text])
    ids = torch.tensor([[*tokenizer(text).input_ids, tokenizer.eos_token_id]])
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    assert score["num_tokens"] == ids.shape[1] - 1
    assert score["nll_sum"] == pytest.approx(loss * score["num_tokens"], rel=1e-5)
    assert score["num_bytes"] == len(text) + 1


def test_long_documents_are_scored_in_windows_predicting_each_token_once(tokenizer):
    model = build_model("debug", **model_overrides_for(tokenizer), max_position_embeddings=8).eval()
    text = "two plus three equals five. " * 6
    (score,) = score_documents(model, tokenizer, [text.strip()])
    assert score["num_tokens"] == len(tokenizer(text.strip()).input_ids)  # all tokens after bos, eos included
    assert math.isfinite(score["nll_sum"]) and score["nll_sum"] > 0


def test_batched_scoring_equals_one_document_at_a_time(tokenizer, tinyworld):
    """20 documents of different lengths, padded into batches of 16, score as each document alone."""
    torch.manual_seed(0)
    model = build_model("debug", **model_overrides_for(tokenizer)).eval()
    texts = sorted(tinyworld["validation"]["text"], key=len)[::2][:20]
    assert len({len(tokenizer(t).input_ids) for t in texts}) > 5
    batched = score_documents(model, tokenizer, texts, batch_size=16)
    alone = [score_documents(model, tokenizer, [text], batch_size=1)[0] for text in texts]
    for b, a in zip(batched, alone, strict=True):
        keys = ("num_tokens", "num_correct", "num_bytes")
        assert [b[k] for k in keys] == [a[k] for k in keys]
        assert b["nll_sum"] == pytest.approx(a["nll_sum"], rel=1e-5)


def test_windowed_scoring_equals_a_hand_written_cross_entropy_loop(tokenizer):
    """A document 3 windows long: each window overlaps the last by one token, so every token after bos is predicted
    once, from at most the window's context, as this plain loop computes it."""
    torch.manual_seed(0)
    model = build_model("debug", **model_overrides_for(tokenizer), max_position_embeddings=8).eval()
    text = "two plus three equals five. one plus one equals two. the king felt sad."
    (score,) = score_documents(model, tokenizer, [text])
    ids = [*tokenizer(text).input_ids, tokenizer.eos_token_id]
    assert len(ids) > 16
    nll, predicted, correct, start = 0.0, 0, 0, 0
    with torch.no_grad():
        while start + 1 < len(ids):
            window = torch.tensor([ids[start : start + 8]])
            logits = model(window).logits[0, :-1]
            targets = window[0, 1:]
            nll += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            predicted += len(targets)
            correct += int((logits.argmax(-1) == targets).sum())
            start += 7
    assert (score["num_tokens"], score["num_correct"]) == (predicted, correct) == (len(ids) - 1, correct)
    assert score["nll_sum"] == pytest.approx(nll, rel=1e-5)


def test_evaluate_model_reports_the_gap_to_the_exact_source(tokenizer, tinyworld):
    model = build_model("debug", **model_overrides_for(tokenizer))
    validation = tinyworld["validation"]
    result = evaluate_model(
        model, tokenizer, validation, heldout_arithmetic=tinyworld["heldout_arithmetic"], floor_bits_per_byte=0.25
    )
    rows = list(validation)
    assert result["num_documents"] == len(rows)
    assert result["num_bytes"] == sum(r["num_bytes"] for r in rows)
    assert result["source_bits_per_byte"] == pytest.approx(sum(r["nll_bits"] for r in rows) / result["num_bytes"])
    assert result["gap_bits_per_byte"] == pytest.approx(result["bits_per_byte"] - result["source_bits_per_byte"])
    assert result["gap_to_source"] == pytest.approx(result["bits_per_byte"] / result["source_bits_per_byte"] - 1)
    assert result["gap_bits_per_byte"] > 0  # an untrained model is far from the true distribution
    assert result["gap_to_floor"] == pytest.approx(result["bits_per_byte"] / 0.25 - 1)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    correct = tokens = 0
    with torch.no_grad():  # next-token accuracy by hand, one document at a time: argmax == the next token
        for row in rows:
            ids = torch.tensor([[*tokenizer(row["text"]).input_ids, tokenizer.eos_token_id]])
            assert ids.shape[1] <= model.config.max_position_embeddings  # one window per document
            correct += int((model(ids).logits[0, :-1].argmax(-1) == ids[0, 1:]).sum())
            tokens += ids.shape[1] - 1
    assert result["num_tokens"] == tokens and result["next_token_accuracy"] == pytest.approx(correct / tokens)
    # An untrained model answers no sum (the trained case is the next test); the answers are what it generated.
    assert result["arithmetic_exact_match"] == 0.0
    examples = result["arithmetic_examples"]
    assert examples[0]["prompt"].endswith("equals") and all(e["generated"] != e["answer"] for e in examples)


def test_exact_match_on_a_model_that_learned_its_sums(tokenizer):
    """A model overfitted on two sums answers them; a wrong reference scores zero (the pipeline is not vacuous)."""
    torch.manual_seed(0)
    model = tiny_model(**model_overrides_for(tokenizer), hidden_size=64, num_attention_heads=4).train()
    texts = ["two plus three equals five.", "seven minus four equals three."]
    batch = tokenizer([t for t in texts], padding=True, return_tensors="pt")
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    problems = [
        {"prompt": "two plus three equals", "answer": "five"},
        {"prompt": "seven minus four equals", "answer": "three"},
    ]
    assert arithmetic_exact_match(model.eval(), tokenizer, problems)["exact_match"] == 1.0
    wrong = [{"prompt": "two plus three equals", "answer": "six"}]
    assert arithmetic_exact_match(model, tokenizer, wrong)["exact_match"] == 0.0


def test_evaluate_model_errors(tokenizer):
    model = build_model("debug", **model_overrides_for(tokenizer))
    with pytest.raises(ValueError, match="empty"):
        evaluate_model(model, tokenizer, [])
    with pytest.raises(ValueError, match="no 'text' field"):
        evaluate_model(model, tokenizer, [{"story": "x"}])
