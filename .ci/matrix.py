"""CI's drift check: does the package still work on what `pip install hf_tinyllm` gives a user today?

`make test` runs the suite at the tested versions (constraints/tested.txt). This script then builds one more virtual
environment, `.venv-matrix`, and runs, in turn:

1. newest: the whole suite at the newest releases setup.cfg's ranges allow (no constraints);
2. transformers X: the compatibility tests (model, generation, remote code, Hub, golden model) at every transformers
   release between the floor and the newest that no other cell covers (today 5.24.0);
3. minimum: the compatibility tests at the lowest version of each runtime dependency (constraints/minimum.txt).

It prints one line per cell (versions, pass counts, seconds), writes outputs/ci-matrix/summary.md, and exits 1 if any
cell failed. Run from the repository root: `make test-matrix` (`.venv/bin/python .ci/matrix.py`).
"""

import json
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-matrix"
PYTHON = VENV / "bin" / "python"
OUT = ROOT / "outputs" / "ci-matrix"
TORCH = "torch==2.13.0"  # the CPU build on this disk (Makefile's TORCH_SPEC)
EXTRAS = "dev,plots,studio"
PACKAGES = ("transformers", "accelerate", "datasets", "tokenizers", "huggingface_hub", "safetensors", "torch")
COMPAT_TESTS = [
    "tests/test_transformers_internals.py",
    "tests/test_golden_model.py",
    "tests/test_modeling.py",
    "tests/test_packed_attention.py",
    "tests/test_chunked_cross_entropy.py",
    "tests/test_generation.py",
    "tests/test_fast_decode.py",
    "tests/test_task_heads.py",
    "tests/test_save_and_remote_code.py",
    "tests/test_hub_push.py",
    "tests/test_config.py",
    "tests/test_rope_parameters.py",
]


def run(*command: str) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)


def pip_install(*args: str) -> None:
    run(str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args)


def pinned(path: Path, package: str) -> Version:
    for line in path.read_text().splitlines():
        name, _, version = line.partition("==")
        if name.strip().lower().replace("-", "_") == package:
            return Version(version.strip())
    raise SystemExit(f"{path} pins no {package}")


def installed_versions() -> dict[str, str]:
    code = f"import importlib.metadata as m, json; print(json.dumps({{p: m.version(p) for p in {list(PACKAGES)!r}}}))"
    out = subprocess.run([str(PYTHON), "-c", code], check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out)


def released(package: str) -> list[Version]:
    """The final releases of `package` the registry serves, newest first."""
    out = subprocess.run([str(PYTHON), "-m", "pip", "index", "versions", package, "--disable-pip-version-check"],
                         capture_output=True, text=True, cwd=ROOT).stdout  # fmt: skip
    match = re.search(r"Available versions: (.*)", out)
    versions = [Version(v) for v in match.group(1).split(", ")] if match else []
    return [v for v in versions if not v.is_prerelease]


def pytest_cell(name: str, tests: list[str]) -> dict:
    junit = OUT / f"{re.sub(r'[^a-z0-9.]+', '-', name.lower())}.xml"
    start = time.monotonic()
    returncode = subprocess.run(
        [str(PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *tests], cwd=ROOT
    ).returncode
    seconds = time.monotonic() - start
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return {"cell": name, "ok": returncode == 0, "seconds": round(seconds), **counts, **installed_versions(),
            "tests_run": "all" if not tests else "compatibility"}  # fmt: skip


def summary(cells: list[dict]) -> str:
    columns = ["cell", "tests_run", "transformers", "accelerate", "datasets", "huggingface_hub", "tokenizers",
               "passed", "failures", "errors", "skipped", "seconds"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(str(cell[column]) for column in columns) + " |" for cell in cells]
    return "\n".join(lines)


def main() -> int:
    started = time.monotonic()
    OUT.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(VENV, ignore_errors=True)
    run(sys.executable, "-m", "venv", str(VENV))
    pip_install(TORCH)
    pip_install("-e", f".[{EXTRAS}]")  # no constraints: the newest releases the ranges allow
    cells = [pytest_cell("newest", [])]

    newest = Version(cells[0]["transformers"])
    lock = pinned(ROOT / "constraints" / "tested.txt", "transformers")
    floor = pinned(ROOT / "constraints" / "minimum.txt", "transformers")
    between = sorted(v for v in released("transformers") if floor < v < newest and v != lock)
    for version in between:
        pip_install(f"transformers=={version}")
        cells.append(pytest_cell(f"transformers {version}", COMPAT_TESTS))

    pip_install("-r", "constraints/minimum.txt")
    cells.append(pytest_cell("minimum", COMPAT_TESTS))

    table = summary(cells)
    (OUT / "summary.md").write_text(table + "\n")
    (OUT / "summary.json").write_text(json.dumps(cells, indent=1) + "\n")
    print(f"\nThe matrix beyond the lock ({time.monotonic() - started:.0f} s with the installs):\n{table}")
    return 0 if all(c["ok"] for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
