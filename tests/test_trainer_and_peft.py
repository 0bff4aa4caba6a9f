"""The model inside transformers' Trainer (gradient accumulation) and PEFT LoRA."""

import pytest
import torch
from conftest import padded_batch, tiny_model
from transformers import Trainer, TrainingArguments

from hf_tinyllm import TinyLLMForCausalLM


def right_padded_examples():
    """Four sequences of very different lengths: mean-of-means would weigh them wrongly."""
    ids, mask = padded_batch(seed=3, lengths=(12, 3, 8, 5))
    return [{"input_ids": row[m.bool()].tolist()} for row, m in zip(ids, mask, strict=True)]


def collate(examples):
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(examples):
        ids[row, : len(e["input_ids"])] = torch.tensor(e["input_ids"])
        mask[row, : len(e["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


def one_trainer_step(tmp_path, batch_size: int, accumulation: int) -> tuple[dict, TinyLLMForCausalLM]:
    model = tiny_model(seed=0).train()
    args = TrainingArguments(
        output_dir=str(tmp_path / f"bs{batch_size}_ga{accumulation}"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",  # the update is then proportional to the gradient, so a mis-scaled gradient shows
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=right_padded_examples(), data_collator=collate)
    trainer.train()
    return trainer.state.log_history[0], model


def test_trainer_gradient_accumulation_matches_one_full_batch(tmp_path):
    full_log, full_model = one_trainer_step(tmp_path, batch_size=4, accumulation=1)
    accumulated_log, accumulated_model = one_trainer_step(tmp_path, batch_size=1, accumulation=4)
    assert accumulated_log["loss"] == pytest.approx(full_log["loss"], rel=1e-5)
    assert accumulated_log["grad_norm"] == pytest.approx(full_log["grad_norm"], rel=1e-4)
    for (name, a), b in zip(full_model.named_parameters(), accumulated_model.parameters(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    # The step really changed the weights (the comparison above is not between two untouched models).
    assert not torch.allclose(full_model.model.embed_tokens.weight, tiny_model(seed=0).model.embed_tokens.weight)


@pytest.mark.parametrize(
    "target_modules", ["all-linear", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]]
)
def test_lora_trains_and_its_adapter_reloads(tmp_path, target_modules):
    from peft import LoraConfig, PeftModel, get_peft_model

    base_path = tmp_path / "base"
    # A wider init gives the frozen (tied) head logits large enough for a rank-4 adapter to move the loss far.
    tiny_model(seed=0, initializer_range=0.2).save_pretrained(base_path)
    model = get_peft_model(
        TinyLLMForCausalLM.from_pretrained(base_path), LoraConfig(r=4, target_modules=target_modules)
    )
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("down_proj.lora_A" in n for n in trainable) and any("q_proj.lora_B" in n for n in trainable)

    ids, mask = padded_batch()
    labels = ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    losses = []
    for _ in range(40):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
    reloaded = PeftModel.from_pretrained(TinyLLMForCausalLM.from_pretrained(base_path), tmp_path / "adapter").eval()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(input_ids=ids, attention_mask=mask).logits, model(input_ids=ids, attention_mask=mask).logits
        )
        base_logits = TinyLLMForCausalLM.from_pretrained(base_path)(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(reloaded(input_ids=ids, attention_mask=mask).logits, base_logits)
