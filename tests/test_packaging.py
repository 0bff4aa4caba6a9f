"""What an installed hf_tinyllm reads at run time travels in its sdist and wheel: the model-card template, the run
recipes and the accelerate configs (hf_tinyllm/resources.py), read from the installed package, not from a checkout."""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

from conftest import REPO_ROOT

DATA = "hf_tinyllm/_data/"
DATA_FILES = {
    DATA + name
    for name in (
        "model_cards/tinyllm.md",
        "configs/runs/demo.yaml",
        "configs/accelerate/cpu_2proc.yaml",
        "configs/accelerate/fsdp2.yaml",
    )
}

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


def test_the_sdist_and_the_wheel_carry_the_data_files_and_the_installed_package_reads_them(tmp_path):
    """`python -m build` (offline: --no-isolation) makes the sdist, then the wheel from the unpacked sdist, as an
    index user's pip would; `twine check` passes on both."""
    source = repository_copy(tmp_path / "checkout")
    subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(tmp_path / "dist"), str(source)],
                   check=True, capture_output=True)  # fmt: skip
    (sdist,) = (tmp_path / "dist").glob("hf_tinyllm-*.tar.gz")
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        members = {name.removeprefix(root + "/") for name in archive.getnames()}
    assert members >= DATA_FILES | {"README.md", "setup.cfg", "pyproject.toml"}, sorted(DATA_FILES - members)
    artifacts = [str(path) for path in (tmp_path / "dist").iterdir()]
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *artifacts], capture_output=True,
                             text=True)  # fmt: skip
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 2, checked.stdout + checked.stderr
    (wheel,) = (tmp_path / "dist").glob("hf_tinyllm-*.whl")
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
