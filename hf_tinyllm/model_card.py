"""The model card (`README.md`) of a TinyLLM repository, rendered with `huggingface_hub.ModelCard` from
`model_cards/tinyllm.md`: metadata for the Hub (library, pipeline, tags, license, datasets, `model-index` results) and a
body a person can read (architecture, training, metrics, loss curve, how to load it, limitations)."""

import json
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import AutoConfig, PreTrainedConfig

from .resources import resource_path

TEMPLATE = resource_path("model_cards", "tinyllm.md")  # shipped in the package (hf_tinyllm/_data)
SUMMARY_FILE = "training_summary.json"
LOSS_CURVE_FILE = "loss_curve.png"
LEARNING_CURVES_FILE = "learning_curves.png"
WORD_MAP_TIMELINE_FILE = "word_map_timeline.gif"  # rendered from the timeline when the model is pushed
TRAINING_LOG_FILE = "training_log.jsonl"
# They travel with the weights to the Hub.
TIMELINE_DIR = "timeline"  # the snapshots of training (hf_tinyllm.insight.timeline), a folder
TRAINING_RECORDS = (SUMMARY_FILE, LOSS_CURVE_FILE, LEARNING_CURVES_FILE, TRAINING_LOG_FILE)
TRANSFORMERS_REQUIREMENT = ">=5.23,<6"
LIMITATIONS = (
    "A model of this size knows only what its training corpus contains. Trained on TinyWorld (synthetic stories, "
    "arithmetic in words, capitals, sayings), it writes that world's sentences and nothing else; it has no knowledge "
    "of the real world beyond the facts listed there, makes arithmetic mistakes on problems it has not learned, and "
    "should not be used for any decision. It is meant for learning how language models train and for experiments."
)

TIMELINE_TEXT = (
    "### The words through training\n\n"
    "The word map (a 2-D PCA of the input embedding of TinyWorld's word sets) at each step the run recorded, each "
    "step's map aligned to the last one's, so that the words move from where training started to where it ended. "
    "The snapshots are in `timeline/` (`hf_tinyllm.insight.timeline.load_timeline`; `tinyllm explain timeline`).\n\n"
    "![The word map through training]({file})"
)
LEARNING_CURVES_TEXT = (
    "### How it learned\n\n"
    "Recorded during training by the learning probes (`--probe_steps`): exact match on arithmetic problems seen in "
    "training against held-out ones (memorisation vs generalisation), the rank of *queen* for *king - man + woman* "
    "and the parallelism of gender pairs (geometry emerging from next-token prediction), the embedding rows a batch "
    "and AdamW update, each stage's share of the gradient, and validation bits per byte against the corpus's "
    "entropy floor.\n\n![Learning curves]({file})"
)


def _metric_rows(metrics: dict) -> list[tuple[str, str]]:
    names = {
        "bits_per_byte": "bits per byte (validation)",
        "source_bits_per_byte": "true distribution on the same validation documents (bits per byte, exact)",
        "gap_to_source": "gap to the true distribution on the same documents",
        "floor_bits_per_byte": "entropy floor of the corpus (expected bits per byte over all its text, exact)",
        "gap_to_floor": "gap to the corpus floor",
        "perplexity": "perplexity (per token)",
        "next_token_accuracy": "next-token accuracy",
        "arithmetic_exact_match": "held-out arithmetic exact match",
    }
    rows = []
    for key, label in names.items():
        if key in metrics:
            value = metrics[key]
            shown = (
                f"{value:.1%}"
                if key in ("gap_to_source", "gap_to_floor", "next_token_accuracy", "arithmetic_exact_match")
                else (f"{value:.4f}")
            )
            rows.append((label, shown))
    return rows


def _eval_results(metrics: dict, dataset_name: str) -> list[EvalResult]:
    common = dict(task_type="text-generation", dataset_type=dataset_name.lower(), dataset_name=dataset_name,
                  dataset_split="validation")  # fmt: skip
    metric_types = {
        "perplexity": ("perplexity", "Perplexity"),
        "bits_per_byte": ("bits_per_byte", "Bits per byte"),
        "source_bits_per_byte": ("bits_per_byte_source", "True distribution on the same documents (bits per byte)"),
        "floor_bits_per_byte": ("bits_per_byte_floor", "Entropy floor of the corpus (bits per byte)"),
        "arithmetic_exact_match": ("exact_match", "Held-out arithmetic exact match"),
    }
    return [
        EvalResult(**common, metric_type=metric_type, metric_name=name, metric_value=round(float(metrics[key]), 6))
        for key, (metric_type, name) in metric_types.items()
        if key in metrics
    ]


