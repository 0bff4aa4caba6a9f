"""Shared fixtures: tiny seeded configs (transformers' tester sizes), a subprocess runner for isolation tests and one
shared interpreter without the package for the loads that must not see it."""

import json
import logging
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import pytest
import torch
from python_worker import PythonWorker
from transformers import PreTrainedTokenizerFast

from hf_tinyllm import TinyLLMConfig, TinyLLMForCausalLM
from hf_tinyllm.data import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.tokenization import save_tokenizer, train_tokenizer, write_tokenizer_files

REPO_ROOT = Path(__file__).resolve().parents[1]

# datasets sends a HEAD request to a download counter on S3 at every load_dataset, local files included; on a machine
# without network that can wait out a 5 s DNS timeout. Off in this process (datasets read the variable on import) and
# in every process the tests start.
os.environ["HF_UPDATE_DOWNLOAD_COUNTS"] = "0"
datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False


class _DeprecationRecords(logging.Handler):
    """The deprecation notices a library logs (transformers announces renames with `logger.warning_once`)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "deprecat" in record.getMessage().lower():
            self.messages.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture(autouse=True)
def no_logged_deprecations() -> Iterator[None]:
    """A test during which transformers, accelerate or datasets log a deprecation fails, as one that triggers a
    DeprecationWarning does (setup.cfg's filterwarnings): the next rename shows the day it is announced."""
    handler = _DeprecationRecords()
    loggers = [logging.getLogger(name) for name in ("transformers", "accelerate", "datasets")]
    for logger in loggers:
        logger.addHandler(handler)
    yield
    for logger in loggers:
        logger.removeHandler(handler)
    assert not handler.messages, f"a library logged a deprecation about these calls: {handler.messages[0]}"


# The architecture variants every behavioural test runs on: Llama-style, GPT-2-style, and the remaining switches.
ARCHITECTURES = {
    "llama": dict(),
    "gpt2": dict(
        position_embedding_type="learned", norm_type="layernorm", mlp_type="gelu", attention_bias=True, mlp_bias=True
    ),
    "qknorm_relu2": dict(qk_norm=True, mlp_type="relu2", norm_type="layernorm", tie_word_embeddings=False),
}


GOLDEN_MODEL = REPO_ROOT / "tests" / "golden" / "tinyllm-debug"
CODE_0_1_0 = REPO_ROOT / "tests" / "fixtures" / "remote_code_0.1.0"  # the model code hf_tinyllm 0.1.0 shipped


def folder_saved_by_0_1_0(dest: Path) -> Path:
    """The golden model as hf_tinyllm 0.1.0 saved it: its model code (which breaks on transformers 5.24 and later)
    and no `tinyllm_code_version` in config.json."""
    folder = Path(shutil.copytree(GOLDEN_MODEL, dest))
    for source in CODE_0_1_0.glob("*.py"):
        shutil.copy(source, folder / source.name)
    config = json.loads((folder / "config.json").read_text())
    del config["tinyllm_code_version"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def tiny_config(**overrides) -> TinyLLMConfig:
    fields = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    return TinyLLMConfig(**{**fields, **overrides})


def tiny_model(seed: int = 0, **overrides) -> TinyLLMForCausalLM:
    torch.manual_seed(seed)
    return TinyLLMForCausalLM(tiny_config(**overrides)).eval()


@pytest.fixture(params=sorted(ARCHITECTURES))
def arch(request) -> dict:
    """Config overrides of one architecture variant."""
    return ARCHITECTURES[request.param]


def padded_batch(seed: int = 0, vocab: int = 99, lengths=(9, 6, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded token ids (B, T) with pad id 0 and their attention mask; real tokens are in [3, vocab)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = torch.randint(3, vocab, (n,), generator=gen)
        mask[row, width - n :] = 1
    return ids, mask


def run_python(code: str, *, env: dict | None = None, cwd: Path | None = None, timeout: int = 300) -> str:
    """Run `code` in a fresh interpreter; return stdout, failing the test with stderr if it exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr[-4000:]}"
    return result.stdout


# Prepended to subprocess code that must behave like a machine without the package: `import hf_tinyllm` then
# raises ImportError even though the package is installed in this environment.
WITHOUT_HF_TINYLLM = """
import sys
sys.modules["hf_tinyllm"] = None
try:
    import hf_tinyllm  # noqa: F401
    raise SystemExit("hf_tinyllm is importable; the isolation did not work")
except ImportError:
    pass
"""


# Run in the shared worker before each test that uses it: the isolation still holds (no snippet imported the package).
_STILL_WITHOUT_HF_TINYLLM = """
import sys
loaded = [name for name, module in sys.modules.items() if name.split(".")[0] == "hf_tinyllm" and module is not None]
try:
    import hf_tinyllm  # noqa: F401
    importable = True
except ImportError:
    importable = False
result = {"importable": importable, "loaded": loaded}
"""


@pytest.fixture(scope="session")
def _without_package_worker(tmp_path_factory) -> Iterator[PythonWorker]:
    root = tmp_path_factory.mktemp("without_package")
    hf_home = root / "hf_home"
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "HF_MODULES_CACHE": str(hf_home / "modules")}
    with PythonWorker(env, prelude=WITHOUT_HF_TINYLLM, cwd=root) as worker:
        yield worker


@pytest.fixture
def without_package(_without_package_worker) -> PythonWorker:
    """One interpreter for the whole session that behaves like a machine without the package (`import hf_tinyllm`
    fails), offline, with its own HF_HOME: the tests that load saved folders there as a Hub user would pay the import
    of torch and transformers once, not once per load. A snippet returns what it assigns to `result`.

    Remote code is copied under HF_MODULES_CACHE per folder name and hash of its source files, and imported once per
    such module: load each test's model from its own folder (under tmp_path), and check that the class came from
    `transformers_modules`. Use `run_python` instead for a test that needs a process of its own."""
    assert _without_package_worker.run(_STILL_WITHOUT_HF_TINYLLM) == {"importable": False, "loaded": []}
    return _without_package_worker


def expect_user_error(call: Callable[[], object], capsys) -> str:
    """Run an entry point in-process, expecting a user error: exit status 2 and one `error: ...` line, the last on
    stderr, no traceback. Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        call()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress bars may come before it
    assert last.startswith("error: ") and "Traceback" not in err and err.count("error: ") == 1, err
    return last


@contextmanager
def transformers_verbosity_kept() -> Iterator[None]:
    """Restore transformers' logging verbosity after the block: scripts quiet it for their reports, the next tests
    need it."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def run_script(script: str, argv: list[str], *, training: bool = False) -> None:
    """`python SCRIPT ARGV...` (SCRIPT relative to the repository, e.g. "scripts/train.py") in this process, run as
    `__main__`; sys.argv and transformers' verbosity are restored afterwards. A training script gets a fresh
    Accelerate state first. Exits (a user error) propagate as SystemExit."""
    if training:
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    saved = sys.argv
    sys.argv = [script, *argv]
    try:
        with transformers_verbosity_kept():
            runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
    finally:
        sys.argv = saved


def script_output(script: str, argv: list[str], capsys, *, training: bool = False) -> str:
    """`run_script`, expecting success (no exit status other than 0); returns what it printed on stdout."""
    capsys.readouterr()
    try:
        run_script(script, argv, training=training)
    except SystemExit as exit_info:
        if exit_info.code not in (0, None):
            pytest.fail(f"{script} exited with status {exit_info.code}:\n{capsys.readouterr().err[-4000:]}")
    return capsys.readouterr().out


def cli_user_error(argv: list[str], capsys) -> str:
    """`expect_user_error` for `tinyllm ARGV`."""
    from hf_tinyllm.cli import main

    return expect_user_error(lambda: main(argv), capsys)


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture
def word_tokenizer() -> PreTrainedTokenizerFast:
    """A 99-token word-level fast tokenizer (pad 0, bos 1, eos 2) matching the tiny configs' vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3}
    vocab.update({f"w{i}": i for i in range(4, 99)})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        padding_side="left",
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for a module that trains tiny models (faster than two on a shared CPU, and the results
    do not depend on it); restored afterwards. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    """A 300-token tokenizer trained on a small TinyWorld, saved once for the training tests."""
    path = tmp_path_factory.mktemp("tok") / "tokenizer"
    world = tinyworld_dataset(TinyWorldConfig(num_train_documents=600, num_validation_documents=20))
    return str(save_tokenizer(train_tokenizer(world["train"], vocab_size=300), path))


@pytest.fixture(scope="session")
def trained_tiny_dir(tmp_path_factory) -> Path:
    """A debug-size TinyLLM trained for 150 AdamW steps on 2000 TinyWorld documents, saved with its 512-token
    tokenizer (large enough that king, queen, man, woman ... are single tokens): the model the insight, explain and
    probe tests look into."""
    from hf_tinyllm.data.packing import pack_dataset, tokenize_dataset
    from hf_tinyllm.presets import build_model
    from hf_tinyllm.tokenization import model_overrides_for

    world = tinyworld_dataset(TinyWorldConfig(num_train_documents=2000, num_validation_documents=20))
    tokenizer = train_tokenizer(world["train"], vocab_size=512)
    blocks = pack_dataset(tokenize_dataset(world["train"], tokenizer), 64, document_positions=True,
                          bos_token_id=tokenizer.bos_token_id)  # fmt: skip
    ids, positions = torch.tensor(blocks["input_ids"]), torch.tensor(blocks["position_ids"])
    torch.manual_seed(0)
    model = build_model("debug", hidden_size=64, intermediate_size=128, **model_overrides_for(tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(150):
        rows = torch.randint(len(ids), (16,), generator=gen)
        loss = model(input_ids=ids[rows], position_ids=positions[rows], labels=ids[rows], use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    path = tmp_path_factory.mktemp("trained") / "model"
    model.eval().save_pretrained(path)
    write_tokenizer_files(tokenizer, path)
    return path


@pytest.fixture(scope="session")
def timeline_run_dir(tokenizer_dir, tmp_path_factory) -> Path:
    """A debug TinyLLM trained by the Accelerate loop for 6 steps with the learning probes and a snapshot every 2
    steps: the run folder, whose `model/` holds the weights, the training records and `timeline/` (steps 0, 2, 4, 6).
    The model the studio's timeline and export tests scrub through."""
    from accelerate.state import AcceleratorState

    from hf_tinyllm.training import parse_train_arguments, train

    output = tmp_path_factory.mktemp("timeline_run") / "run"
    AcceleratorState._reset_state(reset_partial_state=True)
    train(*parse_train_arguments([
        "--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "600", "--block_size", "32",
        "--per_device_batch_size", "4", "--max_steps", "6", "--warmup_steps", "2", "--learning_rate", "3e-3",
        "--eval_steps", "0", "--eval_documents", "10", "--logging_steps", "1", "--report_to", "none",
        "--probe_steps", "2", "--probe_documents", "2", "--output_dir", str(output),
    ]))  # fmt: skip
    return output
