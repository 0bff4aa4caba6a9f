"""Sharing on the Hub, end to end against the offline Hub-compatible server (tests/fake_hub.py): every flow pushes
with the real clients (in this process, pointed at the server by `hub_client`) and loads back in another process
with a fresh cache and WITHOUT hf_tinyllm importable, as a Hub user would (one worker interpreter per module,
`PythonWorker`, so the loads share one import of torch and transformers)."""

import json
import os
from contextlib import contextmanager

import pytest
import torch
import yaml
from conftest import WITHOUT_HF_TINYLLM, run_script, tiny_model
from fake_hub import FakeHub, hub_client, never_shows
from huggingface_hub import ModelCard
from python_worker import PythonWorker

from hf_tinyllm.hub import HubError, push
from hf_tinyllm.tokenization import train_tokenizer

TOKEN = "hf_test_token"
CORPUS = ["two plus three equals five.", "the queen walked to the palace with the king."] * 30


@pytest.fixture(scope="module")
def hub():
    with FakeHub(tokens={TOKEN: "tester", "hf_other": "intruder"}) as server:
        yield server


@pytest.fixture(scope="module")
def loader(hub, tmp_path_factory):
    """The interpreter the pushed models are loaded in: hf_tinyllm is not importable there."""
    env = hub.client_env(token=TOKEN, hf_home=tmp_path_factory.mktemp("hf_load"))
    with PythonWorker(env, prelude=WITHOUT_HF_TINYLLM) as worker:
        yield worker
        assert TOKEN not in worker.output()  # the token is never printed or logged while loading


shown = never_shows(TOKEN)  # nothing a test prints or logs contains the token


@contextmanager
def pushing(hub: FakeHub, tmp_path, token: str | None = TOKEN, **env):
    """This process's client pointed at the fake Hub with `token` (None: no token at all) and a fresh HF_HOME."""
    home = tmp_path / f"hf_home_{len(list(tmp_path.glob('hf_home_*')))}"
    with hub_client({**hub.client_env(token=token, hf_home=home), **env}):
        yield


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


LOAD = """
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
kw = dict({kw}, revision={revision!r}, cache_dir={cache!r})
model = AutoModelForCausalLM.from_pretrained({repo!r}, **kw).eval()
tokenizer = AutoTokenizer.from_pretrained({repo!r}, **kw)
ids = tokenizer("two plus three equals", return_tensors="pt")
with torch.no_grad():
    logits = model(**ids).logits
result = {{"module": type(model).__module__, "class": type(model).__name__, "logits": logits.tolist(),
          "ids": ids["input_ids"].tolist()}}
"""


def load_back(loader: PythonWorker, repo, tmp_path, revision="main", remote_code=True) -> dict:
    """Load `repo` from the fake Hub in the worker, into a fresh cache."""
    kw = {"trust_remote_code": True} if remote_code else {}
    cache = tmp_path / f"hf_cache_{len(list(tmp_path.glob('hf_cache_*')))}"
    return loader.run(LOAD.format(repo=repo, revision=revision, kw=kw, cache=str(cache)))


def local_logits(folder, ids) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(folder).eval()(torch.tensor(ids)).logits


def assert_loads_like(loader, repo, tmp_path, folder, atol=1e-6, **kw) -> dict:
    out = load_back(loader, repo, tmp_path, **kw)
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(folder, out["ids"]), rtol=0, atol=atol)
    return out


