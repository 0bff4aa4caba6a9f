"""Look inside a causal LM and at how it learned: one module per idea, numbers out (dataclasses), pictures apart
(`plot_*(result, path)`). Each function takes a model and its tokenizer (TinyLLM, or a Llama- or GPT-2-like
transformers model), and leaves the model's weights and train/eval mode as it found them.

- `next_token`: the next-token distribution, what sampling settings do to it, a guess's rank, per-token surprise
- `layers`: the logit lens (the prediction after each layer) and attention maps
- `geometry`: nearest neighbours, analogies, the parallelism of gender pairs, a 2-D map of word sets
- `gradients`: each stage's share of the gradient ("blame"), the embedding rows a batch and AdamW update
- `learning`: the probes a training run records (`--probe_steps`) and their learning curves
- `batching`: the same model trained at several batch sizes with equal tokens
- `truth`: TinyWorld's exact next-word distribution beside the model's, word by word, per family and kind of word
- `microscope`: one AdamW step on a copy: what it changes in the distributions, the blame, the embedding rows
- `steering`: a direction added to the residual stream after a layer, and the flip rate it earns against random ones
- `context`: the same word's hidden state in two contexts, told apart (or not) layer by layer
- `capacity`: several widths trained for equal time; `memorisation`: one model on growing slices of the data (both
  train with the training package's optimizer, so import them as submodules: `hf_tinyllm.insight.capacity`)
- `timeline`: the snapshots a run keeps, and the model as it was at any of them

`tinyllm explain TOPIC MODEL` prints each as a report and writes its PNGs.
"""

from .context import context_separation, plot_context_separation
from .geometry import analogy, nearest_neighbours, parallelism_score, plot_word_map, word_map
from .gradients import embedding_sparsity, gradient_blame, plot_blame
from .layers import attention_maps, logit_lens, plot_attention, plot_logit_lens
from .learning import LearningProbe, plot_learning_curves
from .microscope import optimizer_step_microscope, plot_word_arrows
from .model_parts import InsightError
from .next_token import next_token_distribution, plot_surprise, rank_guess, text_surprise
from .steering import plot_flip_rates, steer_prompt, steering_report
from .truth import TinyWorldTruth, TruthProbe, compare_along, compare_next_word

__all__ = [
    "InsightError",
    "LearningProbe",
    "TinyWorldTruth",
    "TruthProbe",
    "analogy",
    "attention_maps",
    "compare_along",
    "compare_next_word",
    "context_separation",
    "embedding_sparsity",
    "gradient_blame",
    "logit_lens",
    "nearest_neighbours",
    "next_token_distribution",
    "optimizer_step_microscope",
    "parallelism_score",
    "plot_attention",
    "plot_blame",
    "plot_context_separation",
    "plot_flip_rates",
    "plot_learning_curves",
    "plot_logit_lens",
    "plot_surprise",
    "plot_word_arrows",
    "plot_word_map",
    "rank_guess",
    "steer_prompt",
    "steering_report",
    "text_surprise",
    "word_map",
]
