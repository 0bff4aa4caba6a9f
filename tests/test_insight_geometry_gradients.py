"""Embedding geometry (neighbours, 3CosAdd analogies, parallelism, word map) on hand-built embeddings, the gradient
blame and embedding-row sparsity against direct backward passes and real AdamW steps, and their explain topics."""

import copy
import json
import re

import pytest
import torch
from conftest import cli_user_error, tiny_model
from torch import nn

from hf_tinyllm.explain import main as explain_main
from hf_tinyllm.insight.geometry import (
    GENDER_PAIRS,
    analogy,
    candidate_words,
    nearest_neighbours,
    parallelism_score,
    plot_word_map,
    word_map,
    word_vector,
)
from hf_tinyllm.insight.gradients import embedding_sparsity, gradient_blame, plot_blame
from hf_tinyllm.insight.model_parts import InsightError

WORDS = list(range(4, 99))  # ids of the word tokenizer's words w4..w98, all candidates


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)


def hand_built(seed: int = 0, **overrides) -> nn.Module:
    """A tiny untied model whose input embedding is random (seeded) except rows the tests then set by hand."""
    model = tiny_model(tie_word_embeddings=False, **overrides)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(torch.randn(99, 32, generator=generator))
    return model


def set_rows(model: nn.Module, rows: dict[int, torch.Tensor]) -> None:
    with torch.no_grad():
        for row, vector in rows.items():
            model.model.embed_tokens.weight[row] = vector


