"""Context moves the vector: the same word's hidden state in two kinds of context, scored per layer. Layer 0 is the
embedding row in every text (chance exactly), the scores match a direct computation, the built-in TinyWorld studies
are deterministic generator sentences, and the `explain context` topic reports them or fails in one line."""

import json
import re
import string

import numpy as np
import pytest
import torch
from conftest import cli_user_error, tiny_model

from hf_tinyllm.data.tinyworld import COMMONER_TEMPLATES, ROYAL_TEMPLATES
from hf_tinyllm.explain import main as explain_main
from hf_tinyllm.insight.context import (
    ContextStudy,
    _indices,
    _pair_out_accuracy,
    built_in_studies,
    chance_accuracy,
    context_separation,
    custom_study,
    interpretation,
    plot_context_separation,
    separation_scores,
)
from hf_tinyllm.insight.layers import residual_streams
from hf_tinyllm.insight.model_parts import InsightError, find_parts

# Word-level texts for the tiny untrained model: "w40" after different words, at different positions.
TEXTS_A = ["w5 w6 w40 w7", "w8 w40 w9", "w5 w9 w10 w40", "w6 w40"]
TEXTS_B = ["w50 w51 w40 w52", "w53 w40", "w50 w54 w55 w56 w40 w57", "w58 w59 w40"]


def direct_scores(vectors: np.ndarray, labels: list[int]) -> tuple[float, float, float]:
    """Leave-one-pair-out nearest-centroid accuracy (ties half), 1 - cos of the means and between/within, the
    straightforward way: a loop over every pair of one occurrence per context that refits both centroids without it."""
    labels = np.array(labels)
    hits = {0: [], 1: []}
    for i in np.flatnonzero(labels == 0):
        for j in np.flatnonzero(labels == 1):
            keep = (np.arange(len(vectors)) != i) & (np.arange(len(vectors)) != j)
            centroids = [vectors[keep & (labels == k)].mean(0) for k in (0, 1)]
            for point, own in ((i, 0), (j, 1)):
                distances = [np.linalg.norm(vectors[point] - c) for c in centroids]
                hits[own].append(1.0 if distances[own] < distances[1 - own] else
                                 0.5 if distances[own] == distances[1 - own] else 0.0)  # fmt: skip
    accuracy = (np.mean(hits[0]) + np.mean(hits[1])) / 2
    means = [vectors[labels == k].mean(0) for k in (0, 1)]
    cosine = means[0] @ means[1] / (np.linalg.norm(means[0]) * np.linalg.norm(means[1]))
    within = np.sqrt(np.mean([np.sum((v - means[k]) ** 2) for v, k in zip(vectors, labels, strict=True)]))
    return accuracy, 1 - cosine, np.linalg.norm(means[0] - means[1]) / within


def template_pattern(template: str) -> re.Pattern:
    """A TinyWorld template as a regex: its literal text, any words in its {fields}."""
    parts = [
        re.escape(literal) + ("[a-z ]+" if field else "") for literal, field, _, _ in string.Formatter().parse(template)
    ]
    return re.compile("".join(parts))


def test_layer_zero_is_the_embedding_row_so_it_separates_nothing(word_tokenizer):
    model = tiny_model()
    result = context_separation(model, word_tokenizer, custom_study("w40", TEXTS_A, TEXTS_B))
    row = find_parts(model).embed_tokens.weight[40]
    for text, position in zip(TEXTS_A + TEXTS_B, result.positions, strict=True):  # RoPE: no position in the stream
        ids = word_tokenizer(text, return_tensors="pt")["input_ids"]
        assert ids[0, position] == 40
        assert torch.equal(residual_streams(model, ids)[0][0, position], row)
    assert result.identical_at_embeddings
    assert (result.accuracy[0], result.cosine_distance[0], result.separation_ratio[0]) == (0.5, 0.0, 0.0)
    assert result.points[0] == [[0.0, 0.0]] * 8 and result.explained_variance[0] == [0.0, 0.0]
    assert result.layer_names == ["embeddings", "layer 1", "layer 2"]
    assert result.texts[0] == "w5 w6 [w40] w7" and result.labels == [0] * 4 + [1] * 4
    assert result.chance_accuracy[0] == 0.5 and result.num_shuffles == 200


def test_learned_positions_make_layer_zero_differ_and_are_said_so(word_tokenizer):
    model = tiny_model(position_embedding_type="learned")
    result = context_separation(model, word_tokenizer, custom_study("w40", TEXTS_A, TEXTS_B))
    assert not result.identical_at_embeddings and result.cosine_distance[0] > 0


