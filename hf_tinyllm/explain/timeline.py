"""`tinyllm explain timeline MODEL`: how the input embedding moved during training, from the run's timeline (the
snapshots `--probe_steps` keeps): the gender offsets' parallelism at each recorded step, and the word map as an
animation (one frame a step, aligned across steps)."""

import argparse
from pathlib import Path

from ..insight.timeline import load_timeline, plot_word_map_animation, word_map_timeline
from ..tokenization import load_tokenizer


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="A model folder trained with --probe_steps (its timeline/ folder).")
    parser.add_argument("--seconds_per_step", type=float, default=0.8, help="Frame time of the animation.")


def run(args: argparse.Namespace) -> tuple[str, dict]:
    timeline = load_timeline(args.model)
    result = word_map_timeline(timeline, load_tokenizer(args.model))
    gif = plot_word_map_animation(result, Path(args.output_dir) / "word_map_timeline.gif", args.seconds_per_step)
    kinds = sorted({s["kind"] for s in timeline.snapshots.values()})
    lines = [f"Timeline of {args.model}: {len(timeline.steps)} snapshots ({', '.join(kinds)}), steps "
             f"{timeline.steps[0]} to {timeline.steps[-1]}.", "",
             "Parallelism of the gender offsets vec(female) - vec(male) (mean pairwise cosine; 1 = one shared "
             f"direction; random word pairs at the last step: {result.parallelism_baseline:+.3f}):"]  # fmt: skip
    lines += [f"  step {step:>6}: {score:+.3f}" for step, score in zip(result.steps, result.parallelism, strict=True)]
    lines += ["", f"The word map at each step, aligned to the last (Procrustes), as an animation: {gif}"]
    return "\n".join(lines), {"steps": result.steps, "parallelism": result.parallelism,
                              "parallelism_baseline": result.parallelism_baseline, "gif": gif}  # fmt: skip


__all__ = ["add_arguments", "run"]
