# Source from the repository root on the borrowed GPU machine (x86-64, Python 3.12, no network):
#     source benchmarks/gpu_env.sh && python benchmarks/bench_gpu_train.py --output_json gpu.json
# It installs the wheels carried in .whl (ignored by git: pass it to the device run with carry [".whl"]) into
# /tmp/site, beside the machine's own torch and accelerate, and puts them and this checkout first on PYTHONPATH.
# The image has torch 2.11 (CUDA), accelerate 1.15, transformers 5.17, tokenizers 0.23.2, huggingface_hub 1.33,
# pyarrow, pandas, numpy, ... but no datasets, evaluate, dill, multiprocess or gguf. .whl holds, at the versions of
# constraints/tested.txt: transformers, huggingface_hub, tokenizers, datasets, evaluate, dill, multiprocess, gguf, and
# the requirements of theirs the image may lack or hold too old: hf_xet, httpx2, httpcore2, h11, anyio, idna,
# truststore, click, fsspec (datasets: <=2026.9.0), requests, urllib3, certifi, charset_normalizer, regex,
# typing_extensions. Made here with
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#         --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#         -d .whl NAME==VERSION
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || return 1
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_UPDATE_DOWNLOAD_COUNTS=0 \
    TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
python3 - <<'PY'
import importlib

for name in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "huggingface_hub", "pyarrow", "numpy"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as error:  # noqa: BLE001
        print(name, "FAILED", type(error).__name__, error)
try:
    import pyarrow

    if int(pyarrow.__version__.split(".")[0]) < 24:
        print("WARNING: datasets 5.2 wants pyarrow>=24; this image has", pyarrow.__version__)
except ImportError:
    pass
try:
    import torch

    print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
except Exception as error:  # noqa: BLE001
    print("cuda: FAILED", error)
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
