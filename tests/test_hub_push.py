"""Sharing on the Hub, end to end against the offline Hub-compatible server (tests/fake_hub.py): every flow pushes
with the real clients in one process and loads back in a fresh process, with a fresh cache and WITHOUT hf_tinyllm
importable, as a Hub user would."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import REPO_ROOT, WITHOUT_HF_TINYLLM, last_json_line, tiny_model
from fake_hub import FakeHub
from huggingface_hub import ModelCard

from hf_tinyllm.tokenization import train_tokenizer

TOKEN = "hf_test_token"
CORPUS = ["two plus three equals five.", "the queen walked to the palace with the king."] * 30


@pytest.fixture(scope="module")
def hub():
    with FakeHub(tokens={TOKEN: "tester", "hf_other": "intruder"}) as server:
        yield server


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    """A saved TinyLLM folder with its tokenizer, training summary and plot, as a training run leaves it."""
    from hf_tinyllm.tokenization import model_overrides_for, write_tokenizer_files

    folder = tmp_path_factory.mktemp("model") / "model"
    tokenizer = train_tokenizer(CORPUS, vocab_size=300)
    model = tiny_model(**model_overrides_for(tokenizer))
    model.save_pretrained(folder)
    write_tokenizer_files(tokenizer, folder)
    summary = {"steps": 3, "tokens_seen": 384, "wall_time_s": 1.5, "parameters": model.num_parameters(),
               "hardware": {"device": "cpu", "num_processes": 1, "mixed_precision": "no", "torch": torch.__version__},
               "final_metrics": {"bits_per_byte": 0.31, "floor_bits_per_byte": 0.25, "gap_to_floor": 0.24,
                                 "perplexity": 2.1, "arithmetic_exact_match": 0.5}}  # fmt: skip
    (folder / "training_summary.json").write_text(json.dumps(summary))
    (folder / "loss_curve.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 64)
    return folder


def client(hub: FakeHub, code: str, tmp_path, token: str | None = TOKEN, isolate: bool = False, **env) -> dict:
    """Run `code` in a fresh interpreter pointed at the fake Hub; return the JSON it prints last."""
    home = tmp_path / f"hf_home_{len(list(tmp_path.glob('hf_home_*')))}"
    full_env = {**os.environ, **hub.client_env(token=token, hf_home=home), **env}
    if token is None:
        full_env.pop("HF_TOKEN", None)
    prefix = WITHOUT_HF_TINYLLM if isolate else ""
    result = subprocess.run([sys.executable, "-c", prefix + code], cwd=tmp_path, env=full_env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert TOKEN not in result.stdout + result.stderr  # the token is never printed or logged
    return last_json_line(result.stdout)


LOAD = """
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
kw = {kw}
model = AutoModelForCausalLM.from_pretrained({repo!r}, revision={revision!r}, **kw).eval()
tokenizer = AutoTokenizer.from_pretrained({repo!r}, revision={revision!r}, **kw)
ids = tokenizer("two plus three equals", return_tensors="pt")
with torch.no_grad():
    logits = model(**ids).logits
print(json.dumps({{"module": type(model).__module__, "class": type(model).__name__, "logits": logits.tolist(),
                  "ids": ids["input_ids"].tolist()}}))
"""


def load_back(hub, repo, tmp_path, revision="main", remote_code=True) -> dict:
    kw = {"trust_remote_code": True} if remote_code else {}
    return client(hub, LOAD.format(repo=repo, revision=revision, kw=kw), tmp_path, isolate=True)


def local_logits(folder, ids) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder).eval()(torch.tensor(ids)).logits


def test_model_and_tokenizer_push_to_hub_round_trip(hub, model_folder, tmp_path):
    code = f"""