def test_scores_and_picture_equal_a_direct_computation_on_one_layer(word_tokenizer):
    model = tiny_model(seed=3)
    gen = torch.Generator().manual_seed(0)
    texts = [" ".join(f"w{i}" for i in torch.randint(41, 99, (5,), generator=gen).tolist()) + " w40" for _ in range(9)]
    result = context_separation(model, word_tokenizer, custom_study("w40", texts[:4], texts[4:], ("a", "b")))
    vectors = []
    for text in texts:  # one whole text at a time (the function runs padded batches of prefixes)
        ids = word_tokenizer(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():  # hidden_states[1]: after decoder layer 1 (the last entry has the final norm)
            vectors.append(model(ids, output_hidden_states=True).hidden_states[1][0, -1].double().numpy())
    vectors = np.stack(vectors)
    expected = direct_scores(vectors, result.labels)
    assert separation_scores(torch.from_numpy(vectors), result.labels) == pytest.approx(expected, rel=1e-12)
    gen = torch.Generator().manual_seed(0)  # chance: the same score under 200 seeded shuffles of the labels
    shuffled = [direct_scores(vectors, np.array(result.labels)[torch.randperm(9, generator=gen).numpy()].tolist())[0]
                for _ in range(200)]  # fmt: skip
    assert chance_accuracy(torch.from_numpy(vectors), result.labels) == pytest.approx(np.quantile(shuffled, 0.95))
    # The result's layer 1 is these vectors up to float32 rounding (batched): the same scores to that precision.
    got = (result.accuracy[1], result.cosine_distance[1], result.separation_ratio[1])
    assert got == pytest.approx(expected, rel=1e-5) and result.accuracy[1] == expected[0]
    assert result.chance_accuracy[1] == pytest.approx(np.quantile(shuffled, 0.95), rel=1e-9)
    # The PCA keeps the two largest shares of the centred variance, and the points carry exactly that much.
    centred = vectors - vectors.mean(0)
    shares = np.linalg.svd(centred, compute_uv=False) ** 2 / np.sum(centred**2)
    assert result.explained_variance[1] == pytest.approx(shares[:2].tolist(), rel=1e-5)
    assert np.sum(np.square(result.points[1])) == pytest.approx(np.sum(shares[:2]) * np.sum(centred**2), rel=1e-5)


def test_separated_and_identical_clouds_score_one_and_chance_and_chance_is_unbiased():
    gen = torch.Generator().manual_seed(0)
    apart = torch.cat([torch.randn(5, 8, generator=gen), torch.randn(7, 8, generator=gen) + 10.0])
    labels = [0] * 5 + [1] * 7
    assert separation_scores(apart, labels)[0] == 1.0
    same = torch.randn(1, 8, generator=gen).expand(12, 8)
    assert separation_scores(same, labels) == (0.5, 0.0, 0.0) and chance_accuracy(same, labels) == 0.5
    # Clusters shared by both contexts, labels unrelated to them: leaving a pair out averages 0.5 over the shuffles.
    clusters = torch.randn(4, 16, generator=gen) * 10
    points = clusters.repeat_interleave(6, 0) + torch.randn(24, 16, generator=gen)
    labels = torch.stack([torch.randperm(24, generator=gen) % 2 for _ in range(400)])  # (400, 24)
    accuracies = _pair_out_accuracy(points.double(), *_indices(labels))
    assert float(accuracies[0]) == pytest.approx(separation_scores(points, labels[0].tolist())[0])
    assert abs(float(accuracies.mean()) - 0.5) < 0.025  # the mean of 400 has a standard deviation of about 0.007


def test_built_in_studies_are_deterministic_tinyworld_sentences():
    studies = built_in_studies(per_context=24)
    assert built_in_studies(per_context=24) == studies
    pronoun, number = studies["pronoun"], studies["number"]
    assert (pronoun.word, list(pronoun.contexts)) == ("he", ["royal", "commoner"])
    for name, templates in (("royal", ROYAL_TEMPLATES), ("commoner", COMMONER_TEMPLATES)):
        texts = pronoun.contexts[name]
        assert len(texts) == 24 and len(set(texts)) == 24
        for text, start in texts:
            first = text.split(". ", 1)[0]
            assert text[start:].startswith("he ") and start == len(first) + 2 and text.count(" he ") == 1
            assert any(template_pattern(t).fullmatch(first + ".") for t in templates), first
        nouns = {text.split()[1] for text, _ in texts}
        assert nouns == ({"king", "prince"} if name == "royal" else {"man", "boy", "father", "husband"})
    assert (number.word, list(number.contexts)) == ("six", ["operand", "answer"])
    words = {"plus": "+", "minus": "-", "times": "*"}
    counts = {name: len(texts) for name, texts in number.contexts.items()}
    assert counts["operand"] == counts["answer"] >= 16
    for name, texts in number.contexts.items():
        for text, start in texts:
            tokens = text.rstrip(".").split()
            assert tokens.count("six") == 1 and text[start : start + 3] == "six"
            assert text[start:].startswith("six equals" if name == "operand" else "six.")
            assert any(op in tokens for op in words)


def test_bad_studies_are_one_sentence_errors(word_tokenizer):
    with pytest.raises(InsightError, match="'w41' is not in text 2 of 'context A'"):
        custom_study("w41", ["w41 w5", "w5 w6"], TEXTS_B)
    with pytest.raises(InsightError, match="has 1 text"):
        custom_study("w40", ["w5 w40"], TEXTS_B)
    with pytest.raises(InsightError, match="at least 2"):
        built_in_studies(per_context=1)
    study = ContextStudy(
        "odd", "w40", "an offset off the word", {"a": [("w5 w40", 0), ("w40", 0)], "b": [("w40", 0)] * 2}
    )
    with pytest.raises(InsightError, match="no 'w40' at character 0"):
        context_separation(tiny_model(), word_tokenizer, study)
    with pytest.raises(InsightError, match="Unknown study 'bank'"):
        context_separation(tiny_model(), word_tokenizer, "bank")
    marked = custom_study("w40", ["w40 w5 [w40]", "w6 w40"], TEXTS_B)
    assert marked.contexts["context A"][0] == ("w40 w5 w40", 7)


def test_the_trained_model_separates_operand_from_answer_after_its_layers(trained_tiny_dir, tmp_path):
    """On the 2-layer fixture, 'six' as an operand and 'six' as an answer part ways from layer 1 on. Its 'he' does
    not tell royal from commoner stories apart (150 steps are not enough; the demo model's does at 100%), so only
    layer 0 is checked there."""
    from hf_tinyllm.explain import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(str(trained_tiny_dir))
    results = {name: context_separation(model, tokenizer, study, num_shuffles=50)
               for name, study in built_in_studies(per_context=12).items()}  # fmt: skip
    for result in results.values():
        assert result.identical_at_embeddings and result.accuracy[0] == 0.5 and result.cosine_distance[0] == 0.0
        assert result.separation_ratio[0] == 0.0 and result.chance_accuracy[0] == 0.5
    result = results["number"]
    assert min(result.accuracy[1:]) > max(result.chance_accuracy[1:])
    assert min(result.separation_ratio[1:]) > 1.0 and "From layer 1 on" in interpretation(result)
    assert plot_context_separation(result, tmp_path / "number.png").stat().st_size > 1000


def test_context_topic_reports_each_layer_and_writes_the_pictures(trained_tiny_dir, tmp_path, capsys):
    out = tmp_path / "context"
    explain_main(["context", str(trained_tiny_dir), "--output_dir", str(out), "--per_context", "6",
                  "--num_shuffles", "20"])  # fmt: skip
    report = capsys.readouterr().out
    assert "Study 'pronoun'" in report and "Study 'number'" in report
    assert report.count("same vector in every text: chance by construction") == 2
    assert report.count("  embeddings         50.0%       50.0%              0.000            0.00") == 2
    assert "  layer 2 " in report and (out / "context_pronoun.png").is_file() and (out / "context_number.png").is_file()

    explain_main(["context", str(trained_tiny_dir), "--output_dir", str(out), "--json", "--num_shuffles", "20",
                  "--word", "he", "--names", "king,man",
                  "--context_a", "the king ate soup. he ate.|the king felt sad. [he] smiled.",
                  "--context_b", "the man ate soup. he ate.|the man felt sad. he smiled."])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    (study,) = data["studies"]
    assert study["context_names"] == ["king", "man"] and study["texts"][1] == "the king felt sad. [he] smiled."
    assert len(study["accuracy"]) == len(study["points"]) == 3 and data["files"] == [str(out / "context_custom.png")]


GLUED = "the king ate.he ate.|the king ate. he ate."  # "he" after "." without a space: not the token " he"
BAD_INPUTS = [
    (["--word", "bank", "--context_a", "the king ate.|he ate.", "--context_b", "a|b"], "'bank' is not in text 1"),
    (["--word", "he", "--context_a", "the king ate. he ate.", "--context_b", "he|he"], "has 1 text"),
    (["--word", "he", "--context_a", "he ate.|he ate."], "all three of --word"),
    (["--study", "number", "--per_context", "1"], "at least 2"),
    (["--num_shuffles", "0"], "--num_shuffles 0"),
    (["--word", "he", "--context_a", GLUED, "--context_b", "a he.|b he."], "text 1 of 'context A', 'he' is tokenised"),
]


@pytest.mark.parametrize("extra, said", BAD_INPUTS)
def test_context_topic_bad_input_is_one_error_line(trained_tiny_dir, tmp_path, capsys, extra, said):
    message = cli_user_error(["explain", "context", str(trained_tiny_dir), "--output_dir", str(tmp_path), *extra],
                             capsys)  # fmt: skip
    assert said in message
