"""The studio as a Hugging Face Space, end to end against the offline Hub-compatible server (tests/fake_hub.py):
`tinyllm push FOLDER REPO --space` pushes the model and its Space; the Space is downloaded like any repository and its
`app.py` is run as a Space runs it, serving the page from the bundled `hf_tinyllm` over the model loaded from the Hub;
its answers are checked against `hf_tinyllm.insight` computed directly on the local model. The pushes run in this
process (pointed at the server by `hub_client`); the Space's app.py runs in its own interpreter, as on a Space."""

import configparser
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO_ROOT, cli_user_error
from fake_hub import FakeHub, hub_client, never_shows
from huggingface_hub import SpaceCard, snapshot_download
from packaging.requirements import Requirement
from studio_server import free_port
from transformers import AutoModelForCausalLM, AutoTokenizer

import hf_tinyllm
from hf_tinyllm.cli import main
from hf_tinyllm.hub import HubError, push_space
from hf_tinyllm.insight.next_token import next_token_distribution
from hf_tinyllm.studio.space import INSTALL_REQUIRES, REQUIREMENTS, STUDIO_REQUIRES, package_files, space_files

gradio = pytest.importorskip("gradio")
from gradio_client import Client  # noqa: E402

TOKEN = "hf_space_token"
PROMPT = "two plus three equals"


@pytest.fixture(scope="module")
def hub():
    with FakeHub(tokens={TOKEN: "tester"}) as server:
        yield server


output = never_shows(TOKEN)  # nothing a test prints or logs contains the token; tests read their output


def pushing(hub: FakeHub, tmp_path: Path, token: str | None = TOKEN):
    """This process's client pointed at the fake Hub with `token` (None: no token at all)."""
    return hub_client(hub.client_env(token=token, hf_home=tmp_path / "hf_push"))


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the Space's app exited early:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the Space's app did not answer at {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def setup_cfg_requirements() -> tuple[list[str], list[str]]:
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")

    def lines(text: str) -> list[str]:
        return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]

    return lines(config["options"]["install_requires"]), lines(config["options.extras_require"]["studio"])


def test_requirements_agree_with_setup_cfg():
    install_requires, studio = setup_cfg_requirements()
    assert list(INSTALL_REQUIRES) == install_requires and list(STUDIO_REQUIRES) == studio
    text = space_files("tester/tiny")["requirements.txt"]
    assert text.splitlines() == list(REQUIREMENTS)
    assert {Requirement(line).name for line in text.splitlines()} >= {"torch", "transformers", "gradio", "plotly"}


def test_the_bundled_package_is_the_installed_one_without_caches():
    import hf_tinyllm

    root = Path(hf_tinyllm.__file__).parent
    walked = [
        Path(folder, name) for folder, _, names in os.walk(root, followlinks=True) for name in names
    ]  # _data links
    on_disk = {f"hf_tinyllm/{p.relative_to(root).as_posix()}": p.read_bytes() for p in walked
               if "__pycache__" not in p.parts and p.suffix != ".pyc"}  # fmt: skip
    bundled = package_files()
    assert bundled == on_disk
    assert {"hf_tinyllm/__init__.py", "hf_tinyllm/studio/app.py", "hf_tinyllm/studio/space.py"} <= bundled.keys()
    with pytest.raises(ValueError, match="full Hub id"):
        space_files("tiny")


