"""Inside the stack: what the model would predict after each layer, and where each attention head looks.

- The logit lens (nostalgebraist, "interpreting GPT: the logit lens", LessWrong 2020) decodes the residual stream
  entering the first layer and leaving every layer with the model's own final norm and head, as if the network
  stopped there. The last row is the model's output exactly; KL(final || layer) says how far each layer is from it.
- Attention maps are the softmax weights (B, H, T, T) of every head, which only the eager attention returns.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .figures import pyplot, save_figure
from .model_parts import encode_prompt, eval_mode, find_parts, token_text


@dataclass
class LogitLensResult:
    prompt: str
    token_ids: list[int]  # (T,) the prompt's tokens; row l, column t predicts the token after position t
    tokens: list[str]
    layer_names: list[str]  # (L + 1,) "embeddings", "layer 1", ..., "layer N"
    top_token_ids: list[list[list[int]]]  # (L + 1, T, k)
    top_tokens: list[list[list[str]]]  # (L + 1, T, k)
    top_probabilities: list[list[list[float]]]  # (L + 1, T, k)
    final_token_id: int  # the model's top next token after the last position
    final_token: str
    final_token_probabilities: list[float]  # (L + 1,) its probability at the last position after each layer
    kl_bits: list[list[float]]  # (L + 1, T) KL(final || layer) in bits; the last row is 0


@dataclass
class AttentionResult:
    prompt: str
    token_ids: list[int]  # (T,)
    tokens: list[str]
    weights: list[list[list[list[float]]]]  # (L, H, T, T): row = query position, column = key position; rows sum to 1


def residual_streams(model: PreTrainedModel, input_ids: torch.Tensor) -> list[torch.Tensor]:
    """The residual stream (1, T, C) entering the first decoder layer (token embeddings, plus learned positions for
    GPT-2-style models) and leaving each decoder layer: L + 1 tensors, captured by hooks during one forward pass."""
    layers = find_parts(model).layers
    streams: list[torch.Tensor] = []

    def save_input(module, args, kwargs):
        streams.append((args[0] if args else kwargs["hidden_states"]).detach())

    def save_output(module, args, output):
        streams.append((output[0] if isinstance(output, tuple) else output).detach())

    handles = [layers[0].register_forward_pre_hook(save_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(save_output) for layer in layers]
    try:
        with eval_mode(model), torch.no_grad():
            model(input_ids=input_ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return streams


def lens_logits(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """(L + 1, T, V) float32 logits of each residual stream of ids (1, T) decoded with the final norm and head; the
    last row equals the model's own logits."""
    parts = find_parts(model)
    streams = residual_streams(model, input_ids)
    with eval_mode(model), torch.no_grad():
        return torch.cat([parts.lm_head(parts.final_norm(h)).float() for h in streams])


def logit_lens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, k: int = 5) -> LogitLensResult:
    """The logit lens of `prompt`: per layer and position the k most likely next tokens, the KL divergence from the
    final prediction, and the probability each layer gives the model's final top token at the last position."""
    ids = encode_prompt(model, tokenizer, prompt)  # (1, T)
    log_probs = lens_logits(model, ids).log_softmax(-1)  # (L + 1, T, V)
    probs = log_probs.exp()
    final = log_probs[-1]  # (T, V)
    kl_bits = (final.exp() * (final - log_probs)).sum(-1) / math.log(2)  # (L + 1, T)
    top_probs, top_ids = probs.topk(min(k, probs.shape[-1]), dim=-1)  # (L + 1, T, k)
    final_id = int(final[-1].argmax())
    top_id_list = top_ids.tolist()
    return LogitLensResult(
        prompt=prompt,
        token_ids=ids[0].tolist(),
        tokens=[token_text(tokenizer, i) for i in ids[0].tolist()],
        layer_names=["embeddings"] + [f"layer {i}" for i in range(1, probs.shape[0])],
        top_token_ids=top_id_list,
        top_tokens=[[[token_text(tokenizer, i) for i in row] for row in layer] for layer in top_id_list],
        top_probabilities=top_probs.tolist(),
        final_token_id=final_id,
        final_token=token_text(tokenizer, final_id),
        final_token_probabilities=probs[:, -1, final_id].tolist(),
        kl_bits=kl_bits.clamp_min(0.0).tolist(),
    )