import json, hf_tinyllm
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained({str(model_folder)!r})
tokenizer = AutoTokenizer.from_pretrained({str(model_folder)!r})
model.push_to_hub("tester/mixin")
tokenizer.push_to_hub("tester/mixin")
print(json.dumps({{"ok": True}}))
"""
    hub.clear_requests()
    client(hub, code, tmp_path)
    used = hub.endpoints_used()
    for endpoint in (
        "POST /api/repos/create",
        "POST /api/models/{repo}/preupload/{rev}",
        "POST /api/models/{repo}/commit/{rev}",
    ):
        assert endpoint in used, (endpoint, sorted(used))
    files = hub.files("tester/mixin")
    assert {"config.json", "model.safetensors", "configuration_tinyllm.py", "modeling_tinyllm.py", "tokenizer.json",
            "generation_config.json"} <= files.keys()  # fmt: skip
    out = load_back(hub, "tester/mixin", tmp_path)
    assert out["module"].startswith("transformers_modules")
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(model_folder, out["ids"]), rtol=0, atol=1e-6)


PUSH = """
import json
from hf_tinyllm.hub import push
url = push({folder!r}, {repo!r}, **{options})
print(json.dumps({{"url": url}}))
"""


def test_hf_tinyllm_push_round_trip_with_card(hub, model_folder, tmp_path):
    before = {p.name: p.read_bytes() for p in model_folder.iterdir()}
    hub.clear_requests()
    client(hub, PUSH.format(folder=str(model_folder), repo="tester/tiny", options={}), tmp_path)
    assert {p.name: p.read_bytes() for p in model_folder.iterdir()} == before  # the local folder is untouched
    files = hub.files("tester/tiny")
    expected = {".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors",
                "configuration_tinyllm.py", "modeling_tinyllm.py", "tokenizer.json", "tokenizer_config.json",
                "chat_template.jinja", "training_summary.json", "loss_curve.png"}  # fmt: skip
    assert set(files) == expected
    config = json.loads(files["config.json"])
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM",
                                       "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                                       "AutoModelForQuestionAnswering"}  # fmt: skip
    card = ModelCard(files["README.md"].decode())
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "text-generation"
    assert {"tinyllm", "custom_code"} <= set(metadata["tags"]) and metadata["license"] == "apache-2.0"
    metric_types = {m["type"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    assert {"perplexity", "bits_per_byte", "bits_per_byte_floor", "exact_match"} <= metric_types
    assert metadata["model-index"][0]["name"] == "tiny"
    assert card.data.eval_results and "trust_remote_code=True" in card.text
    assert "fine-tuned version of" not in card.text
    out = load_back(hub, "tester/tiny", tmp_path)
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(model_folder, out["ids"]), rtol=0, atol=1e-6)
    # LFS went through the CDN port, which refuses the token.
    cdn = [r for r in hub.requests if r.port == "cdn"]
    assert cdn and not any(r.authorized for r in cdn)

    # Re-pushing the unchanged folder makes no commit.
    commits = len(hub.commits("tester/tiny"))
    client(hub, PUSH.format(folder=str(model_folder), repo="tester/tiny", options={}), tmp_path)
    assert len(hub.commits("tester/tiny")) == commits


def test_push_to_a_branch_and_a_sharded_checkpoint(hub, model_folder, tmp_path):
    options = {"revision": "v2", "commit_message": "second version"}
    client(hub, PUSH.format(folder=str(model_folder), repo="tester/branchy", options=options), tmp_path)
    assert "model.safetensors" in hub.files("tester/branchy", revision="v2")
    assert "model.safetensors" not in hub.files("tester/branchy", revision="main")
    out = load_back(hub, "tester/branchy", tmp_path, revision="v2")
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(model_folder, out["ids"]), rtol=0, atol=1e-6)

    code = f"""