def test_model_and_tokenizer_push_to_hub_round_trip(hub, loader, model_folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hub.clear_requests()
    with pushing(hub, tmp_path):
        AutoModelForCausalLM.from_pretrained(model_folder).push_to_hub("tester/mixin")
        AutoTokenizer.from_pretrained(model_folder).push_to_hub("tester/mixin")
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
    out = assert_loads_like(loader, "tester/mixin", tmp_path, model_folder)
    assert out["module"].startswith("transformers_modules")


def test_hf_tinyllm_push_round_trip_with_card(hub, loader, model_folder, tmp_path):
    before = {p.name: p.read_bytes() for p in model_folder.iterdir()}
    hub.clear_requests()
    with pushing(hub, tmp_path):
        push(model_folder, "tester/tiny")
    assert {p.name: p.read_bytes() for p in model_folder.iterdir()} == before  # the local folder is untouched
    files = hub.files("tester/tiny")
    expected = {".gitattributes", "README.md", "config.json", "generation_config.json", "model.safetensors",
                "configuration_tinyllm.py", "modeling_tinyllm.py", "generation_tinyllm.py", "tokenizer.json",
                "tokenizer_config.json", "chat_template.jinja", "training_summary.json", "loss_curve.png"}  # fmt: skip
    assert set(files) == expected
    config = json.loads(files["config.json"])
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoModelForCausalLM",
                                       "AutoModelForSequenceClassification", "AutoModelForTokenClassification",
                                       "AutoModelForQuestionAnswering"}  # fmt: skip
    card = ModelCard(files["README.md"].decode())
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "text-generation"
    assert {"tinyllm", "custom_code"} <= set(metadata["tags"]) and metadata["license"] == "apache-2.0"
    metrics = {m["type"]: m["value"] for m in metadata["model-index"][0]["results"][0]["metrics"]}
    # The card's numbers are the summary's, not made up: perplexity, bits per byte, the floor, exact match.
    assert metrics == {"perplexity": 2.1, "bits_per_byte": 0.31, "bits_per_byte_floor": 0.25, "exact_match": 0.5}
    assert metadata["model-index"][0]["name"] == "tiny"
    assert card.data.eval_results and "trust_remote_code=True" in card.text
    assert "fine-tuned version of" not in card.text
    assert_loads_like(loader, "tester/tiny", tmp_path, model_folder)
    # LFS went through the CDN port, which refuses the token.
    cdn = [r for r in hub.requests if r.port == "cdn"]
    assert cdn and not any(r.authorized for r in cdn)

    # Re-pushing the unchanged folder makes no commit.
    commits = len(hub.commits("tester/tiny"))
    with pushing(hub, tmp_path):
        push(model_folder, "tester/tiny")
    assert len(hub.commits("tester/tiny")) == commits


