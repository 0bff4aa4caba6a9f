"""The golden model: a committed debug-size TinyLLM folder (tests/golden/tinyllm-debug, ~250 KB) with its remote code,
loaded where hf_tinyllm is not importable, must give the logits and greedy tokens stored beside it (recorded with
transformers 5.23) under every release CI runs: the lock, the newest, each release in between and the minimum.

It also carries the refresh command's round trip: the same folder with the model code hf_tinyllm 0.1.0 shipped
(tests/fixtures/remote_code_0.1.0) is refreshed in place and then gives the golden tokens too.
"""

import json
import shutil
from pathlib import Path

import pytest
import transformers
from conftest import CODE_0_1_0, GOLDEN_MODEL, REPO_ROOT, cli_user_error, folder_saved_by_0_1_0

from hf_tinyllm.cli import main
from hf_tinyllm.configuration_tinyllm import TINYLLM_CODE_VERSION
from hf_tinyllm.remote_code import REMOTE_CODE_FILES, current_code

GOLDEN = REPO_ROOT / "tests" / "golden"
FOLDER = GOLDEN_MODEL
EXPECTED = json.loads((GOLDEN / "tinyllm-debug.expected.json").read_text())
OLD_CODE = CODE_0_1_0
MEASURE = (GOLDEN / "measure.py").read_text()


def measured(worker, folder: Path | str) -> dict:
    """`measure` (tests/golden/measure.py) of a folder or Hub repository, in `worker`."""
    return worker.run(f"{MEASURE}\nresult = measure({str(folder)!r})\n")


def assert_golden(got: dict) -> None:
    assert got["module"] == "transformers_modules", "the golden model must run as remote code"
    assert got["input_ids"] == EXPECTED["input_ids"], "the tokenizer encodes the prompts differently"
    for case, tokens in EXPECTED["greedy"].items():
        assert got["greedy"][case] == tokens, (
            f"{case}: {got['greedy'][case]} != {tokens} (expected {EXPECTED['texts']})"
        )
    for got_row, want_row in zip(got["last_logits"], EXPECTED["last_logits"], strict=True):
        worst = max(abs(a - b) for a, b in zip(got_row, want_row, strict=True))
        assert worst < 1e-4, f"last-position logits moved by {worst:.2e} on transformers {transformers.__version__}"


def test_the_golden_folder_carries_the_current_code():
    """Else refresh it: `tinyllm refresh-code tests/golden/tinyllm-debug`, then `python tests/golden/record.py` only
    if the numerics changed on purpose."""
    shipped = {name: (FOLDER / name).read_bytes() for name in REMOTE_CODE_FILES}
    assert shipped == current_code(), "run: tinyllm refresh-code tests/golden/tinyllm-debug"
    assert json.loads((FOLDER / "config.json").read_text())["tinyllm_code_version"] == TINYLLM_CODE_VERSION


def test_golden_logits_and_greedy_tokens_without_the_package(without_package, tmp_path):
    folder = shutil.copytree(FOLDER, tmp_path / "golden")  # a folder of its own: a fresh remote-code module
    got = measured(without_package, folder)
    assert_golden(got)
    # the stored greedy continuations are the model's own, not degenerate: the prompts continue differently
    assert len({tuple(row) for row in EXPECTED["greedy"]["alone, use_cache=True"]}) == 3


def test_refresh_code_brings_a_folder_saved_by_0_1_0_up_to_date(without_package, tmp_path, capsys):
    folder = folder_saved_by_0_1_0(tmp_path / "saved-by-0.1.0")
    weights = (folder / "model.safetensors").read_bytes()

    main(["refresh-code", str(folder)])
    report = capsys.readouterr().out
    assert "config.json, configuration_tinyllm.py, generation_tinyllm.py, modeling_tinyllm.py" in report, report
    assert "an hf_tinyllm before 0.2.0 (no version recorded) -> hf_tinyllm " + TINYLLM_CODE_VERSION in report
    for name in (*REMOTE_CODE_FILES, "config.json"):
        assert (folder / name).read_bytes() == (FOLDER / name).read_bytes(), name
    assert (folder / "model.safetensors").read_bytes() == weights  # weights untouched
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert_golden(measured(without_package, folder))

    main(["refresh-code", str(folder)])
    assert "nothing changed" in capsys.readouterr().out


def test_refresh_code_refuses_what_is_not_a_tinyllm_folder(tmp_path, capsys):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    message = cli_user_error(["refresh-code", str(tmp_path / "llama")], capsys)
    assert "holds a 'llama' model, not a TinyLLM" in message
    (tmp_path / "empty").mkdir()
    assert "has no config.json" in cli_user_error(["refresh-code", str(tmp_path / "empty")], capsys)


@pytest.mark.parametrize("name", REMOTE_CODE_FILES)
def test_the_old_code_fixture_is_what_0_1_0_shipped(name):
    """The fixture stands for folders saved before this release: it must differ from today's code (else the refresh
    test above proves nothing) and is the code that broke on transformers 5.24 (`past_key_values` only)."""
    old = (OLD_CODE / name).read_bytes()
    assert old != current_code()[name]
    if name == "modeling_tinyllm.py":
        assert b"past_key_values=past_key_values" in old and b"resolve_cache" not in old
