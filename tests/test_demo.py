import subprocess
import sys

from conftest import REPO_ROOT
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_tinyllm import TinyLLMForCausalLM


def test_demo_script_runs_end_to_end(tmp_path):
    """The README's main job on a tiny budget: every stage runs and the model folder it reports loads."""
    cmd = [sys.executable, "scripts/demo.py", "--preset", "debug", "--max_steps", "4", "--output_dir", str(tmp_path)]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for stage in ("1. TinyWorld", "exact entropy floor 0.2683", "3. Trained", "bits per byte vs floor 0.2683",
                  "held-out arithmetic exact match", "how it learned", "step    4: king - man + woman -> queen at rank",
                  "4. Saved to", "two plus three equals |", "Done in"):  # fmt: skip
        assert stage in out, stage
    model_dir = tmp_path / "model"
    assert isinstance(AutoModelForCausalLM.from_pretrained(model_dir), TinyLLMForCausalLM)
    assert AutoTokenizer.from_pretrained(model_dir).pad_token == "<|pad|>"
    assert (model_dir / "loss_curve.png").stat().st_size > 0
    assert (model_dir / "learning_curves.png").stat().st_size > 0
