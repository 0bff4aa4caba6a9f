"""What an installed hf_tinyllm reads at run time travels in its sdist and wheel: the model-card template, the run
recipes and the accelerate configs (hf_tinyllm/resources.py), read from the installed package, not from a checkout."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest
from conftest import REPO_ROOT

import hf_tinyllm

DATA = "hf_tinyllm/_data/"
DATA_FILES = {
    DATA + name
    for name in (
        "model_cards/tinyllm.md",
        "configs/runs/demo.yaml",
        "configs/accelerate/cpu_2proc.yaml",
        "configs/accelerate/fsdp2.yaml",
    )
} | {"hf_tinyllm/studio/guide/en.yaml"}  # the studio's guided path, read beside its module

FROM_THE_WHEEL = """
import json, yaml
import hf_tinyllm
from hf_tinyllm.demo import RECIPE
from hf_tinyllm.model_card import TEMPLATE
print(json.dumps({"package": hf_tinyllm.__file__, "recipe": str(RECIPE), "template": str(TEMPLATE),
                  "preset": yaml.safe_load(RECIPE.read_text())["preset"], "card": TEMPLATE.read_text()[:3]}))
"""


def repository_copy(destination):
    """The files git tracks or would track (symbolic links kept as links), as a fresh clone would have them."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO_ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source, target = REPO_ROOT / name, destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        elif source.is_file():
            shutil.copy2(source, target)
    return destination


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """`python -m build` (offline: --no-isolation) of a copy of the tree: the sdist, then the wheel built from the
    unpacked sdist, as an index user's pip would."""
    root = tmp_path_factory.mktemp("build")
    source = repository_copy(root / "checkout")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(source)],
                   check=True, capture_output=True)  # fmt: skip
    return root / "dist"


def test_the_sdist_and_the_wheel_carry_the_data_files_and_the_installed_package_reads_them(dist, tmp_path):
    """Both artifacts list the data files and pass `twine check`; the unpacked wheel reads them from elsewhere."""
    (sdist,) = dist.glob("hf_tinyllm-*.tar.gz")
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        members = {name.removeprefix(root + "/") for name in archive.getnames()}
    assert members >= DATA_FILES | {"README.md", "setup.cfg", "pyproject.toml"}, sorted(DATA_FILES - members)
    artifacts = [str(path) for path in dist.iterdir()]
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *artifacts], capture_output=True,
                             text=True)  # fmt: skip
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 2, checked.stdout + checked.stderr
    (wheel,) = dist.glob("hf_tinyllm-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert names >= DATA_FILES, sorted(DATA_FILES - names)
        recipe = archive.read(DATA + "configs/runs/demo.yaml")  # the linked file itself, not the link
        assert recipe == (REPO_ROOT / "configs/runs/demo.yaml").read_bytes()
        archive.extractall(tmp_path / "site")  # what pip install puts in site-packages
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}  # ahead of the checkout's editable install
    out = subprocess.run([sys.executable, "-c", FROM_THE_WHEEL], cwd=elsewhere, env=env, capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    found = json.loads(out.strip().splitlines()[-1])
    site = str(tmp_path / "site")
    assert all(found[key].startswith(site) for key in ("package", "recipe", "template")), found
    assert found["preset"] == "nano" and found["card"] == "---"


AFTER_THE_DEMO = """
import json, sys
from pathlib import Path
import hf_tinyllm
from transformers import AutoModelForCausalLM
from hf_tinyllm.model_card import write_model_card
model_dir = Path(sys.argv[1])
model = AutoModelForCausalLM.from_pretrained(model_dir)
card = write_model_card(model_dir, "tester/tiny-from-wheel").read_text()
print(json.dumps({"package": hf_tinyllm.__file__, "model": type(model).__name__, "card": card}))
"""


def test_the_wheel_installed_in_a_fresh_virtualenv_runs_the_demo_renders_the_card_and_pushes(dist, tmp_path):
    """A new user's path, without the source tree anywhere on the path: a fresh virtualenv (the CPU torch build
    first, as the README says), `pip install` of the wheel, then from another folder: `tinyllm --version`,
    `tinyllm demo --max_steps 2`, loading the result, rendering its card, and a push to the offline Hub server."""
    from fake_hub import FakeHub

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, capture_output=True)
    (wheel,) = dist.glob("hf_tinyllm-*.whl")
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    def run(*argv: str, **extra_env: str) -> str:
        done = subprocess.run(argv, cwd=elsewhere, env={**env, **extra_env}, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    tinyllm = str(venv / "bin" / "tinyllm")
    assert run(tinyllm, "--version").strip() == f"hf_tinyllm {hf_tinyllm.__version__}"
    report = run(tinyllm, "demo", "--max_steps", "2", "--probe_steps", "0", "--output_dir", str(tmp_path / "demo"))
    assert "held-out arithmetic exact match" in report and "Done in" in report
    model_dir = tmp_path / "demo" / "model"
    found = json.loads(run(str(venv / "bin" / "python"), "-c", AFTER_THE_DEMO, str(model_dir)).splitlines()[-1])
    assert found["package"].startswith(str(venv)) and found["model"] == "TinyLLMForCausalLM"
    assert "tester/tiny-from-wheel" in found["card"] and "pip install hf_tinyllm" not in found["card"]
    with FakeHub(tokens={"hf_wheel": "tester"}) as hub:
        hub_env = hub.client_env(token="hf_wheel", hf_home=tmp_path / "hf_home")
        pushed = run(tinyllm, "push", str(model_dir), "tester/tiny-from-wheel", **hub_env)
        assert "tester/tiny-from-wheel" in pushed
        files = hub.files("tester/tiny-from-wheel")
    assert {"README.md", "model.safetensors", "generation_tinyllm.py", "tokenizer.json"} <= files.keys()
    assert b"tester/tiny-from-wheel" in files["README.md"]
