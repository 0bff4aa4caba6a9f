"""`tinyllm studio`: an interactive page (Gradio) over `hf_tinyllm.insight` for one model: be the model, through the
layers, geometry, how it learned, generate. Runs locally and as a Hugging Face Space (`tinyllm push --space`)."""

from pathlib import Path

DEFAULT_MODEL = "outputs/demo/model"


def serve(
    name_or_path: str,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    fast_decode: bool = False,
    train_dir: str | Path | None = None,
    **launch_options,
):
    """Load a model folder or Hub id with its tokenizer and serve its studio page (blocking unless
    `prevent_thread_lock=True`); returns what `gradio.Blocks.launch` returns. `fast_decode`: the page generates
    through the compiled static-cache loop (generation_tinyllm), compiled here before serving. `train_dir`: the Train
    tab's runs go there (None: no Train tab)."""
    from ..explain import load_model_and_tokenizer
    from .app import build_app

    model, tokenizer = load_model_and_tokenizer(name_or_path)
    if fast_decode:
        print(f"fast_decode: compiled the decode step in {warm_up_fast_decode(model, tokenizer):.1f} s", flush=True)
    app = build_app(model, tokenizer, run_dir=training_records_dir(name_or_path), train_dir=train_dir)
    print(f"TinyLLM studio for {name_or_path}: http://{host}:{port}", flush=True)
    return app.launch(server_name=host, server_port=port, share=share, **launch_options)


def warm_up_fast_decode(model, tokenizer) -> float:
    """Switch `model`'s generation to fast_decode and compile its batch-1 decode step (the page generates one text
    at a time; cache lengths round up to 64, so longer generations compile once more); returns the seconds taken."""
    import time

    import torch

    model.generation_config.fast_decode = True
    ids = tokenizer("warm up", return_tensors="pt")["input_ids"][:, :8]
    start = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                   pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return time.perf_counter() - start


def training_records_dir(name_or_path: str) -> Path | None:
    """The folder holding a model's training records: the model folder itself, or for a Hub id the records
    downloaded from the repository (they travel with the weights); None when they cannot be had."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    from ..model_card import TIMELINE_DIR, TRAINING_RECORDS

    try:
        patterns = [*TRAINING_RECORDS, f"{TIMELINE_DIR}/*"]  # the records and the timeline travel with the weights
        return Path(snapshot_download(name_or_path, allow_patterns=patterns))
    except Exception:  # offline, private or gone: the page says the records are missing
        return None


def build_app(*args, **kwargs):
    """`hf_tinyllm.studio.app.build_app` (imported on use: gradio is an optional dependency)."""
    from .app import build_app as build

    return build(*args, **kwargs)


__all__ = ["DEFAULT_MODEL", "build_app", "serve", "training_records_dir", "warm_up_fast_decode"]
