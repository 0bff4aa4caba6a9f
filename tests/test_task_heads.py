"""The task heads: sequence classification (last non-pad token), token classification and question answering, their
losses, Auto-class loading with and without the package, a causal-LM checkpoint under a fresh head, and a Trainer
fine-tune on a TinyWorld classification task."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from conftest import padded_batch, tiny_config, tiny_model
from transformers import (
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hf_tinyllm import (
    TinyLLMConfig,
    TinyLLMForQuestionAnswering,
    TinyLLMForSequenceClassification,
    TinyLLMForTokenClassification,
    TinyLLMPreTrainedModel,
)
from hf_tinyllm.data import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.data.tinyworld import FAMILIES

NUM_LABELS = 3
HEADS = {
    AutoModelForSequenceClassification: TinyLLMForSequenceClassification,
    AutoModelForTokenClassification: TinyLLMForTokenClassification,
    AutoModelForQuestionAnswering: TinyLLMForQuestionAnswering,
}


def tiny_head(head_class, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return head_class(tiny_config(num_labels=NUM_LABELS, **overrides)).eval()


def head_outputs(model, ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The logits of any of the three heads, as a list (QA has two)."""
    with torch.no_grad():
        out = model(ids, attention_mask=mask)
    return [out.start_logits, out.end_logits] if isinstance(model, TinyLLMForQuestionAnswering) else [out.logits]


def test_sequence_classification_pools_the_last_token_and_its_loss_is_cross_entropy(arch):
    model = tiny_head(TinyLLMForSequenceClassification, **arch)
    ids, mask = padded_batch()  # left-padded: every row's last token is real
    labels = torch.tensor([2, 0, 1])
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (3, NUM_LABELS)
    hidden = model.model(ids, attention_mask=mask).last_hidden_state  # (B, T, C)
    # Exact against the head's own operation on the same shapes (score every position, then pool): BLAS may pick
    # another kernel for `score(hidden[:, -1])`, a (B, C) input, which differs by ~1e-8 on some CPUs.
    scores = model.score(hidden)  # (B, T, num_labels)
    torch.testing.assert_close(out.logits, scores[:, -1], rtol=0, atol=0)
    torch.testing.assert_close(out.logits, model.score(hidden[:, -1]), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.logits, scores[:, -2], rtol=1e-5, atol=1e-6)  # another token pooled would fail
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels))
    assert model.config.problem_type == "single_label_classification"  # set by the first loss call


def test_token_classification_logits_and_loss_ignore_minus_100(arch):
    model = tiny_head(TinyLLMForTokenClassification, **arch)
    ids, mask = padded_batch()
    labels = torch.randint(NUM_LABELS, ids.shape, generator=torch.Generator().manual_seed(1)).masked_fill(
        mask == 0, -100
    )
    out = model(ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (*ids.shape, NUM_LABELS)
    hidden = model.model(ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(out.logits, model.score(hidden), rtol=0, atol=0)  # eval: dropout is off
    real = mask.bool()
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits[real], labels[real]))


def test_question_answering_span_logits_and_loss(arch):
    model = tiny_head(TinyLLMForQuestionAnswering, **arch)
    ids, mask = padded_batch()
    starts, ends = torch.tensor([1, 4, 7]), torch.tensor([3, 5, 8])
    out = model(ids, attention_mask=mask, start_positions=starts, end_positions=ends)
    assert out.start_logits.shape == out.end_logits.shape == ids.shape
    spans = model.qa_outputs(model.model(ids, attention_mask=mask).last_hidden_state)  # (B, T, 2)
    torch.testing.assert_close(torch.stack([out.start_logits, out.end_logits], -1), spans, rtol=0, atol=0)
    expected = (F.cross_entropy(out.start_logits, starts) + F.cross_entropy(out.end_logits, ends)) / 2
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_classification_equals_each_example_alone(arch, padding_side):
    """The pooled logit is the last non-pad token's whichever side is padded (pad id 0 never occurs inside)."""
    model = tiny_head(TinyLLMForSequenceClassification, **arch)
    left_ids, left_mask = padded_batch(lengths=(9, 6, 3))
    rows = [row[m.bool()] for row, m in zip(left_ids, left_mask, strict=True)]
    if padding_side == "left":
        ids, mask = left_ids, left_mask
    else:
        ids, mask = torch.zeros_like(left_ids), torch.zeros_like(left_mask)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # each example counts from 0, as it does alone
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, position_ids=positions).logits
        alone = torch.cat([model(row[None]).logits for row in rows])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alone[0], alone[1], atol=1e-3)  # the examples really differ


