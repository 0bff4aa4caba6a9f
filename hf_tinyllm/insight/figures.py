"""Matplotlib for every picture the library draws: the headless backend, and one way to save a figure."""

from pathlib import Path

# The two TinyWorld floors every bits-per-byte picture draws: the true distribution's code length on the very
# documents scored (the one to compare with) and the corpus floor, its expectation over all TinyWorld text.
SOURCE_LABEL = "true distribution on these documents"
FLOOR_LABEL = "corpus entropy floor (expected)"


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend (pictures are written on servers and in tests)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path, dpi: int = 100, tight: bool = True) -> Path:
    """Lay `fig` out (unless `tight=False`: the caller has laid it out already), write it to `path` as PNG (making
    its folder), close it; returns the path."""
    if tight:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


__all__ = ["pyplot", "save_figure"]