def build_model_card(
    config: PreTrainedConfig,
    repo_id: str,
    summary: dict | None = None,
    license: str = "apache-2.0",
    dataset_name: str = "TinyWorld",
    language: str = "en",
    has_loss_curve: bool = False,
    has_learning_curves: bool = False,
    llama: bool = False,
    has_word_map_timeline: bool = False,
) -> ModelCard:
    """A rendered `ModelCard` for a model with `config` pushed to `repo_id`; `summary` is a run's
    `training_summary.json` (tokens, wall time, hardware, hyperparameters, final metrics) when there is one."""
    summary = summary or {}
    metrics = summary.get("final_metrics", {})
    model_name = repo_id.split("/")[-1]
    tags = ["tinyllm", "text-generation", "causal-lm"] + ([] if llama else ["custom_code"])
    card_data = ModelCardData(
        model_name=model_name,
        library_name="transformers",
        pipeline_tag="text-generation",
        license=license,
        language=language,
        datasets=[dataset_name.lower()],
        tags=tags,
        eval_results=_eval_results(metrics, dataset_name) or None,
    )
    if summary:
        hardware = summary.get("hardware", {})
        hyper = summary.get("hyperparameters", {})
        training = (
            f"Trained on {summary.get('tokens_seen', 0):,} tokens of {dataset_name} in {summary.get('steps', '?')} "
            f"steps and {summary.get('wall_time_s', 0):.0f} s on {hardware.get('num_processes', 1)} x "
            f"`{hardware.get('device', '?')}` ({hardware.get('mixed_precision', 'no')} mixed precision, torch "
            f"{hardware.get('torch', '?')})."
        )
        if hyper:
            training += "\n\n| hyperparameter | value |\n|---|---|\n" + "\n".join(
                f"| {k} | `{v}` |" for k, v in sorted(hyper.items()) if v is not None
            )
    else:
        training = "No training summary was provided with this model."
    rows = _metric_rows(metrics)
    evaluation = (
        "| metric | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
        if rows
        else "No evaluation results were provided with this model."
    )
    if rows and "floor_bits_per_byte" in metrics:
        evaluation += (
            "\n\nTinyWorld's generator knows the probability of every document, so two floors are exact. On the "
            "validation documents, the true distribution's own code length is the floor to compare with: no model "
            "beats it in expectation, and the gap to it measures what is left to learn. The corpus floor is the same "
            "quantity averaged over all TinyWorld text, so a finite validation sample can sit a little either side "
            "of it. The held-out arithmetic problems never occur in the training text."
        )
    description = f"It has {summary.get('parameters', 0) / 1e6:.2f}M parameters." if summary.get("parameters") else ""
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        repo_id=repo_id,
        description=description,
        model_type=config.model_type,
        architecture=(config.architectures or ["LlamaForCausalLM" if llama else "TinyLLMForCausalLM"])[0],
        parameters=f"{summary['parameters']:,}" if summary.get("parameters") else "see config.json",
        num_hidden_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_key_value_heads,
        head_dim=getattr(config, "head_dim", config.hidden_size // config.num_attention_heads),
        mlp_type=getattr(config, "mlp_type", "swiglu"),
        intermediate_size=config.intermediate_size,
        position_embedding_type=getattr(config, "position_embedding_type", "rope"),
        norm_type=getattr(config, "norm_type", "rmsnorm"),
        max_position_embeddings=config.max_position_embeddings,
        vocab_size=config.vocab_size,
        tie_word_embeddings=config.tie_word_embeddings,
        training_section=training,
        evaluation_section=evaluation,
        loss_curve=f"![Training loss and validation bits per byte]({LOSS_CURVE_FILE})" if has_loss_curve else "",
        learning_curves=LEARNING_CURVES_TEXT.format(file=LEARNING_CURVES_FILE) if has_learning_curves else "",
        word_map_timeline=TIMELINE_TEXT.format(file=WORD_MAP_TIMELINE_FILE) if has_word_map_timeline else "",
        transformers_requirement=TRANSFORMERS_REQUIREMENT,
        limitations=LIMITATIONS,
        llama=llama,
    )


def write_model_card(folder: str | Path, repo_id: str, llama: bool = False, **card_options) -> Path:
    """Render the card of the model saved in `folder` (reading its config and training summary) into
    `folder/README.md`."""
    folder = Path(folder)
    config = AutoConfig.from_pretrained(folder)
    summary_file = folder / SUMMARY_FILE
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    card = build_model_card(config, repo_id, summary, has_loss_curve=(folder / LOSS_CURVE_FILE).exists(),
                            has_learning_curves=(folder / LEARNING_CURVES_FILE).exists(), llama=llama,
                            has_word_map_timeline=(folder / WORD_MAP_TIMELINE_FILE).exists(),
                            **card_options)  # fmt: skip
    card.save(folder / "README.md")
    return folder / "README.md"


__all__ = [
    "LEARNING_CURVES_FILE",
    "LOSS_CURVE_FILE",
    "SUMMARY_FILE",
    "TIMELINE_DIR",
    "TRAINING_LOG_FILE",
    "TRAINING_RECORDS",
    "WORD_MAP_TIMELINE_FILE",
    "build_model_card",
    "write_model_card",
]
