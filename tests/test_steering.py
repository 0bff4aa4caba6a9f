"""Steering with a direction (insight.steering, `tinyllm explain steer`): the hook adds exactly alpha x direction and
leaves no trace, the prompts are TinyWorld's and their true next word is he or she, and on a model that has learned
pronoun agreement the difference of means flips he -> she where random directions of the same norm do not.

The session's `trained_tiny_dir` has not learned agreement (150 steps on the mixed corpus: p(he) 0.51 against
p(she) 0.31 after the held-out male prompts, and no direction flips them), so this module trains its own model: a
royalty-only TinyWorld of two-sentence documents, where every document ends its first sentence on the subject's
pronoun, 200 AdamW steps on one thread (a few seconds)."""

import json
import math
import re

import pytest
import torch
from conftest import cli_user_error, tiny_model
from torch import nn

from hf_tinyllm.data import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.explain import main as explain_main
from hf_tinyllm.insight.model_parts import InsightError, encode_prompt
from hf_tinyllm.insight.steering import (
    DEFAULT_PROMPT,
    DIFFERENCE_OF_MEANS,
    EMBEDDING_OFFSET,
    RANDOM,
    random_direction,
    steer_prompt,
    steering,
    steering_prompts,
    steering_report,
)
from hf_tinyllm.insight.truth import TinyWorldTruth
from hf_tinyllm.tokenization import load_tokenizer, train_tokenizer, write_tokenizer_files

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models train faster on one thread