import json
from transformers import AutoModelForCausalLM, AutoTokenizer
from hf_tinyllm.hub import push
model = AutoModelForCausalLM.from_pretrained({str(model_folder)!r})
tokenizer = AutoTokenizer.from_pretrained({str(model_folder)!r})
print(json.dumps({{"url": push((model, tokenizer), "tester/sharded", max_shard_size="20KB")}}))
"""
    client(hub, code, tmp_path)
    files = hub.files("tester/sharded")
    shards = [name for name in files if name.startswith("model-") and name.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files
    out = load_back(hub, "tester/sharded", tmp_path)
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(model_folder, out["ids"]), rtol=0, atol=1e-6)


def test_llama_export_loads_without_remote_code(hub, model_folder, tmp_path):
    client(hub, PUSH.format(folder=str(model_folder), repo="tester/tiny-llama", options={"llama": True}), tmp_path)
    files = hub.files("tester/tiny-llama")
    assert json.loads(files["config.json"])["model_type"] == "llama"
    assert not any(name.endswith(".py") for name in files)
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert "custom_code" not in metadata["tags"]
    out = load_back(hub, "tester/tiny-llama", tmp_path, remote_code=False)
    assert out["class"] == "LlamaForCausalLM" and out["module"].startswith("transformers.models.llama")
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(model_folder, out["ids"]), rtol=0, atol=1e-5)


def test_training_scripts_push_to_hub(hub, tokenizer_dir, tmp_path):
    common = ["--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "300", "--block_size", "32",
              "--max_steps", "2", "--warmup_steps", "0", "--report_to", "none", "--push_to_hub"]  # fmt: skip
    loop = [sys.executable, "scripts/train.py", *common, "--per_device_batch_size", "4", "--eval_documents", "5",
            "--output_dir", str(tmp_path / "loop"), "--hub_model_id", "tester/from-loop"]  # fmt: skip
    trainer = [sys.executable, "scripts/train_trainer.py", *common, "--per_device_train_batch_size", "4", "--use_cpu",
               "--output_dir", str(tmp_path / "trainer"), "--hub_model_id", "from-trainer",
               "--save_strategy", "no"]  # fmt: skip
    for cmd in (loop, trainer):
        env = {**os.environ, **hub.client_env(token=TOKEN, hf_home=tmp_path / "hf_push")}
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-4000:]
        assert TOKEN not in result.stdout + result.stderr
    for repo, folder in (
        ("tester/from-loop", tmp_path / "loop" / "model"),
        ("tester/from-trainer", tmp_path / "trainer"),
    ):
        files = hub.files(repo)
        assert {"README.md", "model.safetensors", "modeling_tinyllm.py", "tokenizer.json"} <= files.keys(), repo
        card = files["README.md"].decode()
        assert "pipeline_tag: text-generation" in card and "fine-tuned version of []" not in card
        out = load_back(hub, repo, tmp_path)
        torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(folder, out["ids"]), rtol=0, atol=1e-6)
    # The token is in no file the runs wrote.
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path


ERRORS = """
import json
from hf_tinyllm.hub import HubError, push
try:
    push({folder!r}, {repo!r})
    print(json.dumps({{"error": None}}))
except HubError as err:
    print(json.dumps({{"error": str(err)}}))