def test_batches_need_a_pad_token_id():
    model = tiny_head(TinyLLMForSequenceClassification, pad_token_id=None)
    ids, mask = padded_batch()
    with pytest.raises(ValueError, match="no padding token"):
        model(ids, attention_mask=mask)
    assert model(ids[:1]).logits.shape == (1, NUM_LABELS)  # a single example pools its last token


def test_save_names_every_auto_class_and_each_head_reloads_with_the_package(tmp_path):
    ids, mask = padded_batch()
    for auto_class, head_class in HEADS.items():
        model = tiny_head(head_class)
        path = tmp_path / head_class.__name__
        model.save_pretrained(path)
        config = json.loads((path / "config.json").read_text())
        assert config["architectures"] == [head_class.__name__]
        assert config["auto_map"] == {
            "AutoConfig": "configuration_tinyllm.TinyLLMConfig",
            **{auto: f"modeling_tinyllm.{name}" for auto, name in TinyLLMPreTrainedModel._auto_map_classes.items()},
        }
        loaded = auto_class.from_pretrained(path).eval()
        assert type(loaded) is head_class
        for got, want in zip(head_outputs(loaded, ids, mask), head_outputs(model, ids, mask), strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_auto_map_agrees_with_the_registered_auto_classes():
    for auto_name, class_name in TinyLLMPreTrainedModel._auto_map_classes.items():
        registered = getattr(transformers, auto_name)._model_mapping[TinyLLMConfig]
        assert registered.__name__ == class_name
        assert registered._auto_class == auto_name  # marked for save_pretrained


REMOTE_HEADS = """
import torch
from safetensors.torch import load_file
from transformers import (AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                          AutoModelForTokenClassification)
root, ids, mask = {root!r}, torch.tensor({ids}), torch.tensor({mask})
result = {{}}
with torch.no_grad():
    for auto, name in [(AutoModelForSequenceClassification, "TinyLLMForSequenceClassification"),
                       (AutoModelForTokenClassification, "TinyLLMForTokenClassification"),
                       (AutoModelForQuestionAnswering, "TinyLLMForQuestionAnswering")]:
        model = auto.from_pretrained(f"{{root}}/{{name}}", trust_remote_code=True).eval()
        output = model(ids, attention_mask=mask)
        logits = [output.start_logits, output.end_logits] if name.endswith("Answering") else [output.logits]
        result[name] = {{"type": type(model).__name__, "module": type(model).__module__,
                         "logits": [x.tolist() for x in logits]}}
    head = AutoModelForSequenceClassification.from_pretrained(f"{{root}}/clm", trust_remote_code=True, num_labels=2)
    saved = load_file(f"{{root}}/clm/model.safetensors")
    result["clm"] = {{"type": type(head).__name__, "score": list(head.score.weight.shape),
                     "base_equal": all(torch.equal(p, saved["model." + n]) for n, p in head.model.named_parameters())}}
"""


def test_heads_load_with_trust_remote_code_where_the_package_is_not_importable(tmp_path, without_package):
    ids, mask = padded_batch()
    expected = {}
    for head_class in HEADS.values():
        model = tiny_head(head_class)
        model.save_pretrained(tmp_path / head_class.__name__)
        expected[head_class.__name__] = head_outputs(model, ids, mask)
    tiny_model().save_pretrained(tmp_path / "clm")
    code = REMOTE_HEADS.format(root=str(tmp_path), ids=ids.tolist(), mask=mask.tolist())
    out = without_package.run(code)
    for name, logits in expected.items():
        assert out[name]["type"] == name
        assert out[name]["module"].startswith("transformers_modules")
        for got, want in zip(out[name]["logits"], logits, strict=True):
            torch.testing.assert_close(torch.tensor(got), want, rtol=1e-5, atol=1e-6)
    assert out["clm"] == {"type": "TinyLLMForSequenceClassification", "score": [2, 32], "base_equal": True}


@pytest.mark.parametrize("auto_class", list(HEADS))
def test_a_causal_lm_checkpoint_loads_under_a_fresh_head(tmp_path, arch, auto_class):
    initializer_range = 0.5  # far from nn.Linear's own init (std 1/sqrt(3 * 32) ~ 0.1), so skipping it would show
    clm = tiny_model(initializer_range=initializer_range, **arch)
    clm.save_pretrained(tmp_path)
    head = auto_class.from_pretrained(tmp_path, num_labels=NUM_LABELS).eval()
    assert type(head) is HEADS[auto_class]
    saved = clm.model.state_dict()
    assert head.model.state_dict().keys() == saved.keys()
    for name, tensor in head.model.state_dict().items():
        torch.testing.assert_close(tensor, saved[name], rtol=0, atol=0, msg=name)
    ids, mask = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(
            head.model(ids, attention_mask=mask).last_hidden_state,
            clm.model(ids, attention_mask=mask).last_hidden_state,
            rtol=0,
            atol=0,
        )  # the RoPE buffer, not in the checkpoint, was recomputed too
    new = dict(head.named_parameters())
    new = {name: p for name, p in new.items() if not name.startswith("model.")}
    weight_name = "qa_outputs.weight" if auto_class is AutoModelForQuestionAnswering else "score.weight"
    weight = new.pop(weight_name)
    assert weight.shape == ((2 if auto_class is AutoModelForQuestionAnswering else NUM_LABELS), 32)
    # _init_weights: normal(0, initializer_range), bias zero.
    assert 0.8 * initializer_range < weight.std().item() < 1.2 * initializer_range
    assert abs(weight.mean().item()) < 0.2 * initializer_range
    for bias in new.values():
        torch.testing.assert_close(bias, torch.zeros_like(bias), rtol=0, atol=0)


def one_trainer_step(head_class, output_dir, batch_size: int, accumulation: int) -> dict:
    """One SGD step of the Trainer on four examples with one label each (equal-length rows for token labels), so
    accumulating four batches of one must give the loss and gradient of one batch of four."""
    torch.manual_seed(0)
    model = head_class(tiny_config(num_labels=NUM_LABELS, classifier_dropout=0.0))
    ids, _ = padded_batch(seed=3, lengths=(6, 6, 6, 6))
    examples = []
    for i, row in enumerate(ids):
        if head_class is TinyLLMForQuestionAnswering:
            examples.append(
                {"input_ids": row, "start_positions": torch.tensor(i), "end_positions": torch.tensor(i + 1)}
            )
        elif head_class is TinyLLMForTokenClassification:
            examples.append(
                {"input_ids": row, "labels": torch.full_like(row, -100).index_fill(0, torch.tensor(i), i % 3)}
            )
        else:
            examples.append({"input_ids": row, "labels": torch.tensor(i % NUM_LABELS)})
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        optim="sgd",
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=examples)
    trainer.train()
    return trainer.state.log_history[0]


