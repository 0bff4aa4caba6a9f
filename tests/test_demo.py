import runpy
import sys

from accelerate.state import AcceleratorState
from conftest import REPO_ROOT
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from hf_tinyllm import TinyLLMForCausalLM


def test_demo_script_runs_end_to_end(tmp_path, monkeypatch, capsys):
    """The README's main job on a tiny budget: every stage runs and the model folder it reports loads."""
    AcceleratorState._reset_state(reset_partial_state=True)
    argv = ["scripts/demo.py", "--preset", "debug", "--max_steps", "4", "--output_dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    verbosity = hf_logging.get_verbosity()
    try:
        runpy.run_path(str(REPO_ROOT / "scripts/demo.py"), run_name="__main__")
    finally:
        hf_logging.set_verbosity(verbosity)  # the demo quiets transformers for its report; the next tests need it
    out = capsys.readouterr().out
    for stage in ("1. TinyWorld", "exact entropy floor 0.2683", "3. Trained", "bits per byte vs floor 0.2683",
                  "held-out arithmetic exact match", "how it learned", "step    4: king - man + woman -> queen at rank",
                  "4. Saved to", "two plus three equals |", "Done in"):  # fmt: skip
        assert stage in out, stage
    model_dir = tmp_path / "model"
    assert isinstance(AutoModelForCausalLM.from_pretrained(model_dir), TinyLLMForCausalLM)
    assert AutoTokenizer.from_pretrained(model_dir).pad_token == "<|pad|>"
    for plot in ("loss_curve.png", "learning_curves.png"):
        assert (model_dir / plot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), plot
