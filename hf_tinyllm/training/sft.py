"""Supervised fine-tuning with TRL: TinyWorld as question/answer conversations, trained through the tokenizer's chat
template with a loss on the assistant's tokens only (`trl.SFTTrainer(assistant_only_loss=True)`), and scored by exact
match of greedy chat answers to arithmetic questions held out of both pre-training and fine-tuning.

    "what is two plus three?"          -> "two plus three equals five."
    "what is the capital of france?"   -> "the capital of france is paris."

The chat template marks each assistant turn's content and its end-of-text with `{% generation %}`, so the mask covers
exactly what the model must produce after a generation prompt, the stop token included (see `tokenization.py`).
"""

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict
from transformers import HfArgumentParser, PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from ..data.tinyworld import TinyWorld, TinyWorldConfig
from ..evaluation import greedy_continuations
from ..metrics import load_metric
from ..tokenization import CHAT_TEMPLATE, load_tokenizer, write_tokenizer_files
from .arguments import ModelArguments
from .model import build_training_model

SFT_FAMILIES = ("arithmetic", "facts")
GENERATION_MARKER = "{% generation %}"
RESULTS_FILE = "sft_results.json"
NUM_EXAMPLES = 5  # question/answer examples kept in the results

# SFTConfig defaults for a sub-million-parameter model on CPU: TRL's own (bf16, gradient checkpointing, lr 2e-5) are
# meant for billion-parameter models on GPUs. Pinned memory only speeds copies to an accelerator (without one, torch's
# DataLoader warns that it is ignored).
SFT_DEFAULTS = dict(
    output_dir="outputs/sft",
    assistant_only_loss=True,
    learning_rate=1e-3,
    lr_scheduler_type="cosine",
    warmup_steps=20,
    max_steps=600,
    per_device_train_batch_size=32,
    weight_decay=0.0,
    bf16=False,
    activation_checkpointing=False,
    dataloader_pin_memory=torch.accelerator.is_available(),
    logging_steps=10,
    save_strategy="no",
    report_to="none",
    seed=0,
)


@dataclass
class SFTArguments:
    model: str = field(
        default="outputs/demo/model", metadata={"help": "A saved TinyLLM folder (or Hub id) with its tokenizer."}
    )
    families: str = field(
        default="arithmetic,facts", metadata={"help": f"Comma-separated TinyWorld families of {list(SFT_FAMILIES)}."}
    )
    train_conversations: int = field(
        default=0, metadata={"help": "Fine-tune on a seeded sample of this many training conversations; 0: all."}
    )
    balance_families: bool = field(
        default=True, metadata={"help": "Repeat the smaller families' conversations to the size of the largest."}
    )
    eval_questions: int = field(default=0, metadata={"help": "Held-out arithmetic questions to score; 0: all."})
    max_new_tokens: int = field(default=24, metadata={"help": "Tokens generated per answer at most."})
    eval_batch_size: int = field(default=64)
    attn_implementation: str = field(default="sdpa", metadata={"help": "eager, sdpa, flex_attention ..."})


def conversation(question: str, answer: str) -> dict:
    """One user question and the assistant's answer, in the `messages` format of chat templates and TRL."""
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _arithmetic_question(sentence: str) -> str:
    """ "two plus three equals five." -> "what is two plus three?" """
    return f"what is {sentence.split(' equals ')[0]}?"


def _capital_question(sentence: str) -> str:
    """ "the capital of france is paris." -> "what is the capital of france?" """
    return f"what is {sentence.split(' is ')[0]}?"


