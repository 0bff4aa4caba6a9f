"""What a Hugging Face Space serving the studio of one Hub model holds: `app.py`, the `hf_tinyllm` package itself
(it is not on PyPI, so the Space imports the bundled copy), `requirements.txt` and a `README.md` whose front matter
configures the Space (https://huggingface.co/docs/hub/spaces-config-reference). `hf_tinyllm.hub.push_space` pushes it.
"""

from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path

PACKAGE = "hf_tinyllm"
# setup.cfg's install_requires (a test checks they agree) plus what the page itself needs.
INSTALL_REQUIRES = (
    "torch>=2.13,<3",
    "transformers>=5.23,<6",
    "accelerate>=1.15,<2",
    "datasets>=5.2,<6",
    "tokenizers>=0.23.3,<0.24",
    "safetensors>=0.8,<1",
    "evaluate>=0.4.6,<0.5",
    "huggingface_hub>=2.4,<3",
    "pyyaml>=6",
    "matplotlib>=3.10,<4",
    "gguf>=0.19,<1",
    "torchdata>=0.11,<0.12",
)
STUDIO_REQUIRES = ("gradio>=6.31,<7", "plotly>=7.1,<8")
REQUIREMENTS = INSTALL_REQUIRES + STUDIO_REQUIRES
SKIPPED = {"__pycache__"}  # folders not bundled
SKIPPED_SUFFIXES = {".pyc", ".pyo"}

APP = '''"""TinyLLM studio for {model_id}: an interactive page over the model (https://huggingface.co/{model_id}).
The `hf_tinyllm` folder next to this file is the library itself (it is not on PyPI)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bundled hf_tinyllm before any installed copy

import hf_tinyllm  # noqa: E402
from hf_tinyllm.studio import serve  # noqa: E402

MODEL_ID = "{model_id}"

if __name__ == "__main__":
    print(f"hf_tinyllm {{hf_tinyllm.__version__}} from {{Path(hf_tinyllm.__file__).parent}}", flush=True)
    # Spaces set GRADIO_SERVER_NAME / GRADIO_SERVER_PORT; elsewhere, PORT or Gradio's 7860.
    host = os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0")
    port = int(os.environ.get("GRADIO_SERVER_PORT") or os.environ.get("PORT") or 7860)
    serve(MODEL_ID, host=host, port=port)
'''

README = """---
{front_matter}---

# TinyLLM studio: {model_id}

An interactive page over [{model_id}](https://huggingface.co/{model_id}): guess the next word before the model does,
look through its layers, at its word geometry, and generate text. The page is `tinyllm studio` from the
`hf_tinyllm` library, which this Space bundles (in `hf_tinyllm/`).

Run it locally: `pip install -r requirements.txt && python app.py`.
"""


def gradio_version() -> str:
    """The Space's `sdk_version`: the installed Gradio when it fits `STUDIO_REQUIRES`, else the lowest that does."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    requirement = Requirement(STUDIO_REQUIRES[0])
    lowest = Version(next(s.version for s in requirement.specifier if s.operator == ">="))
    try:
        installed = metadata.version("gradio")
    except metadata.PackageNotFoundError:
        installed = None
    if installed is not None and requirement.specifier.contains(installed):
        return installed
    return f"{lowest.major}.{lowest.minor}.{lowest.micro}"


def front_matter(model_id: str, license: str = "apache-2.0") -> dict:
    """The Space configuration (README front matter) for the studio of `model_id`."""
    return {
        "title": f"TinyLLM studio: {model_id.split('/')[-1]}"[:60],
        "emoji": "🔬",
        "colorFrom": "blue",
        "colorTo": "indigo",
        "sdk": "gradio",
        "sdk_version": gradio_version(),
        "app_file": "app.py",
        "models": [model_id],
        "pinned": False,
        "license": license,
    }


def package_files() -> dict[str, bytes]:
    """The files of the installed `hf_tinyllm` package, by their path in the Space (`hf_tinyllm/...`), read through
    `importlib.resources` (so from a wheel or a checkout alike), without caches."""

    def walk(node: Traversable, prefix: str) -> dict[str, bytes]:
        files = {}
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            path = f"{prefix}/{child.name}"
            if child.is_dir() and child.name not in SKIPPED:
                files.update(walk(child, path))
            elif child.is_file() and Path(child.name).suffix not in SKIPPED_SUFFIXES:
                files[path] = child.read_bytes()
        return files

    return walk(resources.files(PACKAGE), PACKAGE)


def space_files(model_id: str, license: str = "apache-2.0") -> dict[str, bytes | str]:
    """Everything the Space repository for the studio of the Hub model `model_id` (user/name) holds, by path."""
    import yaml
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(model_id)  # HFValidationError (a ValueError) on characters a Hub id cannot hold
    if model_id.count("/") != 1:
        raise ValueError(f"model_id={model_id!r} must be a full Hub id, user/name.")
    matter = yaml.safe_dump(front_matter(model_id, license), sort_keys=False, allow_unicode=True)
    return {
        "app.py": APP.format(model_id=model_id),
        "requirements.txt": "\n".join(REQUIREMENTS) + "\n",
        "README.md": README.format(front_matter=matter, model_id=model_id),
        **package_files(),
    }


def write_space(folder: str | Path, model_id: str, **options) -> Path:
    """Write `space_files(model_id, **options)` into `folder`; return it."""
    folder = Path(folder)
    for name, content in space_files(model_id, **options).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    return folder


__all__ = ["REQUIREMENTS", "front_matter", "gradio_version", "package_files", "space_files", "write_space"]