def direct_cosines(target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    weight = weight.double()
    return weight @ target.double() / (weight.norm(dim=1) * target.double().norm())


# -- geometry --------------------------------------------------------------------------------------------------------


def test_candidates_are_the_whole_word_tokens(word_tokenizer, trained_tiny_dir):
    from transformers import AutoTokenizer

    words, ids = candidate_words(tiny_model(), word_tokenizer)
    assert ids.tolist() == WORDS and words == [f"w{i}" for i in WORDS]  # special tokens are not words

    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    model = tiny_model(vocab_size=len(tokenizer))
    words, ids = candidate_words(model, tokenizer)
    assert "queen" in words and "king" in words
    for word, token_id in zip(words, ids.tolist(), strict=True):
        assert tokenizer.decode([token_id]) == " " + word and word.isalpha()
        assert tokenizer(" " + word, add_special_tokens=False)["input_ids"] == [token_id]
    fragments = [i for i in range(len(tokenizer)) if re.fullmatch(r"[a-z]+", tokenizer.decode([i]))]
    assert fragments and not set(fragments) & set(ids.tolist())  # no-space word pieces are not candidates


def test_word_vector_is_the_mean_of_its_tokens(word_tokenizer):
    model = hand_built()
    assert torch.allclose(word_vector(model, word_tokenizer, "w7"), model.model.embed_tokens.weight[7].double())
    with pytest.raises(InsightError, match="not in the tokenizer's vocabulary"):
        word_vector(model, word_tokenizer, "queen")


def test_neighbours_match_a_direct_cosine_argsort(word_tokenizer):
    model = hand_built()
    before = snapshot(model)
    result = nearest_neighbours(model, word_tokenizer, "w10", k=7)
    weight = model.model.embed_tokens.weight.detach()
    cosines = direct_cosines(weight[10], weight[WORDS])
    order = [WORDS[i] for i in torch.argsort(cosines, descending=True).tolist() if WORDS[i] != 10][:7]
    assert [word for word, _ in result.neighbours] == [f"w{i}" for i in order]
    assert [c for _, c in result.neighbours] == pytest.approx([float(cosines[i - 4]) for i in order], abs=1e-12)
    assert result.num_tokens == 1 and result.word == "w10"
    assert_unchanged(model, before)


def test_an_exact_analogy_ranks_first_with_cosine_one(word_tokenizer):
    model = hand_built()
    weight = model.model.embed_tokens.weight.detach()
    set_rows(model, {20: weight[4] - weight[5] + weight[6]})  # w20 = w4 - w5 + w6
    before = snapshot(model)
    result = analogy(model, word_tokenizer, "w4", "w5", "w6", k=4, expected="w20")
    assert result.top[0][0] == "w20" and result.top[0][1] == pytest.approx(1.0, abs=1e-12)
    assert result.expected_rank == 1 and result.expected_cosine == pytest.approx(1.0, abs=1e-12)
    target = weight[4] - weight[5] + weight[6]
    cosines = direct_cosines(target, weight[WORDS])
    order = [WORDS[i] for i in torch.argsort(cosines, descending=True).tolist() if WORDS[i] not in (4, 5, 6)]
    assert [w for w, _ in result.top] == [f"w{i}" for i in order[:4]]  # the inputs are excluded

    other = analogy(model, word_tokenizer, "w4", "w5", "w6", expected=f"w{order[2]}")
    assert other.expected_rank == 3  # 1-based among the candidates left after excluding a, b, c
    assert_unchanged(model, before)


def test_parallel_offsets_score_one_and_others_match_a_direct_computation(word_tokenizer):
    model = hand_built()
    weight = model.model.embed_tokens.weight.detach().clone().double()
    direction = torch.randn(32, generator=torch.Generator().manual_seed(1))
    set_rows(model, {5: weight[4] + direction, 7: weight[6] + 2 * direction, 9: weight[8] + 0.5 * direction})
    pairs = [("w4", "w5"), ("w6", "w7"), ("w8", "w9"), ("queen", "w10")]
    result = parallelism_score(model, word_tokenizer, pairs=pairs, num_random=50)
    assert result.score == pytest.approx(1.0, abs=1e-12)
    assert result.num_pairs == 3 and result.pairs_skipped == [("queen", "w10")]
    assert -1 <= result.baseline <= 1 and result.baseline_std > 0

    pairs = [("w11", "w12"), ("w13", "w14"), ("w15", "w16"), ("w17", "w18")]
    result = parallelism_score(model, word_tokenizer, pairs=pairs)
    unit = nn.functional.normalize(torch.stack([weight[b] - weight[a] for a, b in ((11, 12), (13, 14), (15, 16),
                                                                                  (17, 18))]), dim=1)  # fmt: skip
    direct = [float(unit[i] @ unit[j]) for i in range(4) for j in range(i + 1, 4)]
    assert result.score == pytest.approx(sum(direct) / len(direct), abs=1e-12)
    again = parallelism_score(model, word_tokenizer, pairs=pairs)
    assert again.baseline == result.baseline  # seeded
    assert parallelism_score(model, word_tokenizer, pairs=pairs, seed=1).baseline != result.baseline
    with pytest.raises(InsightError, match="at least two"):
        parallelism_score(model, word_tokenizer, pairs=[("w4", "w5"), ("queen", "king")])


def test_word_map_of_words_in_a_plane_keeps_their_distances(word_tokenizer, tmp_path):
    model = hand_built()
    generator = torch.Generator().manual_seed(2)
    basis, _ = torch.linalg.qr(torch.randn(32, 2, generator=generator))  # (C, 2) orthonormal
    points = torch.randn(8, 2, generator=generator) * torch.tensor([3.0, 1.0])
    set_rows(model, {4 + i: points[i] @ basis.T + 0.5 for i in range(8)})
    groups = {"first": ["w4", "w5", "w6", "w7"], "second": ["w8", "w9", "w10", "w11", "w4", "queen"]}
    before = snapshot(model)
    result = word_map(model, word_tokenizer, groups=groups, pairs=[("w4", "w8"), ("w5", "queen")])
    assert result.words == [f"w{i}" for i in range(4, 12)] and result.groups == ["first"] * 4 + ["second"] * 4
    assert result.missing == ["queen"] and result.pairs == [("w4", "w8")]
    coords = torch.tensor(result.coords, dtype=torch.float64)
    assert torch.allclose(torch.cdist(coords, coords), torch.cdist(points.double(), points.double()), atol=1e-5)
    centred = points.double() - points.double().mean(0)
    variances = torch.linalg.eigvalsh(centred.T @ centred).flip(0)
    assert result.explained_variance == pytest.approx((variances / variances.sum()).tolist(), abs=1e-6)
    assert_unchanged(model, before)
    assert plot_word_map(result, tmp_path / "map.png").stat().st_size > 1000


def test_default_gender_pairs_occur_in_tinyworld():
    from hf_tinyllm.data.tinyworld import TinyWorld, TinyWorldConfig

    text = " ".join(d.text for d in TinyWorld(TinyWorldConfig(num_train_documents=400)).documents("train"))
    words = set(re.findall(r"[a-z]+", text))
    assert ("king", "queen") in GENDER_PAIRS and ("he", "she") in GENDER_PAIRS and ("his", "her") in GENDER_PAIRS
    assert all(male in words and female in words for male, female in GENDER_PAIRS)


# -- gradients -------------------------------------------------------------------------------------------------------


def stage_of(name: str) -> str:
    """The blame stage of a TinyLLM parameter, from its name alone (the test's own grouping)."""
    if name.startswith(("model.embed_tokens", "model.embed_positions")):
        return "embeddings (input)"
    if name.startswith("model.norm"):
        return "final norm"
    if name.startswith("lm_head"):
        return "head"
    layer, rest = re.fullmatch(r"model\.layers\.(\d+)\.(.*)", name).groups()
    half = "MLP" if rest.startswith(("mlp.", "post_attention_layernorm.")) else "attention"
    return f"layer {layer} {half}"


def direct_stage_norms(model: nn.Module, ids: torch.Tensor) -> tuple[dict[str, float], float]:
    """Squared gradient norm of each stage from an ordinary backward on an UNTIED copy (a tied head gets its own
    Parameter with the same values, so the lookup's and the head's gradients land in different .grad)."""
    replica = copy.deepcopy(model)
    if replica.lm_head.weight is replica.model.embed_tokens.weight:
        replica.lm_head.weight = nn.Parameter(replica.model.embed_tokens.weight.detach().clone())
    replica.zero_grad(set_to_none=True)
    loss = replica(input_ids=ids, labels=ids, use_cache=False).loss
    loss.backward()
    squares: dict[str, float] = {}
    for name, param in replica.named_parameters():
        if param.grad is not None:
            squares[stage_of(name)] = squares.get(stage_of(name), 0.0) + float(param.grad.double().pow(2).sum())
    return squares, float(loss.detach())


def test_blame_matches_a_direct_backward_per_stage(arch, word_tokenizer):
    model = tiny_model(**arch)
    text = "w5 w17 w33 w5 w80 w12 w9"
    ids = word_tokenizer(text, return_tensors="pt")["input_ids"]
    result = gradient_blame(model, word_tokenizer, text)
    squares, loss = direct_stage_norms(model, ids)
    assert result.loss == pytest.approx(loss, rel=1e-5)
    assert result.stages == ["embeddings (input)", "layer 0 attention", "layer 0 MLP", "layer 1 attention",
                             "layer 1 MLP", "final norm", "head"]  # fmt: skip
    assert sum(result.shares) == pytest.approx(1.0, abs=1e-12)
    expected = [squares.get(stage, 0.0) for stage in result.stages]
    assert [n**2 for n in result.norms] == pytest.approx(expected, rel=1e-4)
    assert result.shares == pytest.approx([s / sum(expected) for s in expected], rel=1e-4)
    assert result.tied == (arch.get("tie_word_embeddings", True))


def test_tied_blame_splits_the_matrix_into_its_lookup_and_head_parts(word_tokenizer):
    model = tiny_model()  # tied
    text = "w5 w17 w33 w5 w80"
    ids = word_tokenizer(text, return_tensors="pt")["input_ids"]
    replica = copy.deepcopy(model)
    replica(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    total = replica.model.embed_tokens.weight.grad  # lookup + head on the shared matrix

    squares, _ = direct_stage_norms(model, ids)
    result = gradient_blame(model, word_tokenizer, text)
    norms = dict(zip(result.stages, result.norms, strict=True))
    assert norms["embeddings (input)"] ** 2 == pytest.approx(squares["embeddings (input)"], rel=1e-5)
    assert norms["head"] ** 2 == pytest.approx(squares["head"], rel=1e-5)
    # Neither part alone is the shared matrix's gradient; the untied copy's two parts add up to it.
    assert norms["head"] ** 2 != pytest.approx(float(total.double().pow(2).sum()), rel=1e-3)


def test_blame_leaves_grads_weights_and_mode_as_found_and_frozen_stages_get_zero(word_tokenizer):
    model = tiny_model(tie_word_embeddings=False).train()
    for param in model.model.layers[1].mlp.parameters():
        param.requires_grad_(False)
    model.model.layers[1].post_attention_layernorm.weight.requires_grad_(False)
    caller_grads = {name: torch.randn_like(p) for name, p in list(model.named_parameters())[::3]}
    for name, param in model.named_parameters():
        param.grad = caller_grads[name].clone() if name in caller_grads else None
    before = snapshot(model)

    result = gradient_blame(model, word_tokenizer, "w5 w17 w33 w5 w80")
    shares = dict(zip(result.stages, result.shares, strict=True))
    assert shares["layer 1 MLP"] == 0.0 and shares["layer 0 MLP"] > 0
    assert sum(result.shares) == pytest.approx(1.0, abs=1e-12)
    assert model.training
    assert_unchanged(model, before)
    for name, param in model.named_parameters():
        assert (param.grad is None) if name not in caller_grads else torch.equal(param.grad, caller_grads[name])

    model.model.embed_tokens.weight.requires_grad_(False)
    frozen = gradient_blame(model, word_tokenizer, "w5 w17 w33 w5 w80")
    assert frozen.shares[frozen.stages.index("embeddings (input)")] == 0.0
    with pytest.raises(InsightError, match="empty"):
        gradient_blame(model, word_tokenizer, "  ")


def test_blame_chart_is_written(word_tokenizer, tmp_path):
    result = gradient_blame(tiny_model(), word_tokenizer, "w5 w17 w33")
    assert plot_blame(result, tmp_path / "blame.png").stat().st_size > 1000


BATCH = torch.tensor([[1, 7, 9, 7, 30, 9], [1, 44, 30, 44, 52, 30]])  # every last token also occurs earlier


def direct_adamw_changed_rows(model: nn.Module, ids: torch.Tensor, optimizer=None, **hyper) -> int:
    """Rows of the embedding one real AdamW step changes on a copy (the caller's optimizer deep-copied WITH the
    model, so the copy's state points at the copy's parameters)."""
    if optimizer is None:
        replica = copy.deepcopy(model)
        replica_optimizer = torch.optim.AdamW(replica.parameters(), **hyper)
    else:
        replica, replica_optimizer = copy.deepcopy((model, optimizer))
    before = replica.model.embed_tokens.weight.detach().clone()
    replica.zero_grad(set_to_none=True)
    replica.eval()(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    replica_optimizer.step()
    return int((replica.model.embed_tokens.weight.detach() != before).any(dim=1).sum())


def test_untied_rows_with_gradient_are_exactly_the_batch_ids():
    model = tiny_model(tie_word_embeddings=False)
    before = snapshot(model)
    result = embedding_sparsity(model, BATCH)
    distinct = BATCH.unique().numel()
    assert result.distinct_tokens == distinct == 6 and not result.tied
    assert result.rows_with_input_gradient == result.rows_with_gradient == distinct
    assert (
        result.rows_changed_by_adamw == direct_adamw_changed_rows(model, BATCH, lr=1e-3, weight_decay=0.0) == distinct
    )
    assert result.vocab_size == 99 and "distinct tokens" in result.note
    assert_unchanged(model, before)

    # A token only in a row's last position predicts nothing: the direct backward gives its row no gradient either.
    last_only = torch.tensor([[1, 7, 9, 7, 30, 61]])
    result = embedding_sparsity(model, last_only)
    replica = copy.deepcopy(model)
    replica(input_ids=last_only, labels=last_only, use_cache=False).loss.backward()
    direct_rows = set(torch.nonzero(replica.model.embed_tokens.weight.grad.abs().sum(1)).flatten().tolist())
    assert direct_rows == {1, 7, 9, 30}
    assert result.rows_with_input_gradient == result.rows_with_gradient == len(direct_rows) == 4
    assert result.distinct_tokens == 5


def test_tied_head_sends_gradient_to_every_row_and_weight_decay_moves_them_all():
    model = tiny_model()
    result = embedding_sparsity(model, BATCH, weight_decay=0.1)
    assert result.tied and result.rows_with_input_gradient == 6 and result.rows_with_gradient == 99
    assert result.rows_changed_by_adamw == direct_adamw_changed_rows(model, BATCH, lr=1e-3, weight_decay=0.1) == 99

    untied = tiny_model(tie_word_embeddings=False)
    decayed = embedding_sparsity(untied, BATCH, weight_decay=0.1)
    assert decayed.rows_with_gradient == 6 and decayed.rows_changed_by_adamw == 99  # decay shrinks every row
    assert "weight decay" in decayed.note


def test_callers_adamw_momentum_moves_rows_outside_the_batch():
    model = tiny_model(tie_word_embeddings=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):  # the caller's training on other batches
        other = torch.randint(3, 99, (2, 8), generator=generator)
        model(input_ids=other, labels=other, use_cache=False).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    before, state_before = snapshot(model), copy.deepcopy(optimizer.state_dict())

    result = embedding_sparsity(model, BATCH, optimizer=optimizer)
    direct = direct_adamw_changed_rows(model, BATCH, optimizer=optimizer)
    assert result.rows_changed_by_adamw == direct > result.rows_with_gradient == 6
    assert "momentum" in result.note
    assert_unchanged(model, before)
    state_after = optimizer.state_dict()
    assert [float(s["step"]) for s in state_after["state"].values()] == [
        float(s["step"]) for s in state_before["state"].values()
    ]
    assert embedding_sparsity(model, BATCH).rows_changed_by_adamw == 6  # a fresh AdamW has no momentum


def test_sparsity_rejects_a_batch_without_a_next_token():
    with pytest.raises(InsightError, match="T >= 2"):
        embedding_sparsity(tiny_model(), torch.tensor([[5]]))


# -- explain topics --------------------------------------------------------------------------------------------------


def test_geometry_topic_on_a_trained_model(trained_tiny_dir, tmp_path, capsys):
    out = tmp_path / "geometry"
    explain_main(["geometry", str(trained_tiny_dir), "--output_dir", str(out), "--k", "3"])
    report = capsys.readouterr().out
    assert "Nearest neighbours of 'queen'" in report and "king - man + woman" in report
    assert "Parallelism of the 8 gender offsets" in report
    assert (out / "word_map.png").stat().st_size > 1000

    explain_main(["geometry", str(trained_tiny_dir), "--output_dir", str(out), "--json", "--word", "king",
                  "--analogy", "boy,man,woman,girl"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert data["neighbours"]["word"] == "king" and len(data["neighbours"]["neighbours"]) == 5
    assert [(a["a"], a["expected"]) for a in data["analogies"]] == [("boy", "girl")]
    assert data["parallelism"]["num_pairs"] == 8 and len(data["word_map"]["coords"]) == len(data["word_map"]["words"])


def test_gradients_topic_on_a_trained_model(trained_tiny_dir, tmp_path, capsys):
    out = tmp_path / "gradients"
    explain_main(["gradients", str(trained_tiny_dir), "--output_dir", str(out)])
    report = capsys.readouterr().out
    assert "layer 0 attention" in report and "rows changed by one AdamW step" in report
    assert (out / "gradient_blame.png").stat().st_size > 1000

    explain_main(["gradients", str(trained_tiny_dir), "--output_dir", str(out), "--json", "--batch_text",
                  "the king ate bread.", "--batch_text", "one plus one equals two."])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert sum(data["blame"]["shares"]) == pytest.approx(1.0)
    assert data["sparsity"]["tied"] and data["sparsity"]["rows_with_gradient"] == data["sparsity"]["vocab_size"]
    assert data["batch_texts"] == ["the king ate bread.", "one plus one equals two."]


def test_a_word_outside_a_word_level_vocabulary_is_a_one_line_error(word_tokenizer, tmp_path, capsys):
    folder = tmp_path / "word_model"
    tiny_model().save_pretrained(folder)
    word_tokenizer.save_pretrained(folder)
    for extra, word in ((["--word", "queen"], "queen"), (["--word", "w5", "--analogy", "w4,w5"], "w4,w5")):
        message = cli_user_error(["explain", "geometry", str(folder), "--output_dir", str(tmp_path / "out"), *extra],
                                 capsys)  # fmt: skip
        assert word in message
