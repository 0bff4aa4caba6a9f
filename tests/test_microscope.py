"""One optimizer step under a microscope (`insight.microscope`, `tinyllm explain microscope`): the step lowers the
batch's loss, moves exactly the rows `embedding_rows` (explain gradients' sparsity) finds, agrees with a step taken by
hand, and leaves the model as it found it."""

import copy
import json

import pytest
import torch
from conftest import cli_user_error, tiny_model

from hf_tinyllm.explain import load_model_and_tokenizer
from hf_tinyllm.explain import main as explain_main
from hf_tinyllm.insight.gradients import embedding_rows
from hf_tinyllm.insight.microscope import (
    arrow_scale,
    moved_rows,
    optimizer_step_microscope,
    pack_batch,
    plot_rows_moved,
    plot_step_distributions,
    plot_word_arrows,
    step_settings,
)
from hf_tinyllm.insight.model_parts import InsightError

BATCH = ["the king ate bread.", "two plus three equals five."]
HELDOUT = "the queen fed her dog."
WORD_BATCH = ["w5 w17 w33 w5", "w80 w12 w9 w17 w40"]  # for the word tokenizer (no bos; eos </s> = 2)


@pytest.fixture(scope="module")
def trained(trained_tiny_dir):
    return load_model_and_tokenizer(str(trained_tiny_dir))


@pytest.fixture(scope="module")
def fresh_step(trained):
    model, tokenizer = trained
    return optimizer_step_microscope(model, tokenizer, BATCH, HELDOUT, learning_rate=1e-3, weight_decay=0.0, seed=0)