def test_push_space_and_run_it_from_the_hub(hub, trained_tiny_dir, tmp_path, output):
    output.readouterr()
    with pushing(hub, tmp_path):
        main(["push", str(trained_tiny_dir), "tester/tiny", "--space"])  # a SystemExit here fails the test
    stdout = output.readouterr().out
    assert f"{hub.endpoint}/tester/tiny/commit/" in stdout
    assert f"Pushed its studio to the Space {hub.endpoint}/spaces/tester/tiny-studio" in stdout

    # The Space repository: what space_files says, in one commit after the repository's creation.
    files = hub.files("tester/tiny-studio", repo_type="space")
    expected = space_files("tester/tiny")
    assert set(files) == set(expected) | {".gitattributes"}
    for name, content in expected.items():
        assert files[name] == (content.encode() if isinstance(content, str) else content), name
    assert len(hub.commits("tester/tiny-studio", repo_type="space")) == 2
    card = SpaceCard(files["README.md"].decode())
    assert card.data.sdk == "gradio" and card.data.sdk_version == gradio.__version__
    assert card.data.app_file == "app.py" and card.data.models == ["tester/tiny"]
    assert card.data.license == "apache-2.0" and card.data.to_dict()["pinned"] is False
    assert {"title", "emoji", "colorFrom", "colorTo"} <= card.data.to_dict().keys()
    assert "https://huggingface.co/tester/tiny" in card.text

    # Download the Space like any repository, and run its app.py as a Space does.
    space_dir = Path(snapshot_download("tester/tiny-studio", repo_type="space", endpoint=hub.endpoint, token=TOKEN,
                                       cache_dir=tmp_path / "cache", local_dir=tmp_path / "space"))  # fmt: skip
    port = free_port()
    gradio_env = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "0"}
    env = {**os.environ, **hub.client_env(token=TOKEN, hf_home=tmp_path / "hf_space"), **gradio_env}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("PYTHONPATH", None)
    log = tmp_path / "space.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "app.py"], cwd=space_dir, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for(f"http://127.0.0.1:{port}/", process, log)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        update, status, prompt, _, _ = client.predict(PROMPT, api_name="/new_round")
        _, _, numbers = client.predict(PROMPT, 1.0, 0, 1.0, api_name="/distribution")
    finally:
        process.terminate()
        process.wait(timeout=30)
    # The bundled copy served the page, not the installed one.
    first_line = log.read_text().splitlines()[0]
    assert first_line == f"hf_tinyllm {hf_tinyllm.__version__} from {(space_dir / 'hf_tinyllm').resolve()}", first_line
    # ... over the model pushed to the Hub: the same numbers as the local folder.
    model = AutoModelForCausalLM.from_pretrained(trained_tiny_dir)
    tokenizer = AutoTokenizer.from_pretrained(trained_tiny_dir)
    expected_round = next_token_distribution(model, tokenizer, PROMPT, k=6)
    assert sorted(value for value, _ in update["choices"]) == sorted(t.strip() for t in expected_round.model.tokens)
    assert PROMPT in status and prompt == PROMPT
    direct = next_token_distribution(model, tokenizer, PROMPT, k=10)
    assert numbers["sampling"]["tokens"] == direct.sampling.tokens
    assert numbers["sampling"]["probabilities"] == pytest.approx(direct.sampling.probabilities, abs=1e-6)


def test_push_space_errors_are_clear(hub, trained_tiny_dir, tmp_path, output):
    hub.create_repo("tester/seeded", files={"config.json": b"{}"})
    errors = []
    with pushing(hub, tmp_path):
        for model, space in (("tester/never-pushed", None), ("tester/seeded", "tester/not a name")):
            with pytest.raises(HubError) as error:
                push_space(model, space)
            errors.append(str(error.value))
    missing, bad_id = errors
    assert missing.startswith("Model tester/never-pushed is not on the Hub") and "push the model first" in missing
    assert bad_id.startswith("'tester/not a name' is not a valid repository id: use user/name")
    assert not hub.repo_exists("tester/never-pushed-studio", repo_type="space")

    with pushing(hub, tmp_path, token=None):  # exit status 2, the last stderr line `error: ...`
        line = cli_user_error(["push", str(trained_tiny_dir), "tester/nobody", "--space"], output)
    assert line.startswith("error: Not logged in to the Hugging Face Hub")
    assert not hub.repo_exists("tester/nobody") and not hub.repo_exists("tester/nobody-studio", repo_type="space")