"""


def test_push_errors_are_clear_and_leave_everything_untouched(hub, model_folder, tmp_path):
    before = {p.name: p.read_bytes() for p in model_folder.iterdir()}
    code = ERRORS.format(folder=str(model_folder), repo="tester/guarded")
    assert "Not logged in" in client(hub, code, tmp_path, token=None)["error"]
    client(hub, PUSH.format(folder=str(model_folder), repo="tester/guarded", options={}), tmp_path)
    commits = len(hub.commits("tester/guarded"))
    denied = client(hub, code, tmp_path, token="hf_other")["error"]
    assert "No permission to write to tester/guarded" in denied
    assert len(hub.commits("tester/guarded")) == commits
    unreachable = client(hub, code, tmp_path, HF_ENDPOINT="http://127.0.0.1:9")["error"]
    assert "Cannot reach the Hugging Face Hub" in unreachable
    assert {p.name: p.read_bytes() for p in model_folder.iterdir()} == before


@pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("TINYLLM_LIVE_HUB")),
    reason="live Hub test: set HF_TOKEN and TINYLLM_LIVE_HUB=1 (needs network)",
)
def test_round_trip_against_the_real_hub(model_folder, tmp_path):  # pragma: no cover - needs network
    from huggingface_hub import HfApi

    from hf_tinyllm.hub import push

    api = HfApi()
    repo = f"{api.whoami()['name']}/tinyllm-live-test"
    push(model_folder, repo, private=True)
    code = LOAD.format(repo=repo, revision="main", kw={"trust_remote_code": True})
    result = subprocess.run([sys.executable, "-c", WITHOUT_HF_TINYLLM + code], capture_output=True, text=True,
                            env={**os.environ, "HF_HOME": str(tmp_path / "hf")}, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = last_json_line(result.stdout)
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(model_folder, out["ids"]), rtol=0, atol=1e-6)
    api.delete_repo(repo)


def test_private_repository_and_pull_request(hub, model_folder, tmp_path):
    client(hub, PUSH.format(folder=str(model_folder), repo="tester/secret", options={"private": True}), tmp_path)
    assert hub.is_private("tester/secret")
    url = client(hub, PUSH.format(folder=str(model_folder), repo="tester/tiny-pr", options={}), tmp_path)["url"]
    main_before = hub.head("tester/tiny-pr")
    (tmp_path / "changed").mkdir()
    for path in model_folder.iterdir():
        (tmp_path / "changed" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "changed" / "training_summary.json").write_text(json.dumps({"steps": 4, "tokens_seen": 512}))
    options = {"create_pr": True, "commit_message": "longer run"}
    pr_url = client(hub, PUSH.format(folder=str(tmp_path / "changed"), repo="tester/tiny-pr", options=options),
                    tmp_path)["url"]  # fmt: skip
    assert "/discussions/1" in pr_url and pr_url != url
    assert hub.head("tester/tiny-pr") == main_before  # main is untouched until the PR is merged
    assert json.loads(hub.files("tester/tiny-pr", revision="refs/pr/1")["training_summary.json"])["steps"] == 4


TOKEN_ROUTES = """
import json, runpy, sys
from hf_tinyllm.cli import main
from hf_tinyllm.hub import push

folder, token = {folder!r}, {token!r}
push(folder, "tester/by-argument", token=token)
main(["push", folder, "tester/by-cli-flag", "--token", token])
sys.argv = ["push_to_hub.py", folder, "tester/by-script", "--token", token]
runpy.run_path({script!r}, run_name="__main__")
statuses = []
for repo, bad in (("tester/refused", "hf_wrong_secret"), ("intruder/refused", token)):  # 401, then 403
    try:
        main(["push", folder, repo, "--token", bad])
    except SystemExit as stop:
        statuses.append(stop.code)
print(json.dumps({{"statuses": statuses}}))
"""


def test_a_token_passed_any_way_never_leaks(hub, model_folder, tmp_path):
    """token=, --token, scripts/push_to_hub.py and refused pushes: the token is never printed (the client helper
    checks stdout and stderr) nor written into the local folder or any pushed file."""
    code = TOKEN_ROUTES.format(folder=str(model_folder), token=TOKEN, script=str(REPO_ROOT / "scripts/push_to_hub.py"))
    out = client(hub, code, tmp_path, token=None)  # no HF_TOKEN: only the explicit routes carry the token
    assert out["statuses"] == [2, 2]
    for repo in ("tester/by-argument", "tester/by-cli-flag", "tester/by-script"):
        files = hub.files(repo)
        assert "model.safetensors" in files and not any(TOKEN.encode() in data for data in files.values()), repo
    assert not any(TOKEN.encode() in p.read_bytes() for p in model_folder.rglob("*") if p.is_file())