@pytest.fixture(scope="module")
def royal_model_dir(one_torch_thread, tmp_path_factory):
    """A debug TinyLLM (2 layers, width 64) trained on 600 royalty documents of two sentences each, with its
    384-token tokenizer (he, she, king, queen ... are single tokens)."""
    from hf_tinyllm.data.packing import pack_dataset, tokenize_dataset
    from hf_tinyllm.presets import build_model
    from hf_tinyllm.tokenization import model_overrides_for

    config = TinyWorldConfig(num_train_documents=600, num_validation_documents=1, family_weights={"royalty": 1.0},
                             min_sentences=2, max_sentences=2)  # fmt: skip
    world = tinyworld_dataset(config)
    tokenizer = train_tokenizer(world["train"], vocab_size=384)
    blocks = pack_dataset(tokenize_dataset(world["train"], tokenizer), 64, document_positions=True,
                          bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    ids, positions = torch.tensor(blocks["input_ids"]), torch.tensor(blocks["position_ids"])
    torch.manual_seed(0)
    model = build_model("debug", hidden_size=64, intermediate_size=128, **model_overrides_for(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(200):
        rows = torch.randint(len(ids), (16,), generator=gen)
        loss = model(input_ids=ids[rows], position_ids=positions[rows], labels=ids[rows], use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    path = tmp_path_factory.mktemp("royal") / "model"
    model.eval().save_pretrained(path)
    write_tokenizer_files(tokenizer, path)
    return path


@pytest.fixture(scope="module")
def royal_model(royal_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(royal_model_dir).eval(), load_tokenizer(royal_model_dir)


# -- the hook --------------------------------------------------------------------------------------------------------


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_alpha_zero_changes_nothing_and_the_hook_is_removed(arch):
    model = tiny_model(**arch)
    ids = torch.randint(3, 99, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model(input_ids=ids).logits
    direction = 3.0 * random_direction(model.config.hidden_size, seed=1)
    for layer in range(model.config.num_hidden_layers + 1):
        with torch.no_grad(), steering(model, direction, layer, alpha=0.0):
            assert _hooks(model) == 1
            assert torch.equal(model(input_ids=ids).logits, plain)
        with torch.no_grad(), steering(model, direction, layer, alpha=1.0):
            assert not torch.allclose(model(input_ids=ids).logits, plain)
        with pytest.raises(RuntimeError, match="inside"), steering(model, direction, layer, alpha=1.0):
            raise RuntimeError("an error inside the block")
        assert _hooks(model) == 0
        with torch.no_grad():
            assert torch.equal(model(input_ids=ids).logits, plain)


def test_the_hook_adds_exactly_alpha_times_the_direction_to_the_residual_stream():
    from hf_tinyllm.insight.layers import residual_streams

    model = tiny_model()
    ids = torch.randint(3, 99, (1, 5), generator=torch.Generator().manual_seed(0))
    direction = random_direction(model.config.hidden_size, seed=2)
    plain = residual_streams(model, ids)
    for layer in (0, 2):
        with steering(model, direction, layer, alpha=2.5):
            steered = residual_streams(model, ids)
        # the streams up to `layer` are the plain ones; at `layer` the stream moved by exactly 2.5 x direction
        assert all(torch.equal(a, b) for a, b in zip(plain[:layer], steered[:layer], strict=True))
        assert torch.allclose(steered[layer] - plain[layer], (2.5 * direction).expand(1, 5, -1), atol=1e-5)
    with steering(model, direction, 1, alpha=1.0, position=-1):
        steered = residual_streams(model, ids)
    assert torch.equal(steered[1][:, :-1], plain[1][:, :-1]) and not torch.equal(steered[1], plain[1])


class _TupleLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 4)

    def forward(self, hidden_states):
        return (hidden_states + self.linear(hidden_states), None)  # older transformers layers return tuples


class _TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(10, 4)
        self.model.layers = nn.ModuleList([_TupleLayer(), _TupleLayer()])
        self.model.norm = nn.Identity()
        self.lm_head = nn.Linear(4, 10)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids):
        hidden = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            hidden = layer(hidden)[0]
        return self.lm_head(self.model.norm(hidden))


def test_a_layer_that_returns_a_tuple_is_steered_too():
    torch.manual_seed(0)
    model, ids = _TupleModel(), torch.tensor([[1, 2, 3]])
    plain = model(ids)
    direction = torch.ones(4)
    for layer in (0, 1, 2):
        with steering(model, direction, layer, alpha=0.0):
            assert torch.equal(model(ids), plain)
        with steering(model, direction, layer, alpha=1.0):
            steered = model(ids)
        assert not torch.allclose(steered, plain)
    # after the last layer the head (no norm here) sees exactly + direction
    assert torch.allclose(steered - plain, (model.lm_head.weight @ direction).expand(1, 3, -1), atol=1e-5)


def test_bad_input_is_an_insight_error():
    model = tiny_model()
    out_of_range = pytest.raises(InsightError, match=r"Layer 3 is out of range.*from 0 .* to 2")
    with out_of_range, steering(model, torch.zeros(32), 3):
        pass
    with pytest.raises(InsightError, match="width 32"), steering(model, torch.zeros(5), 1):
        pass
    with pytest.raises(InsightError, match="no held-out prompt"):
        steering_prompts(num_prompts=1)


# -- prompts and the truth -------------------------------------------------------------------------------------------


def test_prompts_are_tinyworld_first_sentences_whose_true_next_word_is_he_or_she():
    prompts = steering_prompts()
    assert (len(prompts.fit), len(prompts.heldout)) == (25, 25)
    assert steering_prompts() == prompts  # deterministic
    pairs = prompts.fit + prompts.heldout
    assert len(set(pairs)) == 50 and not set(prompts.fit) & set(prompts.heldout)
    truth = TinyWorldTruth()
    for male, female in pairs:
        assert male.split()[1] in {"king", "man", "prince", "boy", "father", "husband"}
        he, she = truth.next_word(male), truth.next_word(female)
        assert he.words[0] == "he" and he.probability("she") == 0.0
        assert she.words[0] == "she" and she.probability("he") == 0.0
    assert truth.next_word(DEFAULT_PROMPT).probability("he") == pytest.approx(0.75)  # or the document ends


# -- the claim -------------------------------------------------------------------------------------------------------


def test_the_difference_of_means_flips_he_to_she_and_random_directions_do_not(royal_model):
    model, tokenizer = royal_model
    result = steering_report(model, tokenizer, alphas=[1.0], num_random=5)
    assert result.layers == [0, 1, 2] and result.num_heldout == 25
    assert result.num_eligible >= 23 and result.p_he_before > 0.9  # the model has learned the agreement
    best = result.best_layer(DIFFERENCE_OF_MEANS)
    column = result.layers.index(best)
    assert result.flip_rates[DIFFERENCE_OF_MEANS][0][column] >= 0.9
    assert result.flip_rates[RANDOM][0][column] <= 0.1
    assert result.p_she_change[DIFFERENCE_OF_MEANS][0][column] > 0.5
    assert result.trials[RANDOM] == 5 * result.num_eligible
    # at layer 0 the last token "." does not see the subject: no difference of means there
    assert result.means_norms[0] == 0.0 and math.isnan(result.flip_rates[DIFFERENCE_OF_MEANS][0][0])
    assert result.norms[0] == pytest.approx(result.raw_norms[EMBEDDING_OFFSET])

    example = steer_prompt(model, tokenizer, DEFAULT_PROMPT, DIFFERENCE_OF_MEANS, best, alpha=1.0, k=3)
    assert example.words == ["he", "she"] and example.kind == DIFFERENCE_OF_MEANS
    assert example.words_before[0] > example.words_before[1] and example.words_after[1] > example.words_after[0]
    assert len(example.top_before) == 3 and example.top_before[0][0].strip() == "he"
    with torch.no_grad():  # the hook is gone: the plain model's top token is the one listed before steering
        unsteered = model(input_ids=encode_prompt(model, tokenizer, DEFAULT_PROMPT)).logits[0, -1].softmax(-1)
    assert _hooks(model) == 0 and float(unsteered.max()) == pytest.approx(example.top_before[0][1])


# -- the explain topic -----------------------------------------------------------------------------------------------


def test_the_steer_topic_states_every_flip_rate_and_draws_them(royal_model_dir, tmp_path, capsys):
    out = tmp_path / "steer"
    explain_main(["steer", str(royal_model_dir), "--output_dir", str(out), "--num_random", "2"])
    report = capsys.readouterr().out
    assert re.search(r"Embedding offset E\(queen\) - E\(king\): flips \d+% at its best layer \d", report), report
    assert re.search(r"Difference of means: flips \d+% at its best layer \d", report)
    assert "layer  norm" in report and "difference of means" in report and "Example 'the king fed his dog.'" in report
    assert (out / "flip_rates.png").stat().st_size > 1000

    explain_main(["steer", str(royal_model_dir), "--output_dir", str(out), "--json", "--layers", "2", "--alpha",
                  "1,2", "--num_random", "1", "--num_prompts", "12", "--positions", "last"])  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    result = data["result"]
    assert result["layers"] == [2] and result["alphas"] == [1.0, 2.0] and result["positions"] == "last"
    assert result["num_fit"] == 6 and len(result["flip_rates"][EMBEDDING_OFFSET]) == 2
    assert len(data["examples"]) == 4 and data["png"].endswith("flip_rates.png")


def test_bad_input_is_one_error_line(royal_model_dir, word_tokenizer, tmp_path, capsys):
    out = str(tmp_path / "out")
    message = cli_user_error(["explain", "steer", str(royal_model_dir), "--layers", "7", "--output_dir", out], capsys)
    assert "Layer 7 is out of range" in message and "from 0" in message
    message = cli_user_error(["explain", "steer", str(royal_model_dir), "--prompt", " ", "--output_dir", out], capsys)
    assert "prompt is empty" in message
    message = cli_user_error(["explain", "steer", str(royal_model_dir), "--alpha", "x", "--output_dir", out], capsys)
    assert "--alpha 'x'" in message
    folder = tmp_path / "word_model"
    tiny_model().save_pretrained(folder)
    word_tokenizer.save_pretrained(folder)
    message = cli_user_error(["explain", "steer", str(folder), "--output_dir", out], capsys)
    assert "'he'" in message and "vocabulary" in message
