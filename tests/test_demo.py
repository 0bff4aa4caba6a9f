import subprocess
import sys

from conftest import REPO_ROOT
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from hf_tinyllm import TinyLLMForCausalLM


def test_demo_script_runs_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "scripts/demo.py",
            "--preset",
            "debug",
            "--output_dir",
            str(tmp_path),
            "--max_new_tokens",
            "5",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "max |logits difference| = 0.0e+00" in result.stdout
    assert "Exported a plain LlamaForCausalLM" in result.stdout
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "model"), TinyLLMForCausalLM)
    assert isinstance(AutoModelForCausalLM.from_pretrained(tmp_path / "llama"), LlamaForCausalLM)