@pytest.mark.parametrize("head_class", list(HEADS.values()))
def test_trainer_gradient_accumulation_matches_one_full_batch(tmp_path, head_class):
    """Without `accepts_loss_kwargs = False` the classification heads train 4x too hard here (transformers#47688)."""
    full = one_trainer_step(head_class, tmp_path / "full", batch_size=4, accumulation=1)
    accumulated = one_trainer_step(head_class, tmp_path / "accumulated", batch_size=1, accumulation=4)
    assert accumulated["loss"] == pytest.approx(full["loss"], rel=1e-5)
    assert accumulated["grad_norm"] == pytest.approx(full["grad_norm"], rel=1e-4)


# ---- A fine-tune with transformers.Trainer: which TinyWorld family (arithmetic, royalty, facts, sayings) a text is.


def family_classification_data(tokenizer, num_train: int, num_validation: int, max_length: int = 32):
    """TinyWorld documents tokenised (first `max_length` tokens) with their family's index as the label."""
    world = tinyworld_dataset(
        TinyWorldConfig(seed=7, num_train_documents=num_train, num_validation_documents=num_validation)
    )

    def encode(batch):
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        encoded["labels"] = [FAMILIES.index(family) for family in batch["family"]]
        return encoded

    columns = world["train"].column_names
    return (world[split].map(encode, batched=True, remove_columns=columns) for split in ("train", "validation"))


def finetune_family_classifier(
    model_dir: str | Path,
    output_dir: str | Path,
    num_train: int = 320,
    num_validation: int = 200,
    steps: int = 30,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[float, float]:
    """Load the causal LM in `model_dir` under a fresh classification head, fine-tune it with the Trainer on CPU
    (batches right-padded by `DataCollatorWithPadding`) and return the validation accuracy before and after."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    train, validation = family_classification_data(tokenizer, num_train, num_validation)
    transformers.set_seed(seed)  # the fresh head is drawn while loading, before the Trainer seeds anything
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(FAMILIES),
        id2label=dict(enumerate(FAMILIES)),
        label2id={f: i for i, f in enumerate(FAMILIES)},
    )
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=100,
        max_steps=steps,
        learning_rate=lr,
        weight_decay=0.0,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
    )

    def accuracy(prediction) -> dict[str, float]:
        return {"accuracy": float((prediction.predictions.argmax(-1) == prediction.label_ids).mean())}

    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
    )
    before = trainer.evaluate()["eval_accuracy"]
    trainer.train()
    return before, trainer.evaluate()["eval_accuracy"]


def test_trainer_finetunes_a_trained_causal_lm_into_a_family_classifier(trained_tiny_dir, tmp_path):
    before, after = finetune_family_classifier(trained_tiny_dir, tmp_path)
    assert before < 0.6  # the fresh head has not learnt the task (0.51 with this seed; two families are 35% each)
    assert after >= 0.95
