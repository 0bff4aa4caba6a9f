"""Supervised fine-tuning with TRL: TinyWorld conversations, the assistant-only loss mask, a short run that saves a
reloadable folder whose model answers a training question in the assistant's format."""

import json
import re

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_tinyllm  # noqa: F401  (registers TinyLLM with the Auto classes)
from hf_tinyllm.data import TinyWorldConfig
from hf_tinyllm.tokenization import CHAT_TEMPLATE, load_tokenizer, write_tokenizer_files
from hf_tinyllm.training.sft import (
    SFT_DEFAULTS,
    SFTArguments,
    build_sft_trainer,
    generate_chat_answers,
    load_chat_tokenizer,
    parse_sft_arguments,
    run_sft,
    tinyworld_conversations,
)

# The template before it marked assistant turns: renders the same text, has no {% generation %} markers.
TEMPLATE_WITHOUT_MARKERS = (
    "{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def sft_config(output_dir, **overrides):
    _, config = parse_sft_arguments(["--output_dir", str(output_dir), "--disable_tqdm", "true"])
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


def test_conversations_keep_heldout_arithmetic_out_of_training():
    data = tinyworld_conversations()
    train = {row["messages"][0]["content"]: row["messages"][1]["content"] for row in data["train"]}
    assert train["what is two plus three?"] == "two plus three equals five."
    assert train["what is the capital of france?"] == "the capital of france is paris."
    assert train["what is seven times eight?"] == "seven times eight equals fifty six."
    heldout = [row["messages"] for row in data["heldout"]]
    assert heldout and not {m[0]["content"] for m in heldout} & set(train)
    world_heldout = tinyworld_conversations(TinyWorldConfig(heldout_fraction=0.0))["heldout"]
    assert len(world_heldout) == 0
    # 21*21 plus, 21*22/2 minus (a >= b), 13*13 times problems, less the held-out ones, plus 30 capitals
    assert len(data["train"]) + len(heldout) == 441 + 231 + 169 + 30
    assert {m[1]["role"] for m in heldout} == {"assistant"}
    balanced = [row["messages"][0]["content"] for row in tinyworld_conversations(balanced=True)["train"]]
    arithmetic = len(data["train"]) - 30
    assert len(balanced) == arithmetic + 30 * (arithmetic // 30)  # each capital repeated, arithmetic once
    assert balanced.count("what is the capital of france?") == arithmetic // 30
    with pytest.raises(ValueError, match="sayings"):
        tinyworld_conversations(families=["sayings"])


def test_collated_labels_are_the_assistant_tokens_only(trained_tiny_dir, tmp_path):
    conversations = tinyworld_conversations()["train"].select([3, 700, 200, 786])  # arithmetic and a capital
    trainer = build_sft_trainer(SFTArguments(model=str(trained_tiny_dir)), sft_config(tmp_path), conversations)
    tokenizer = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(conversations))])
    assistant = tokenizer.convert_tokens_to_ids("<|assistant|>")
    for row, messages in enumerate(conversations["messages"]):
        ids = tokenizer.apply_chat_template(messages)["input_ids"]
        start = ids.index(assistant) + 1  # the answer's first token: after the assistant's role token
        expected = [-100] * start + ids[start:]
        width = batch["labels"].shape[1]
        assert batch["input_ids"][row, : len(ids)].tolist() == ids
        assert batch["labels"][row].tolist() == expected + [-100] * (width - len(ids))
        trained = [i for i in batch["labels"][row].tolist() if i != -100]
        assert tokenizer.decode(trained) == messages[1]["content"] + tokenizer.eos_token  # the stop token is trained


@pytest.mark.filterwarnings("error:'pin_memory' argument is set as true:UserWarning")  # no pinning without a device
def test_sft_run_saves_a_model_that_answers_in_the_assistant_format(trained_tiny_dir, tmp_path):
    args = SFTArguments(model=str(trained_tiny_dir), train_conversations=8, eval_questions=4, max_new_tokens=16)
    config = sft_config(tmp_path / "sft", max_steps=40, per_device_train_batch_size=8, learning_rate=5e-3,
                        warmup_steps=5, logging_steps=5)  # fmt: skip
    results = run_sft(args, config)
    assert results["steps"] == 40 and results["heldout_questions"] == 4
    assert len(results["losses"]) == 8 and results["losses"][-1] < results["losses"][0] / 10
    assert json.loads((tmp_path / "sft" / "sft_results.json").read_text()) == results

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sft")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "sft")
    # The held-out exact match before and after, recomputed from the saved folders.
    heldout = tinyworld_conversations(families=args.families.split(","))["heldout"].select(range(4))
    questions = [m[0]["content"] for m in heldout["messages"]]
    references = [m[1]["content"] for m in heldout["messages"]]
    for folder, key in ((trained_tiny_dir, "heldout_exact_match_before"), (tmp_path / "sft", "heldout_exact_match")):
        answers = generate_chat_answers(AutoModelForCausalLM.from_pretrained(folder), load_chat_tokenizer(folder),
                                        questions, 16)  # fmt: skip
        assert results[key] == sum(a == r for a, r in zip(answers, references, strict=True)) / len(references), key
    assert "{% generation %}" in tokenizer.chat_template
    trained = tinyworld_conversations(balanced=True)["train"].shuffle(seed=config.seed).select(range(8))
    questions = [m[0]["content"] for m in trained["messages"]]
    answers = generate_chat_answers(model, tokenizer, questions, max_new_tokens=16)
    assert answers == [m[1]["content"] for m in trained["messages"]]  # memorised, and stopped at end-of-text


def test_a_template_without_generation_markers_is_upgraded_or_refused(trained_tiny_dir, tmp_path):
    tokenizer = load_tokenizer(trained_tiny_dir)
    tokenizer.chat_template = TEMPLATE_WITHOUT_MARKERS
    write_tokenizer_files(tokenizer, tmp_path / "old")
    assert load_chat_tokenizer(tmp_path / "old").chat_template == CHAT_TEMPLATE
    tokenizer.chat_template = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    write_tokenizer_files(tokenizer, tmp_path / "other")
    with pytest.raises(ValueError, match=re.escape("without {% generation %} markers")):
        load_chat_tokenizer(tmp_path / "other")


def test_defaults_suit_a_tiny_model_on_cpu():
    args, config = parse_sft_arguments(["--max_steps", "7"])
    assert config.max_steps == 7 and config.assistant_only_loss and not config.bf16
    assert not config.activation_checkpointing and config.learning_rate == SFT_DEFAULTS["learning_rate"]
    assert config.dataloader_pin_memory == torch.accelerator.is_available()
    assert args.model == "outputs/demo/model"
