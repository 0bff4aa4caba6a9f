import torch
from conftest import script_output
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_tinyllm import TinyLLMForCausalLM
from hf_tinyllm.studio.handlers import Studio


def test_demo_script_runs_end_to_end(tmp_path, capsys):
    """The README's main job on a tiny budget: every stage runs and the model folder it reports loads."""
    argv = ["--preset", "debug", "--max_steps", "4", "--output_dir", str(tmp_path)]
    out = script_output("scripts/demo.py", argv, capsys, training=True)
    for stage in ("1. TinyWorld", "exact entropy floor 0.2683", "3. Trained",
                  "for the true distribution on the same documents (+",
                  "the corpus floor, its expectation over all TinyWorld text, is 0.2683",
                  "held-out arithmetic exact match", "how it learned", "step    4: king - man + woman -> queen at rank",
                  "4. Saved to", "two plus three equals |", "5. The training timeline: 5 snapshots",
                  "Done in"):  # fmt: skip
        assert stage in out, stage
    model_dir = tmp_path / "model"
    assert isinstance(AutoModelForCausalLM.from_pretrained(model_dir), TinyLLMForCausalLM)
    assert AutoTokenizer.from_pretrained(model_dir).pad_token == "<|pad|>"
    for plot in ("loss_curve.png", "learning_curves.png"):
        assert (model_dir / plot).read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), plot
    # The timeline the studio scrubs: a snapshot at every probe step (4 // 8 -> every step), the last the saved model.
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    studio = Studio(model, AutoTokenizer.from_pretrained(model_dir), model_dir)
    assert studio.steps == [0, 1, 2, 3, 4] and studio.model_at(4) is studio.final
    assert not torch.equal(studio.model_at(0).lm_head.weight, model.lm_head.weight)
