"""The README's main job: on the embedded TinyWorld corpus, train a tokenizer and a nano TinyLLM with the Accelerate
loop, evaluate it against the corpus's exact entropy floor and on held-out arithmetic, save it, reload it with
`AutoModelForCausalLM.from_pretrained`, and generate. The recipe is `configs/runs/demo.yaml`."""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM
from transformers.utils import logging as hf_logging

from .data.tinyworld import TinyWorld
from .insight.learning import probe_records
from .insight.truth import POSITION_KINDS
from .model_card import TIMELINE_DIR, TRAINING_LOG_FILE, TRAINING_RECORDS
from .resources import resource_path
from .tokenization import load_tokenizer
from .training import parse_train_arguments, train
from .training.data import tinyworld_config

RECIPE = resource_path("configs", "runs", "demo.yaml")  # shipped in the package (hf_tinyllm/_data)
PROMPTS = ("two plus three equals", "seven times six equals", "the capital of france is", "the queen", "the king")


@dataclass
class DemoArguments:
    output_dir: str = field(default="outputs/demo", metadata={"help": "Where the run and the model are written."})
    max_steps: int | None = field(default=None, metadata={"help": "Override the recipe's training steps."})
    preset: str | None = field(default=None, metadata={"help": "Override the recipe's model size."})
    probe_steps: int | None = field(
        default=None, metadata={"help": "Override the recipe's learning-probe interval; 0 turns the probes off."}
    )
    recipe: str = field(default=str(RECIPE), metadata={"help": "YAML recipe for scripts/train.py."})


def run_demo(args: DemoArguments) -> dict:
    """Run the demo, print a readable report, return its figures."""
    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    overrides = ["--output_dir", args.output_dir]
    if args.max_steps is not None:
        overrides += ["--max_steps", str(args.max_steps), "--warmup_steps", str(min(30, args.max_steps // 5)),
                      "--probe_steps", str(max(1, args.max_steps // 8))]  # fmt: skip
    if args.preset is not None:
        overrides += ["--preset", args.preset]
    if args.probe_steps is not None:
        overrides += ["--probe_steps", str(args.probe_steps)]
    model_args, data_args, optim_args, run_args, probe_args = parse_train_arguments(
        ["--config", args.recipe, *overrides]
    )
    world = TinyWorld(tinyworld_config(data_args))
    summary = world.summary()
    print(
        f"1. TinyWorld: {summary['num_train_documents']:,} training documents ({summary['train_bytes'] / 1e6:.1f} MB),"
        f" exact entropy floor {summary['floor_bits_per_byte']:.4f} bits per byte; "
        f"{summary['num_heldout_problems']} arithmetic problems held out of training."
    )
    print(
        f"2. Training a {data_args.vocab_size}-token tokenizer and a '{model_args.preset}' TinyLLM for "
        f"{optim_args.max_steps} steps ({optim_args.per_device_batch_size} x {data_args.block_size} tokens each)..."
    )
    result = train(model_args, data_args, optim_args, run_args, probe_args)
    metrics = result["final_metrics"]
    print(
        f"3. Trained {result['parameters'] / 1e6:.2f}M parameters on {result['tokens_seen'] / 1e6:.2f}M tokens in "
        f"{result['wall_time_s']:.0f} s."
    )
    print(
        f"   validation: {metrics['bits_per_byte']:.4f} bits per byte vs {metrics['source_bits_per_byte']:.4f} for the "
        f"true distribution on the same documents ({metrics['gap_to_source']:+.1%}; the corpus floor, its expectation "
        f"over all TinyWorld text, is {metrics['floor_bits_per_byte']:.4f}); perplexity {metrics['perplexity']:.3f}; "
        f"next-token accuracy {metrics['next_token_accuracy']:.1%}"
    )
    print(
        f"   held-out arithmetic exact match: {metrics['arithmetic_exact_match']:.1%} (problems never seen in training)"
    )
    for example in result["arithmetic_examples"][:3]:
        print(f"     {example['prompt']} -> {example['generated']!r} (answer {example['answer']!r})")

    model_dir = Path(result["model_dir"])
    history = [json.loads(line) for line in (model_dir / TRAINING_LOG_FILE).read_text().splitlines()]
    story = learning_story(probe_records(history))
    if story:
        print("   how it learned (learning_curves.png):")
        for line in story:
            print(f"     {line}")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)
    print(f"4. Saved to {model_dir}; reloaded with AutoModelForCausalLM.from_pretrained -> {type(model).__name__}:")
    batch = tokenizer(list(PROMPTS), return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=12, do_sample=False)
    generations = tokenizer.decode(out[:, batch["input_ids"].shape[1] :].tolist(), skip_special_tokens=True)
    for prompt, text in zip(PROMPTS, generations, strict=True):
        print(f"     {prompt} | {text.split('.')[0].strip()}.")
    snapshots = sorted((model_dir / TIMELINE_DIR).glob("*.safetensors"))
    if snapshots:
        print(f"5. The training timeline: {len(snapshots)} snapshots in {model_dir / TIMELINE_DIR} "
              f"({sum(p.stat().st_size for p in snapshots) / 1e6:.1f} MB); `tinyllm studio {model_dir}` scrubs "
              "through them, `--export lesson.html` takes the lesson home.")  # fmt: skip
    records = [*TRAINING_RECORDS, TIMELINE_DIR]
    print(
        f"\nDone in {time.perf_counter() - started:.0f} s. Artifacts: {model_dir.resolve()} (model, tokenizer, "
        f"{', '.join(name for name in records if (model_dir / name).exists())}), logs in "
        f"{Path(args.output_dir).resolve() / 'logs'}."
    )
    return {**result, "generations": dict(zip(PROMPTS, generations, strict=True)), "learning_story": story}


def learning_story(records: list[dict], moments: int = 4) -> list[str]:
    """A line per chosen probe record (the first, the last and evenly spaced ones between): what the model could do."""
    if not records:
        return []
    picks = sorted({round(i * (len(records) - 1) / (moments - 1)) for i in range(moments)})
    lines = []
    for record in (records[i] for i in picks):
        parts = []
        if "analogy_rank_queen" in record:
            parts.append(f"king - man + woman -> queen at rank {record['analogy_rank_queen']:.0f}")
        if "heldout_exact_match" in record:
            parts.append(f"arithmetic: held-out {record['heldout_exact_match']:.0%} vs trained "
                         f"{record['trained_exact_match']:.0%}")  # fmt: skip
        if "validation_bits_per_byte" in record:
            parts.append(f"{record['validation_bits_per_byte']:.3f} bits per byte")
        lines.append(f"step {record['step']:>4}: " + "; ".join(parts))
    last = records[-1]
    if "gap_bits" in last:
        kinds = [k for k in POSITION_KINDS if f"gap_bits_{k}" in last]
        lines.append("gap to the exact truth, bits per word, first probe -> last: " + ", ".join(
            f"{k} {records[0][f'gap_bits_{k}']:.3f} -> {last[f'gap_bits_{k}']:.3f}" for k in kinds))  # fmt: skip
    lines.append(f"the {len(records)} probes took {sum(r['seconds'] for r in records):.1f} s of the run")
    lines.append(
        f"a batch of {last['batch_distinct_tokens']:.0f} distinct tokens gives {last['rows_with_input_gradient']:.0f} "
        f"of {last['vocab_size']:.0f} embedding rows an input-side gradient (the tied head reaches all "
        f"{last['rows_with_gradient']:.0f}); AdamW's momentum moves {last['rows_changed_by_adamw']:.0f}"
    )
    return lines