def test_push_to_a_branch_and_a_sharded_checkpoint(hub, loader, model_folder, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with pushing(hub, tmp_path):
        push(model_folder, "tester/branchy", revision="v2", commit_message="second version")
        model = AutoModelForCausalLM.from_pretrained(model_folder)
        tokenizer = AutoTokenizer.from_pretrained(model_folder)
        push((model, tokenizer), "tester/sharded", max_shard_size="20KB")
    assert "model.safetensors" in hub.files("tester/branchy", revision="v2")
    assert "model.safetensors" not in hub.files("tester/branchy", revision="main")
    assert hub.commits("tester/branchy", branch="v2")[0].title == "second version"
    assert_loads_like(loader, "tester/branchy", tmp_path, model_folder, revision="v2")

    files = hub.files("tester/sharded")
    shards = [name for name in files if name.startswith("model-") and name.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files
    assert_loads_like(loader, "tester/sharded", tmp_path, model_folder)


def test_llama_export_loads_without_remote_code(hub, loader, model_folder, tmp_path):
    with pushing(hub, tmp_path):
        push(model_folder, "tester/tiny-llama", llama=True)
    files = hub.files("tester/tiny-llama")
    assert json.loads(files["config.json"])["model_type"] == "llama"
    assert not any(name.endswith(".py") for name in files)
    metadata = yaml.safe_load(files["README.md"].decode().split("---")[1])
    assert "custom_code" not in metadata["tags"]
    out = assert_loads_like(loader, "tester/tiny-llama", tmp_path, model_folder, atol=1e-5, remote_code=False)
    assert out["class"] == "LlamaForCausalLM" and out["module"].startswith("transformers.models.llama")


def test_training_scripts_push_to_hub(hub, loader, tokenizer_dir, tmp_path):
    common = ["--preset", "debug", "--tokenizer", tokenizer_dir, "--tinyworld_documents", "300", "--block_size", "32",
              "--max_steps", "2", "--warmup_steps", "0", "--report_to", "none", "--push_to_hub"]  # fmt: skip
    loop = [*common, "--per_device_batch_size", "4", "--eval_documents", "5", "--output_dir", str(tmp_path / "loop"),
            "--hub_model_id", "tester/from-loop"]  # fmt: skip
    trainer = [*common, "--per_device_train_batch_size", "4", "--use_cpu", "--output_dir", str(tmp_path / "trainer"),
               "--hub_model_id", "from-trainer", "--save_strategy", "no"]  # fmt: skip
    with pushing(hub, tmp_path):
        run_script("scripts/train.py", loop, training=True)
        run_script("scripts/train_trainer.py", trainer, training=True)
    for repo, folder in (
        ("tester/from-loop", tmp_path / "loop" / "model"),
        ("tester/from-trainer", tmp_path / "trainer"),
    ):
        files = hub.files(repo)
        assert {"README.md", "model.safetensors", "modeling_tinyllm.py", "tokenizer.json"} <= files.keys(), repo
        card = files["README.md"].decode()
        assert "pipeline_tag: text-generation" in card and "fine-tuned version of []" not in card
        assert_loads_like(loader, repo, tmp_path, folder)
    # The token is in no file the runs wrote.
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert TOKEN.encode() not in path.read_bytes(), path


def push_error(hub, tmp_path, folder, repo, token=TOKEN, **env) -> str:
    with pushing(hub, tmp_path, token=token, **env), pytest.raises(HubError) as error:
        push(folder, repo)
    return str(error.value)


def test_push_errors_are_clear_and_leave_everything_untouched(hub, model_folder, tmp_path):
    before = {p.name: p.read_bytes() for p in model_folder.iterdir()}
    assert "Not logged in" in push_error(hub, tmp_path, model_folder, "tester/guarded", token=None)
    assert not hub.repo_exists("tester/guarded")
    with pushing(hub, tmp_path):
        push(model_folder, "tester/guarded")
    commits = len(hub.commits("tester/guarded"))
    denied = push_error(hub, tmp_path, model_folder, "tester/guarded", token="hf_other")
    assert "No permission to write to tester/guarded" in denied
    assert len(hub.commits("tester/guarded")) == commits
    unreachable = push_error(hub, tmp_path, model_folder, "tester/guarded", HF_ENDPOINT="http://127.0.0.1:9")
    assert "Cannot reach the Hugging Face Hub" in unreachable
    assert {p.name: p.read_bytes() for p in model_folder.iterdir()} == before


@pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("TINYLLM_LIVE_HUB")),
    reason="live Hub test: set HF_TOKEN and TINYLLM_LIVE_HUB=1 (needs network)",
)
def test_round_trip_against_the_real_hub(model_folder, tmp_path):  # pragma: no cover - needs network
    from huggingface_hub import HfApi

    api = HfApi()
    repo = f"{api.whoami()['name']}/tinyllm-live-test"
    push(model_folder, repo, private=True)
    with PythonWorker({"HF_HOME": str(tmp_path / "hf")}, prelude=WITHOUT_HF_TINYLLM) as worker:
        out = worker.run(LOAD.format(repo=repo, revision="main", kw={"trust_remote_code": True}, cache=None))
    torch.testing.assert_close(torch.tensor(out["logits"]), local_logits(model_folder, out["ids"]), rtol=0, atol=1e-6)
    api.delete_repo(repo)


