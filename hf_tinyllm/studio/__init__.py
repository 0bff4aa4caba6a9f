"""`tinyllm studio`: an interactive page (Gradio) over `hf_tinyllm.insight` for one model: be the model, through the
layers, geometry, how it learned, generate. Runs locally and as a Hugging Face Space (`tinyllm push --space`)."""

from pathlib import Path

DEFAULT_MODEL = "outputs/demo/model"


def serve(name_or_path: str, host: str = "127.0.0.1", port: int = 7860, share: bool = False, **launch_options):
    """Load a model folder or Hub id with its tokenizer and serve its studio page (blocking unless
    `prevent_thread_lock=True`); returns what `gradio.Blocks.launch` returns."""
    from ..explain import load_model_and_tokenizer
    from .app import build_app

    model, tokenizer = load_model_and_tokenizer(name_or_path)
    run_dir = Path(name_or_path) if Path(name_or_path).is_dir() else None
    app = build_app(model, tokenizer, run_dir=run_dir)
    print(f"TinyLLM studio for {name_or_path}: http://{host}:{port}", flush=True)
    return app.launch(server_name=host, server_port=port, share=share, **launch_options)


def build_app(*args, **kwargs):
    """`hf_tinyllm.studio.app.build_app` (imported on use: gradio is an optional dependency)."""
    from .app import build_app as build

    return build(*args, **kwargs)


__all__ = ["DEFAULT_MODEL", "build_app", "serve"]
