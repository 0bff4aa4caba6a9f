"""The README's main job at this stage: build a TinyLLM, save it, reload it through the Auto classes, generate, and
export it as a plain Llama. (The training issue grows this into generate-corpus -> train -> evaluate -> share.)"""

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from .atomic import atomic_directory
from .convert import export_llama
from .presets import build_model


@dataclass
class DemoArguments:
    preset: str = field(default="nano", metadata={"help": "Model size from hf_tinyllm.presets.PRESETS."})
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where the model folders are written."})
    seed: int = field(default=0, metadata={"help": "Seed for the weights and the prompt."})
    max_new_tokens: int = field(default=12, metadata={"help": "Tokens to generate."})


def run_demo(args: DemoArguments) -> dict:
    """Run the demo, print a short report and return its figures."""
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    model = build_model(args.preset).eval()
    config = model.config
    out = Path(args.output_dir)
    print(
        f"1. Built preset {args.preset!r}: {model.num_parameters() / 1e6:.2f}M parameters, "
        f"{config.num_hidden_layers} layers x {config.hidden_size} wide, {config.position_embedding_type} positions, "
        f"{config.norm_type}, {config.mlp_type}, attention via {config._attn_implementation}."
    )

    model_dir = out / "model"
    with atomic_directory(model_dir) as tmp:
        model.save_pretrained(tmp)
    print(f"2. Saved to {model_dir}: {', '.join(sorted(p.name for p in model_dir.iterdir()))}")

    reloaded = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = torch.randint(3, config.vocab_size, (1, 8))
    with torch.no_grad():
        diff = (reloaded(prompt).logits - model(prompt).logits).abs().max().item()
    print(
        f"3. Reloaded with AutoModelForCausalLM.from_pretrained -> {type(reloaded).__name__}; "
        f"max |logits difference| = {diff:.1e}"
    )

    generated = reloaded.generate(prompt, max_new_tokens=args.max_new_tokens, do_sample=False)
    new_tokens = generated[0, prompt.shape[1] :].tolist()
    print(
        f"4. Greedy generation from token ids {prompt[0].tolist()}:\n   -> {new_tokens}\n"
        "   (an untrained model: the tokenizer and training issues turn these ids into text worth reading)"
    )

    llama_dir = export_llama(model, out / "llama")
    llama = AutoModelForCausalLM.from_pretrained(llama_dir).eval()
    with torch.no_grad():
        llama_diff = (llama(prompt).logits - model(prompt).logits).abs().max().item()
    print(
        f"5. Exported a plain {type(llama).__name__} to {llama_dir} (no remote code needed); "
        f"max |logits difference| = {llama_diff:.1e}"
    )
    print(f"\nArtifacts: {model_dir.resolve()} and {llama_dir.resolve()}")
    return {"reload_diff": diff, "llama_diff": llama_diff, "generated": new_tokens, "model_dir": str(model_dir)}