def test_private_repository_and_pull_request(hub, model_folder, tmp_path):
    (tmp_path / "changed").mkdir()
    for path in model_folder.iterdir():
        (tmp_path / "changed" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "changed" / "training_summary.json").write_text(json.dumps({"steps": 4, "tokens_seen": 512}))
    with pushing(hub, tmp_path):
        push(model_folder, "tester/secret", private=True)
        url = push(model_folder, "tester/tiny-pr")
        main_before = hub.head("tester/tiny-pr")
        pr_url = push(tmp_path / "changed", "tester/tiny-pr", create_pr=True, commit_message="longer run")
    assert hub.is_private("tester/secret") and not hub.is_private("tester/tiny-pr")
    assert "/discussions/1" in pr_url and pr_url != url
    assert hub.head("tester/tiny-pr") == main_before  # main is untouched until the PR is merged
    assert json.loads(hub.files("tester/tiny-pr", revision="refs/pr/1")["training_summary.json"])["steps"] == 4


def test_a_token_passed_any_way_never_leaks(hub, model_folder, tmp_path):
    """token=, --token, scripts/push_to_hub.py and refused pushes: the token is never printed (the autouse fixture
    checks every file descriptor and the logs) nor written into the local folder or any pushed file."""
    from hf_tinyllm.cli import main

    folder = str(model_folder)
    statuses = []
    with pushing(hub, tmp_path, token=None):  # no HF_TOKEN: only the explicit routes carry the token
        push(folder, "tester/by-argument", token=TOKEN)
        main(["push", folder, "tester/by-cli-flag", "--token", TOKEN])
        run_script("scripts/push_to_hub.py", [folder, "tester/by-script", "--token", TOKEN])
        for repo, bad in (("tester/refused", "hf_wrong_secret"), ("intruder/refused", TOKEN)):  # 401, then 403
            with pytest.raises(SystemExit) as stop:
                main(["push", folder, repo, "--token", bad])
            statuses.append(stop.value.code)
    assert statuses == [2, 2]
    for repo in ("tester/by-argument", "tester/by-cli-flag", "tester/by-script"):
        files = hub.files(repo)
        assert "model.safetensors" in files and not any(TOKEN.encode() in data for data in files.values()), repo
    assert not any(TOKEN.encode() in p.read_bytes() for p in model_folder.rglob("*") if p.is_file())


def test_refresh_code_on_the_hub_commits_only_what_changed(hub, loader, tmp_path, capfd):
    """A repository pushed with hf_tinyllm 0.1.0's model code: `tinyllm refresh-code REPO` commits the new code and
    config.json once (weights, tokenizer and card untouched), a second run commits nothing, and the repository then
    loads without the package and gives the golden model's tokens."""
    from conftest import folder_saved_by_0_1_0
    from test_golden_model import assert_golden, measured

    from hf_tinyllm.cli import main
    from hf_tinyllm.configuration_tinyllm import TINYLLM_CODE_VERSION
    from hf_tinyllm.remote_code import REMOTE_CODE_FILES, current_code

    folder = folder_saved_by_0_1_0(tmp_path / "old")
    with pushing(hub, tmp_path):
        push(folder, "tester/old-code")
        before = hub.files("tester/old-code")
        commits = len(hub.commits("tester/old-code"))
        main(["refresh-code", "tester/old-code"])
        report = capfd.readouterr().out
        assert len(hub.commits("tester/old-code")) == commits + 1, report
        after = hub.files("tester/old-code")
        assert {name for name in after if after[name] != before.get(name)} == {*REMOTE_CODE_FILES, "config.json"}
        assert {name: after[name] for name in REMOTE_CODE_FILES} == current_code()
        assert json.loads(after["config.json"])["tinyllm_code_version"] == TINYLLM_CODE_VERSION
        assert "Commit: " in report and "no version recorded" in report, report

        main(["refresh-code", "tester/old-code"])
        assert "nothing changed" in capfd.readouterr().out
        assert len(hub.commits("tester/old-code")) == commits + 1  # no empty commit
    assert_golden(measured(loader, "tester/old-code"))