def attention_maps(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str) -> AttentionResult:
    """Every head's attention weights on `prompt`. Only eager attention returns them, so the model runs eager for
    this call and gets its own implementation (sdpa, flash, ...) back afterwards."""
    ids = encode_prompt(model, tokenizer, prompt)
    original = model.config._attn_implementation
    try:
        if original != "eager":
            model.set_attn_implementation("eager")
        with eval_mode(model), torch.no_grad():
            attentions = model(input_ids=ids, output_attentions=True, use_cache=False).attentions
    finally:
        if model.config._attn_implementation != original:
            model.set_attn_implementation(original)
    weights = torch.cat([a.float() for a in attentions])  # (L, H, T, T)
    return AttentionResult(
        prompt=prompt,
        token_ids=ids[0].tolist(),
        tokens=[token_text(tokenizer, i) for i in ids[0].tolist()],
        weights=weights.tolist(),
    )


def _label(token: str) -> str:
    return token.replace("\n", "\\n").replace(" ", "·") or "∅"


def plot_logit_lens(result: LogitLensResult, path: str | Path) -> Path:
    """Heatmap of layers (rows, embeddings at the bottom) by prompt positions (columns): each cell names the layer's
    top next token there, coloured by its probability."""
    plt = pyplot()

    probs = [[position[0] for position in layer] for layer in result.top_probabilities]  # (L + 1, T)
    n_layers, n_positions = len(probs), len(result.tokens)
    fig, ax = plt.subplots(figsize=(1.5 + 0.95 * n_positions, 1.2 + 0.42 * n_layers), dpi=100)
    image = ax.imshow(probs, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", origin="lower")
    for layer in range(n_layers):
        for position in range(n_positions):
            p = probs[layer][position]
            ax.text(
                position,
                layer,
                _label(result.top_tokens[layer][position][0]),
                ha="center",
                va="center",
                fontsize=8,
                family="monospace",
                color="white" if p > 0.6 else "black",
            )
    ax.set_xticks(range(n_positions), [_label(t) for t in result.tokens], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n_layers), result.layer_names, fontsize=8)
    ax.set_xlabel("input token (each cell: the top next token after it)", fontsize=9)
    ax.set_title("Logit lens: the prediction after each layer", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).set_label("top-token probability", fontsize=8)
    return save_figure(fig, path)


def plot_attention(result: AttentionResult, path: str | Path, layers: list[int] | None = None) -> Path:
    """A grid of attention maps, rows = layers (0-based indices in `layers`, default all), columns = heads; in each,
    row = query token, column = key token. Token labels on the first column and the last row."""
    plt = pyplot()

    layers = list(range(len(result.weights))) if layers is None else list(layers)
    n_heads, n_tokens = len(result.weights[0]), len(result.tokens)
    labels = [_label(t) for t in result.tokens]
    panel = 1.0 + 0.16 * n_tokens
    fig, axes = plt.subplots(
        len(layers), n_heads, figsize=(0.9 + panel * n_heads, 0.7 + panel * len(layers)), dpi=100, squeeze=False
    )
    for row, layer in enumerate(layers):
        for head in range(n_heads):
            ax = axes[row][head]
            ax.imshow(result.weights[layer][head], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks(range(n_tokens), labels if row == len(layers) - 1 else [], rotation=90, fontsize=7)
            ax.set_yticks(range(n_tokens), labels if head == 0 else [], fontsize=7)
            ax.tick_params(length=0)
            if row == 0:
                ax.set_title(f"head {head + 1}", fontsize=8)
            if head == n_heads - 1:
                ax.yaxis.set_label_position("right")
                ax.set_ylabel(f"layer {layer + 1}", fontsize=8, rotation=270, labelpad=10)
    fig.suptitle("Attention weights (row = query token, column = key token; dark 0 to yellow 1)", fontsize=9)
    return save_figure(fig, path)


__all__ = [
    "AttentionResult",
    "LogitLensResult",
    "attention_maps",
    "lens_logits",
    "logit_lens",
    "plot_attention",
    "plot_logit_lens",
    "residual_streams",
]
