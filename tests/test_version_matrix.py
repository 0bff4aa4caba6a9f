"""The version matrix stays consistent: setup.cfg's ranges, the tested lock (constraints/tested.txt), the minimum
versions (constraints/minimum.txt), the remote code's tested range and the README's "Tested versions" agree."""

import configparser
import re

from conftest import REPO_ROOT
from packaging.requirements import Requirement
from packaging.version import Version

from hf_tinyllm.configuration_tinyllm import TESTED_TRANSFORMERS


def _setup_requirements(section: str, key: str) -> list[Requirement]:
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    lines = [line.split("#")[0].strip() for line in parser[section][key].splitlines()]
    return [Requirement(line) for line in lines if line]


def _pins(name: str) -> dict[str, Version]:
    pins = {}
    for line in (REPO_ROOT / "constraints" / name).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            package, _, version = line.partition("==")
            pins[package.strip().lower().replace("-", "_")] = Version(version.strip())
    return pins


def _key(requirement: Requirement) -> str:
    return requirement.name.lower().replace("-", "_")


def _floor(requirement: Requirement) -> Version:
    return next(Version(s.version) for s in requirement.specifier if s.operator == ">=")


RUNTIME = _setup_requirements("options", "install_requires")


def test_the_lock_satisfies_every_range_of_setup_cfg():
    pins = _pins("tested.txt")
    parser = configparser.ConfigParser()
    parser.read(REPO_ROOT / "setup.cfg")
    extras = [r for extra in parser["options.extras_require"] for r in _setup_requirements("options.extras_require",
              extra)]  # fmt: skip
    for requirement in [*RUNTIME, *extras]:
        if _key(requirement) in pins:
            assert pins[_key(requirement)] in requirement.specifier, (requirement, pins[_key(requirement)])
    missing = [r.name for r in RUNTIME if _key(r) not in pins]
    assert not missing, f"constraints/tested.txt pins none of {missing}: run make lock"


def test_minimum_pins_are_the_floors_of_setup_cfg():
    pins = _pins("minimum.txt")
    assert set(pins) == {_key(r) for r in RUNTIME}, "one pin per runtime dependency"
    for requirement in RUNTIME:
        floor, pin = _floor(requirement), pins[_key(requirement)]
        assert pin in requirement.specifier, (requirement, pin)
        assert pin.release[: len(floor.release)] == floor.release, f"{requirement}: pin {pin} is not its floor"


def test_the_remote_codes_tested_range_starts_at_the_floor_and_reaches_the_lock():
    transformers = next(r for r in RUNTIME if _key(r) == "transformers")
    assert Version(TESTED_TRANSFORMERS[0]) == _pins("minimum.txt")["transformers"] == _floor(transformers)
    assert Version(TESTED_TRANSFORMERS[-1]) >= _pins("tested.txt")["transformers"]


def test_the_readme_names_the_tested_versions():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Tested versions", 1)[1].split("\n## ", 1)[0]
    pins = _pins("tested.txt")
    for package in ("torch", "transformers", "accelerate", "datasets", "tokenizers", "huggingface_hub"):
        assert re.search(rf"{package} {re.escape(str(pins[package]))}\b", section), (package, str(pins[package]))
    assert f"transformers {TESTED_TRANSFORMERS[-1]}" in section
