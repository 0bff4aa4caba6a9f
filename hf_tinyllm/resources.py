"""The data files the library reads at run time, shipped inside the package: the model-card template, the run
recipes and the accelerate configs.

They are edited where the design card puts them (`model_cards/`, `configs/` at the top of the repository);
`hf_tinyllm/_data/` holds symbolic links to those two folders, so a checkout reads the edited files and a build copies
them into the wheel and the sdist as plain files (setup.cfg's `package_data`). Read them here, by package, never by a
path relative to the source tree: that path does not exist in an installed package.
"""

from importlib.resources import files
from pathlib import Path


def resource_path(*parts: str) -> Path:
    """The file `hf_tinyllm/_data/<parts>` of the installed package: resource_path("configs", "runs", "demo.yaml")."""
    path = Path(str(files("hf_tinyllm").joinpath("_data", *parts)))
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing from the installed hf_tinyllm: the package was built without its data files; "
            "reinstall it from a wheel or sdist built by `python -m build`, or `pip install -e .` in a checkout."
        )
    return path
