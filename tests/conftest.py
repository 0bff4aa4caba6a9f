"""Shared fixtures: tiny seeded configs (transformers' tester sizes) and a subprocess runner for isolation tests."""

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from hf_tinyllm import TinyLLMConfig, TinyLLMForCausalLM
from hf_tinyllm.data import TinyWorldConfig, tinyworld_dataset
from hf_tinyllm.tokenization import save_tokenizer, train_tokenizer, write_tokenizer_files

REPO_ROOT = Path(__file__).resolve().parents[1]

# The architecture variants every behavioural test runs on: Llama-style, GPT-2-style, and the remaining switches.
ARCHITECTURES = {
    "llama": dict(),
    "gpt2": dict(
        position_embedding_type="learned", norm_type="layernorm", mlp_type="gelu", attention_bias=True, mlp_bias=True
    ),
    "qknorm_relu2": dict(qk_norm=True, mlp_type="relu2", norm_type="layernorm", tie_word_embeddings=False),
}


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
