"""Write a local lm-evaluation-harness task folder for TinyWorld: the group `tinyworld` with

- `tinyworld_arithmetic`: greedy answers to the held-out arithmetic problems (generate_until, at most 8 new tokens,
  cut at the first ".", stripped), scored by exact match: the same problems, prompts and answer rule as
  `evaluation.arithmetic_exact_match`, so the two figures agree;
- `tinyworld_next_word`: the last word of each validation document, LAMBADA-style (loglikelihood): `acc` is the
  fraction of documents whose last word the model's greedy decoding would produce, `perplexity` the exponentiated
  mean negative log-likelihood of that word. The documents are the ones `evaluate_model` scores in training. Scoring
  the word rather than generating it costs one forward pass per document and needs no stop rule; the last word is
  fixed by its context in arithmetic, facts and sayings, and a free choice in royalty stories ("... in the morning").

The data are jsonl files read with the `json` dataset builder from absolute paths (lm-eval resolves `data_files`
against the working directory, not the YAML), so the folder works offline but not after being moved: write it again.
"""

import json
from dataclasses import asdict
from pathlib import Path

import yaml
from datasets import Dataset

from .atomic import atomic_directory
from .data.tinyworld import TinyWorld, TinyWorldConfig

GROUP = "tinyworld"
ARITHMETIC_TASK = "tinyworld_arithmetic"
NEXT_WORD_TASK = "tinyworld_next_word"
# `evaluation.generate_answers`' defaults, which `evaluate_model` uses.
MAX_NEW_TOKENS = 8
STOP = "."
# Our exact-match metric also collapses runs of whitespace inside an answer; deleting each whitespace character that
# precedes another does the same for runs of spaces (lm-eval's exact_match can only delete what a regex matches).
COLLAPSE_WHITESPACE = r"\s(?=\s)"
# `evaluate_model`'s document count in the training pipeline (`RunArguments.eval_documents`), and its batch for the
# arithmetic answers (twice its default batch_size).
DEFAULT_DOCUMENTS = 500
BATCH_SIZE = 32
TASK_VERSION = 1.0


def heldout_arithmetic(config: TinyWorldConfig, num_problems: int | None = None) -> list[dict]:
    """The held-out problems `evaluate_model` gets in training (all of them), or the seeded sample of `num_problems`
    that the learning probes take (`probe_problems`)."""
    problems = Dataset.from_list([asdict(p) for p in TinyWorld(config).heldout_problems()])
    if len(problems) == 0:
        raise ValueError(
            f"This TinyWorld holds out no arithmetic problems (heldout_fraction={config.heldout_fraction}); "
            "use a configuration with heldout_fraction > 0."
        )
    if num_problems is not None and not 1 <= num_problems <= len(problems):
        raise ValueError(
            f"num_problems={num_problems}, but this TinyWorld holds out {len(problems)} arithmetic problems; "
            f"pass a count from 1 to {len(problems)}, or leave it unset for all of them."
        )
    if num_problems is not None and num_problems < len(problems):
        problems = problems.shuffle(seed=0).select(range(num_problems))
    return list(problems)


def last_word_examples(config: TinyWorldConfig, num_documents: int = DEFAULT_DOCUMENTS) -> list[dict]:
    """The first `num_documents` validation documents (those `evaluate_model` scores), each split before its last
    word: `context` (the text up to it), `target` (" word", its leading space belonging to the word's tokens)."""
    available = config.num_validation_documents
    if not 1 <= num_documents <= available:
        raise ValueError(
            f"num_documents={num_documents}, but this TinyWorld has {available} validation documents; pass a count "
            f"from 1 to {available} (or raise num_validation_documents)."
        )
    examples = []
    for document in TinyWorld(config).documents("validation")[:num_documents]:
        context, word = document.text.removesuffix(STOP).rsplit(" ", 1)
        examples.append({"context": context, "target": f" {word}", "family": document.family, "text": document.text})
    return examples


