# Source on the borrowed GPU machine (no network): install the wheels carried in .whl (the tested transformers,
# datasets, huggingface_hub, tokenizers and what they need that the machine's image lacks) beside its own torch.
# Make .whl here with `python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 ...` (see
# /work/.library/device/README.md); the list is the one in the closing note of issue 22.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || return 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 - <<'PY'
import importlib
for name in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "huggingface_hub", "pyarrow", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:  # noqa: BLE001
        print(name, "FAILED", type(error).__name__, error)
try:
    from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    print("torch varlen_attn: yes")
except ImportError as error:
    print("torch varlen_attn: no", error)
try:
    import flash_attn
    print("flash_attn", flash_attn.__version__)
except ImportError:
    print("flash_attn: not installed")
PY
