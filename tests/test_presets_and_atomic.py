import multiprocessing
import os
import signal

import pytest
import torch

from hf_tinyllm.atomic import atomic_directory
from hf_tinyllm.faults import CRASH_ENV
from hf_tinyllm.presets import PRESETS, build_model, preset_config


@pytest.mark.parametrize(
    ("name", "low", "high"),
    [("debug", 1e4, 5e4), ("nano", 0.8e6, 1.3e6), ("micro", 8e6, 12e6), ("small", 118e6, 130e6)],
)
def test_presets_build_in_one_call_with_their_advertised_size(name, low, high):
    with torch.device("meta"):  # sizes only: no memory, no init
        model = build_model(name)
    assert low <= model.num_parameters() <= high


def test_small_preset_matches_gpt2_small_widths():
    config = preset_config("small")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 12, 12)


def test_nano_preset_runs_and_overrides_apply():
    model = build_model("nano", vocab_size=300)
    assert model.config.vocab_size == 300
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 300)


def test_every_preset_is_a_valid_config():
    for name in PRESETS:
        preset_config(name)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ValueError, match=r"Unknown preset 'huge'; choose one of \['debug', 'micro', 'nano', 'small'\]"):
        build_model("huge")


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed mid-save")
    assert (target / "a.txt").read_text() == "first"

    with atomic_directory(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_directory_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(FileExistsError, match="exists and is not a folder"), atomic_directory(tmp_path / "out"):
        pass


def _replace_and_die(src, dst, crash_at: str, exchange: bool) -> None:
    """In a forked child: replace `dst` by `src`, SIGKILLed at the named crash point."""
    import hf_tinyllm.atomic as atomic

    os.environ[CRASH_ENV] = crash_at
    if not exchange:
        atomic._exchange = lambda a, b: False  # as on a system without renameat2(RENAME_EXCHANGE)
    atomic.replace_directory(src, dst)


def _kill_between_the_steps(tmp_path, crash_at: str, exchange: bool):
    dst, src = tmp_path / "model", tmp_path / ".model.tmp-1"
    for folder, text in ((dst, "old"), (src, "new")):
        folder.mkdir()
        (folder / "weights").write_text(text)
    child = multiprocessing.get_context("fork").Process(target=_replace_and_die, args=(src, dst, crash_at, exchange))
    child.start()
    child.join(60)
    assert child.exitcode == -signal.SIGKILL
    return dst


def test_a_kill_inside_the_final_replace_never_leaves_the_folder_missing(tmp_path):
    dst = _kill_between_the_steps(tmp_path, "replace-exchanged", exchange=True)
    assert (dst / "weights").read_text() == "new"  # one atomic exchange: the new folder is in place


def test_without_an_atomic_exchange_the_next_save_restores_the_old_folder(tmp_path):
    dst = _kill_between_the_steps(tmp_path, "replace-moved-old-away", exchange=False)
    assert not dst.exists()  # the window of the two-rename fallback ...
    with pytest.raises(RuntimeError), atomic_directory(dst):
        raise RuntimeError("the next save fails too")
    assert (dst / "weights").read_text() == "old"  # ... closed by the next start, even a failed one
    assert [p.name for p in tmp_path.iterdir() if ".old-" in p.name] == []
