"""Look inside a causal LM and at how it learned: one module per idea, numbers out (dataclasses), pictures apart
(`plot_*(result, path)`). Each function takes a model and its tokenizer (TinyLLM, or a Llama- or GPT-2-like
transformers model), and leaves the model's weights and train/eval mode as it found them.

- `next_token`: the next-token distribution, what sampling settings do to it, a guess's rank, per-token surprise
- `layers`: the logit lens (the prediction after each layer) and attention maps
- `geometry`: nearest neighbours, analogies, the parallelism of gender pairs, a 2-D map of word sets
- `gradients`: each stage's share of the gradient ("blame"), the embedding rows a batch and AdamW update
- `learning`: the probes a training run records (`--probe_steps`) and their learning curves
- `batching`: the same model trained at several batch sizes with equal tokens

`tinyllm explain TOPIC MODEL` prints each as a report and writes its PNGs.
"""

from .geometry import analogy, nearest_neighbours, parallelism_score, plot_word_map, word_map
from .gradients import embedding_sparsity, gradient_blame, plot_blame
from .layers import attention_maps, logit_lens, plot_attention, plot_logit_lens
from .learning import LearningProbe, plot_learning_curves
from .model_parts import InsightError
from .next_token import next_token_distribution, plot_surprise, rank_guess, text_surprise

__all__ = [
    "InsightError",
    "LearningProbe",
    "analogy",
    "attention_maps",
    "embedding_sparsity",
    "gradient_blame",
    "logit_lens",
    "nearest_neighbours",
    "next_token_distribution",
    "parallelism_score",
    "plot_attention",
    "plot_blame",
    "plot_learning_curves",
    "plot_logit_lens",
    "plot_surprise",
    "plot_word_map",
    "rank_guess",
    "text_surprise",
    "word_map",
]
