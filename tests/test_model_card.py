"""The model card: valid YAML metadata that huggingface_hub parses (model-index included) and a readable body."""

import yaml
from conftest import tiny_model
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import ModelCardData, model_index_to_eval_results

from hf_tinyllm.model_card import build_model_card

SUMMARY = {
    "steps": 480, "tokens_seen": 1_966_080, "wall_time_s": 187.0, "parameters": 869_504,
    "hardware": {"device": "cpu", "num_processes": 1, "mixed_precision": "no", "torch": "2.13.0"},
    "hyperparameters": {"learning_rate": 0.003, "max_steps": 480},
    "final_metrics": {"bits_per_byte": 0.2653, "source_bits_per_byte": 0.2623, "gap_to_source": 0.0114,
                      "floor_bits_per_byte": 0.2683, "gap_to_floor": -0.0112,
                      "perplexity": 1.928, "next_token_accuracy": 0.775, "arithmetic_exact_match": 0.5},
}  # fmt: skip


def header(card: ModelCard) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


def test_card_metadata_and_model_index_parse():
    config = tiny_model().config
    card = build_model_card(config, "tester/tinyllm-demo", SUMMARY, has_loss_curve=True)
    metadata = header(card)
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "text-generation"
    assert metadata["tags"] == ["tinyllm", "text-generation", "causal-lm", "custom_code"]
    assert (
        metadata["license"] == "apache-2.0" and metadata["language"] == "en" and metadata["datasets"] == ["tinyworld"]
    )
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == "tinyllm-demo"
    values = {r.metric_type: r.metric_value for r in results}
    assert values == {"perplexity": 1.928, "bits_per_byte": 0.2653, "bits_per_byte_source": 0.2623,
                      "bits_per_byte_floor": 0.2683, "exact_match": 0.5}  # fmt: skip
    ModelCardData(**metadata)  # huggingface_hub's own metadata checks accept it
    reparsed = ModelCard(str(card))
    assert reparsed.data.model_name == "tinyllm-demo" and len(reparsed.data.eval_results) == 5


def test_card_body_tells_a_person_what_they_need():
    card = build_model_card(tiny_model().config, "tester/tinyllm-demo", SUMMARY, has_loss_curve=True)
    text = card.text
    for expected in ("| parameters | 869,504 |", "| layers x width | 2 x 32 |",
                     "Trained on 1,966,080 tokens of TinyWorld",
                     "| held-out arithmetic exact match | 50.0% |",
                     "| true distribution on the same validation documents (bits per byte, exact) | 0.2623 |",
                     "| gap to the true distribution on the same documents | 1.1% |",
                     "| entropy floor of the corpus (expected bits per byte over all its text, exact) | 0.2683 |",
                     "![Training loss and validation bits per byte]",
                     'from_pretrained("tester/tinyllm-demo", trust_remote_code=True)', "import hf_tinyllm",
                     "| learning_rate | `0.003` |", "## Limitations"):  # fmt: skip
        assert expected in text, expected
    assert "fine-tuned version of" not in text
    assert "How it learned" not in text  # no learning curves without probes
    with_probes = build_model_card(tiny_model().config, "tester/tinyllm-demo", SUMMARY, has_learning_curves=True)
    assert "### How it learned" in with_probes.text and "![Learning curves](learning_curves.png)" in with_probes.text


def test_card_without_summary_and_for_a_llama_export():
    from hf_tinyllm.convert import to_llama

    card = build_model_card(to_llama(tiny_model()).config, "tester/plain", llama=True)
    metadata = header(card)
    assert "model-index" not in metadata and "custom_code" not in metadata["tags"]
    assert "trust_remote_code" not in card.text and "No training summary was provided" in card.text
    assert "`llama` (`LlamaForCausalLM`)" in card.text