def tinyworld_conversations(
    config: TinyWorldConfig | None = None, families: Sequence[str] = SFT_FAMILIES, balanced: bool = False
) -> DatasetDict:
    """TinyWorld's sentences as `messages` conversations: "train" holds every arithmetic problem the corpus may
    contain (all but the held-out ones) and every capital, "heldout" the held-out arithmetic problems, which neither
    pre-training nor fine-tuning sees. The answer is the corpus sentence itself, so the model keeps its format.
    `balanced` repeats each family's training conversations (whole times) up to the size of the largest family:
    otherwise the 30 capitals are 4% of the 787 conversations and the model answers every capital question alike."""
    unknown = sorted(set(families) - set(SFT_FAMILIES))
    if unknown or not families:
        raise ValueError(f"families={list(families)}: choose one or more of {list(SFT_FAMILIES)}.")
    world = TinyWorld(config)
    questions = {"arithmetic": _arithmetic_question, "facts": _capital_question}
    per_family = {
        family: [conversation(questions[family](sentence), sentence)
                 for sentence, _ in world.enumerate_sentences(family, None, True)]
        for family in families
    }  # fmt: skip
    largest = max(len(rows) for rows in per_family.values())
    train = [row for rows in per_family.values() for row in rows * (largest // len(rows) if balanced else 1)]
    heldout = [conversation(_arithmetic_question(p.text), p.text) for p in world.heldout_problems()]
    return DatasetDict({"train": Dataset.from_list(train), "heldout": Dataset.from_list(heldout)})


def generate_chat_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    max_new_tokens: int = 24,
    batch_size: int = 64,
) -> list[str]:
    """Greedy answers to user `questions`, each prompted as a chat with a generation prompt (left-padded batches);
    generation stops at end-of-text, which is dropped with the other special tokens."""
    model.eval()
    ids = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)["input_ids"]
           for q in questions]  # fmt: skip
    answers = greedy_continuations(model, tokenizer, ids, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return [answer.strip() for answer in answers]


def chat_exact_match(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Iterable[dict],
    max_new_tokens: int = 24,
    batch_size: int = 64,
) -> dict:
    """Exact match of the greedy answer to each conversation's user question against its assistant answer;
    `examples` holds the first few (question, answer, generated)."""
    rows = [row["messages"] for row in conversations]
    questions = [messages[0]["content"] for messages in rows]
    references = [messages[-1]["content"] for messages in rows]
    predictions = generate_chat_answers(model, tokenizer, questions, max_new_tokens, batch_size)
    result = load_metric("exact_match").compute(predictions=predictions, references=references)
    result["examples"] = [
        {"question": q, "answer": r, "generated": g}
        for q, r, g in zip(questions[:NUM_EXAMPLES], references[:NUM_EXAMPLES], predictions[:NUM_EXAMPLES], strict=True)
    ]
    return result


def load_chat_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer saved with a model, its chat template carrying `{% generation %}` markers. A folder saved
    before the template had them gets the project's template when both render a conversation identically."""
    tokenizer = load_tokenizer(path)
    template = tokenizer.chat_template
    if template is None or GENERATION_MARKER not in template:
        probe = [{"role": "system", "content": "s"}, *conversation("q", "a")["messages"]]
        rendered = tokenizer.apply_chat_template(probe, tokenize=False) if template else None
        if rendered != tokenizer.apply_chat_template(probe, tokenize=False, chat_template=CHAT_TEMPLATE):
            raise ValueError(
                f"The tokenizer in {path} has a chat template without {GENERATION_MARKER} markers around assistant "
                "turns, so the assistant-only loss cannot find them; add the markers (see "
                "hf_tinyllm.tokenization.CHAT_TEMPLATE)."
            )
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_sft_trainer(args: SFTArguments, sft_config: SFTConfig, train_dataset: Dataset | None = None) -> SFTTrainer:
    """An `SFTTrainer` over the saved model `args.model` and its tokenizer, on `train_dataset` (default: the
    TinyWorld training conversations of `args.families`)."""
    tokenizer = load_chat_tokenizer(args.model)
    model = build_training_model(ModelArguments(init_from=args.model, attn_implementation=args.attn_implementation),
                                 tokenizer)  # fmt: skip
    if train_dataset is None:
        train_dataset = tinyworld_conversations(families=args.families.split(","), balanced=args.balance_families)
        train_dataset = train_dataset["train"]
        if 0 < args.train_conversations < len(train_dataset):
            train_dataset = train_dataset.shuffle(seed=sft_config.seed).select(range(args.train_conversations))
    return SFTTrainer(model=model, args=sft_config, train_dataset=train_dataset, processing_class=tokenizer)


def run_sft(args: SFTArguments, sft_config: SFTConfig) -> dict:
    """Fine-tune `args.model` on TinyWorld conversations, save model and tokenizer to `sft_config.output_dir`, and
    return (and write to `sft_results.json` there) the held-out exact match before and after, with examples."""
    heldout = tinyworld_conversations(families=args.families.split(","))["heldout"]
    if args.eval_questions > 0:
        heldout = heldout.select(range(min(args.eval_questions, len(heldout))))
    trainer = build_sft_trainer(args, sft_config)
    model, tokenizer = trainer.model, trainer.processing_class

    def score() -> dict:
        return chat_exact_match(model, tokenizer, heldout, args.max_new_tokens, args.eval_batch_size)

    before = score()
    started = time.perf_counter()
    train_output = trainer.train()
    train_seconds = time.perf_counter() - started
    after = score()
    model.config.use_cache = True  # training turned it off; the saved model generates with a KV cache
    trainer.save_model()
    output_dir = Path(sft_config.output_dir)
    results = {
        "heldout_questions": len(heldout),
        "heldout_exact_match_before": before["exact_match"],
        "heldout_exact_match": after["exact_match"],
        "train_loss": train_output.training_loss,
        "train_seconds": train_seconds,
        "steps": trainer.state.global_step,
        "losses": [record["loss"] for record in trainer.state.log_history if "loss" in record],  # every logging_steps
        "examples": after["examples"],
    }
    if trainer.is_world_process_zero():
        write_tokenizer_files(tokenizer, output_dir)
        (output_dir / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    return results


def parse_sft_arguments(argv: list[str] | None = None) -> tuple[SFTArguments, SFTConfig]:
    """`SFTArguments` and `SFTConfig` from flags, with `SFT_DEFAULTS` in place of TRL's defaults."""
    parser = HfArgumentParser((SFTArguments, SFTConfig))
    parser.set_defaults(**SFT_DEFAULTS)
    return parser.parse_args_into_dataclasses(args=list(sys.argv[1:] if argv is None else argv))


__all__ = [
    "SFT_DEFAULTS",
    "SFTArguments",
    "build_sft_trainer",
    "chat_exact_match",
    "conversation",
    "generate_chat_answers",
    "load_chat_tokenizer",
    "parse_sft_arguments",
    "run_sft",
    "tinyworld_conversations",
]