def _task_config(name: str, data_file: Path, fields: dict) -> dict:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "num_fewshot": 0,
        **fields,
        "metadata": {"version": TASK_VERSION},
    }


ARITHMETIC_FIELDS = {
    "output_type": "generate_until",
    "doc_to_text": "{{prompt}}",
    "doc_to_target": "{{answer}}",
    "generation_kwargs": {"until": [STOP], "max_gen_toks": MAX_NEW_TOKENS, "do_sample": False},
    "filter_list": [{"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}],
    "metric_list": [
        {"metric": "exact_match", "aggregation": "mean", "higher_is_better": True,
         "regexes_to_ignore": [COLLAPSE_WHITESPACE]},
    ],
}  # fmt: skip
NEXT_WORD_FIELDS = {
    "output_type": "loglikelihood",
    "doc_to_text": "{{context}}",
    "doc_to_target": "{{target}}",
    "metric_list": [
        {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
    ],
}


def write_lm_eval_task(
    out_dir: str | Path,
    config: TinyWorldConfig | None = None,
    num_problems: int | None = None,
    num_documents: int = DEFAULT_DOCUMENTS,
) -> Path:
    """Write the `tinyworld` task folder for `lm_eval --include_path OUT_DIR --tasks tinyworld` and return its
    absolute path. `config` is the run's TinyWorld (`training.data.tinyworld_config(data_args)`; default: the default
    corpus); `num_problems` None takes every held-out problem. The folder is replaced atomically; an existing folder
    that is not such a task folder is refused rather than replaced."""
    config = config if config is not None else TinyWorldConfig()
    out_dir = Path(out_dir).resolve()
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / f"{GROUP}.yaml").is_file():
        raise FileExistsError(
            f"{out_dir} is a folder with other contents (no {GROUP}.yaml); writing the task replaces the whole folder, "
            "so choose a new or empty folder."
        )
    problems = heldout_arithmetic(config, num_problems)
    examples = last_word_examples(config, num_documents)
    files = {
        "arithmetic.jsonl": problems,
        "next_word.jsonl": examples,
        f"{ARITHMETIC_TASK}.yaml": _task_config(ARITHMETIC_TASK, out_dir / "arithmetic.jsonl", ARITHMETIC_FIELDS),
        f"{NEXT_WORD_TASK}.yaml": _task_config(NEXT_WORD_TASK, out_dir / "next_word.jsonl", NEXT_WORD_FIELDS),
        f"{GROUP}.yaml": {"group": GROUP, "task": [ARITHMETIC_TASK, NEXT_WORD_TASK],
                          "metadata": {"version": TASK_VERSION}},
    }  # fmt: skip
    with atomic_directory(out_dir) as tmp:
        for name, content in files.items():
            if name.endswith(".jsonl"):
                text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in content)
            else:
                text = yaml.safe_dump(content, sort_keys=False, allow_unicode=True)
            (tmp / name).write_text(text, encoding="utf-8")
    return out_dir


def lm_eval_command(task_dir: str | Path, model: str | Path, batch_size: int = BATCH_SIZE) -> list[str]:
    """The `lm_eval` command line that runs the task folder on `model` (a folder or Hub id). `trust_remote_code`
    loads TinyLLM from the folder's own code (lm_eval does not import this package); `add_bos_token=True` makes
    lm-eval tokenise exactly as `evaluation` does (bos first; `add_bos_token=False` would drop it)."""
    model_args = f"pretrained={model},trust_remote_code=True,add_bos_token=True"
    return ["lm_eval", "--model", "hf", "--model_args", model_args, "--include_path", str(task_dir),
            "--tasks", GROUP, "--batch_size", str(batch_size)]  # fmt: skip


__all__ = [
    "ARITHMETIC_TASK",
    "GROUP",
    "NEXT_WORD_TASK",
    "heldout_arithmetic",
    "last_word_examples",
    "lm_eval_command",
    "write_lm_eval_task",
]