def documents(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The texts packed by hand: `[bos] tokens [eos]` each, positions restarting at every text."""
    rows = [tokenizer(text)["input_ids"] + [tokenizer.eos_token_id] for text in texts]
    ids = torch.tensor([[i for row in rows for i in row]])
    return ids, torch.cat([torch.arange(len(row)) for row in rows]).unsqueeze(0)


def test_the_step_lowers_the_batch_loss_and_matches_a_step_taken_by_hand(trained, fresh_step):
    model, tokenizer = trained
    result = fresh_step
    assert result.batch_loss_after < result.batch_loss_before
    assert sum(s.loss_after for s in result.batch) < sum(s.loss_before for s in result.batch)

    ids, positions = documents(tokenizer, BATCH)
    assert torch.equal(pack_batch(model, tokenizer, BATCH)[0], ids) and result.num_tokens == ids.numel()
    replica = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(replica.parameters(), lr=1e-3, weight_decay=0.0)
    replica(input_ids=ids, labels=ids, position_ids=positions, use_cache=False).loss.backward()
    optimizer.step()
    with torch.no_grad():
        before = float(model(input_ids=ids, labels=ids, position_ids=positions, use_cache=False).loss)
        after = float(replica(input_ids=ids, labels=ids, position_ids=positions, use_cache=False).loss)
        heldout, _ = documents(tokenizer, [HELDOUT])
        heldout_before = float(model(input_ids=heldout, labels=heldout, use_cache=False).loss)
        heldout_after = replica(input_ids=heldout, labels=heldout, use_cache=False)
    assert result.batch_loss_before == pytest.approx(before, rel=1e-5)
    assert result.batch_loss_after == pytest.approx(after, rel=1e-5)
    assert result.heldout.loss_before == pytest.approx(heldout_before, rel=1e-5)
    assert result.heldout.loss_after == pytest.approx(float(heldout_after.loss), rel=1e-5)
    probs = heldout_after.logits[0, :-1].double().softmax(-1).gather(1, heldout[0, 1:, None]).squeeze(1)
    assert result.heldout.probs_after == pytest.approx(probs.tolist(), rel=1e-4, abs=1e-9)

    # The held-out top-k: at the first token of its last word ("dog"), before and after.
    focus = len(tokenizer("the queen fed her")["input_ids"])  # byte-level BPE: " dog" starts a new token
    assert result.focus_context == "the queen fed her"
    assert result.focus_id == int(heldout[0, focus]) in result.top_ids
    after_dist = heldout_after.logits[0, focus - 1].double().softmax(-1)
    after_top = dict(zip(result.top_ids, result.top_after, strict=True))
    for token_id in after_dist.topk(5).indices.tolist():
        assert after_top[token_id] == pytest.approx(float(after_dist[token_id]), rel=1e-4, abs=1e-9)


def test_with_no_weight_decay_the_moved_rows_are_exactly_what_embedding_sparsity_counts(trained, fresh_step):
    model, tokenizer = trained
    result = fresh_step
    ids, positions = pack_batch(model, tokenizer, BATCH)
    rows = embedding_rows(model, ids, learning_rate=1e-3, weight_decay=0.0, position_ids=positions)
    assert result.tied and rows.tied
    # Input rows: every id that predicts a next token; the tied head adds every other row (its softmax is dense).
    assert set(result.input_rows) == set(rows.input_gradient) == set(ids[0, :-1].tolist())
    assert moved_rows(result) == set(rows.changed) == set(rows.gradient) == set(range(result.vocab_size))
    assert result.rows_changed == len(rows.changed) and result.rows_with_gradient == len(rows.gradient)
    # A fresh AdamW's first step moves each weight by at most lr: a row by at most lr * sqrt(C).
    distances = [d for _, _, d in result.rows_moved]
    assert distances == sorted(distances, reverse=True)
    assert max(distances) <= result.sign_like_distance * (1 + 1e-6) and result.rows_sign_like >= len(result.input_rows)


def test_untied_rows_that_move_are_the_batch_input_tokens_and_run_settings_spare_the_embedding(word_tokenizer):
    model = tiny_model(tie_word_embeddings=False)
    ids, positions = pack_batch(model, word_tokenizer, WORD_BATCH)
    inputs = set(ids[0, :-1].tolist())  # the last eos predicts nothing
    result = optimizer_step_microscope(model, word_tokenizer, WORD_BATCH, "w7 w8 w9", weight_decay=0.0)
    rows = embedding_rows(model, ids, weight_decay=0.0, position_ids=positions)
    assert moved_rows(result) == set(rows.changed) == set(rows.gradient) == set(result.input_rows) == inputs
    assert result.word_map is None and "no word map" in result.map_note  # w5... are not map words

    # Weight decay on every parameter shrinks every row; training's groups (the run's settings) spare embeddings.
    decayed = optimizer_step_microscope(model, word_tokenizer, WORD_BATCH, "w7 w8 w9", weight_decay=0.1)
    assert moved_rows(decayed) == set(range(99))
    settings = step_settings(None, "fresh", weight_decay=0.1)
    settings.decay_matrices_only = True
    spared = optimizer_step_microscope(model, word_tokenizer, WORD_BATCH, "w7 w8 w9", settings=settings)
    assert moved_rows(spared) == inputs
    stages = dict(zip(spared.blame.stages, spared.update_norms, strict=True))
    assert stages["embeddings (input)"] > 0 and stages["head"] > 0

    # The caller's AdamW, with momentum from other batches, moves rows outside this batch too.
    trained = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=1e-2, weight_decay=0.0)
    other = torch.tensor([[50, 51, 52, 53, 54, 55]])
    trained(input_ids=other, labels=other, use_cache=False).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    carried = optimizer_step_microscope(trained, word_tokenizer, WORD_BATCH, "w7 w8 w9", optimizer=optimizer)
    assert carried.momentum and carried.settings.source == "optimizer" and carried.settings.learning_rate == 1e-2
    assert moved_rows(carried) > inputs and set(range(50, 55)) <= moved_rows(carried)  # 55 predicted nothing


def test_the_model_its_grads_and_its_mode_are_left_as_found(word_tokenizer):
    model = tiny_model().train()
    grads = {name: torch.randn_like(p) for name, p in list(model.named_parameters())[::2]}
    for name, param in model.named_parameters():
        param.grad = grads[name].clone() if name in grads else None
    state = {name: t.clone() for name, t in model.state_dict().items()}
    rng = torch.get_rng_state()

    optimizer_step_microscope(model, word_tokenizer, WORD_BATCH, "w7 w8 w9", learning_rate=1e-2, weight_decay=0.1)
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(state[name], t) for name, t in model.state_dict().items())
    for name, param in model.named_parameters():
        assert (param.grad is None) if name not in grads else torch.equal(param.grad, grads[name])


def test_run_settings_come_from_the_training_summary(tmp_path):
    (tmp_path / "training_summary.json").write_text(json.dumps({"hyperparameters": {
        "optimizer": "adamw", "learning_rate": 0.006, "weight_decay": 0.1, "max_grad_norm": 1.0}}))  # fmt: skip
    run = step_settings(tmp_path, "run")
    assert (run.source, run.learning_rate, run.weight_decay, run.betas, run.max_grad_norm) == \
        ("run", 0.006, 0.1, (0.9, 0.95), 1.0) and run.decay_matrices_only  # fmt: skip
    assert step_settings(tmp_path, "run", learning_rate=1e-4, weight_decay=0.0).learning_rate == 1e-4
    fresh = step_settings(tmp_path, "fresh")
    assert (fresh.source, fresh.learning_rate, fresh.weight_decay, fresh.betas) == ("fresh", 1e-3, 0.0, (0.9, 0.999))
    missing = step_settings(tmp_path / "elsewhere", "run")
    assert missing.source == "fresh" and "no training_summary.json" in missing.note
    with pytest.raises(InsightError, match="settings"):
        step_settings(tmp_path, "momentum")
    with pytest.raises(InsightError, match="learning_rate"):
        step_settings(tmp_path, "fresh", learning_rate=0.0)


def test_bad_batches_are_one_sentence_errors(word_tokenizer):
    model = tiny_model()
    with pytest.raises(InsightError, match="batch is empty"):
        optimizer_step_microscope(model, word_tokenizer, [], "w7 w8")
    with pytest.raises(InsightError, match="Batch text 2 is empty"):
        optimizer_step_microscope(model, word_tokenizer, ["w5 w6", "  "], "w7 w8")
    with pytest.raises(InsightError, match="held-out text is empty"):
        optimizer_step_microscope(model, word_tokenizer, ["w5 w6"], "")
    no_eos = copy.deepcopy(word_tokenizer)
    no_eos.eos_token = None  # no bos either: a one-word text is one token, nothing to predict
    with pytest.raises(InsightError, match="Batch text 1 'w5' is 1 token; it needs at least 2"):
        optimizer_step_microscope(model, no_eos, ["w5"], "w7 w8")


def test_pictures_are_drawn(fresh_step, tmp_path):
    result = fresh_step
    assert result.word_map is not None and len(result.map_after) == len(result.word_map.words)
    assert arrow_scale(result) >= 1 and 0 < result.map_plane_fraction <= 1
    for plot, name in ((plot_word_arrows, "arrows"), (plot_step_distributions, "dist"), (plot_rows_moved, "rows")):
        assert plot(result, tmp_path / f"{name}.png").stat().st_size > 1000


def test_microscope_topic(trained_tiny_dir, tmp_path, capsys):
    out = tmp_path / "microscope"
    explain_main(["microscope", str(trained_tiny_dir), "--output_dir", str(out), "--settings", "fresh"])
    report = capsys.readouterr().out
    assert "1. Compute the loss" in report and "Most blame:" in report and "sign-like" in report
    assert "rows changed by the step" in report and "held out: 'the king worked in the fields kindly.'" in report
    for name in ("step_distributions", "step_blame", "rows_moved", "word_map_arrows"):
        assert (out / f"{name}.png").stat().st_size > 1000

    explain_main(["microscope", str(trained_tiny_dir), "--output_dir", str(out), "--json", "--text", BATCH[0], "--text",
                  BATCH[1], "--heldout", HELDOUT, "--settings", "fresh", "--learning_rate", "1e-3"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    step = data["microscope"]
    assert data["batch_texts"] == BATCH and step["settings"]["source"] == "fresh"
    assert step["rows_changed"] == step["vocab_size"] == len(step["rows_moved"])
    assert step["batch_loss_after"] < step["batch_loss_before"] and sum(step["blame"]["shares"]) == pytest.approx(1)

    for extra, fragment in ((["--text", " "], "Batch text 1 is empty"), ([], "neither a model folder")):
        folder = str(trained_tiny_dir) if extra else str(tmp_path / "no_such_model")
        message = cli_user_error(["explain", "microscope", folder, "--output_dir", str(out), *extra], capsys)
        assert fragment in message
