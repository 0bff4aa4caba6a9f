"""Load users' text with `datasets`: local text/json/jsonl/csv/parquet files or folders, a `save_to_disk` folder,
a Hub dataset name, or the embedded TinyWorld corpus."""

from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, IterableDataset

TINYWORLD = "tinyworld"
BUILDERS = {
    ".txt": "text",
    ".text": "text",
    ".md": "text",
    ".json": "json",
    ".jsonl": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def load_text_dataset(
    source: str | Path,
    text_column: str = "text",
    split: str = "train",
    streaming: bool = False,
) -> Dataset | IterableDataset:
    """One split of a text corpus, with its `text_column` checked.

    `source` is `"tinyworld"` (the embedded corpus), a file or folder of .txt/.json/.jsonl/.csv/.parquet files, a
    folder written by `save_to_disk`, or a Hub dataset name. `streaming=True` reads files lazily (corpora larger
    than RAM); a `save_to_disk` folder is memory-mapped anyway.
    """
    if str(source) == TINYWORLD:
        from .tinyworld import tinyworld_dataset

        dataset = tinyworld_dataset()[split]
        dataset = dataset.to_iterable_dataset() if streaming else dataset
    elif Path(source).exists():
        dataset = _load_local(Path(source), split, streaming)
    elif _looks_like_a_path(str(source)):
        raise FileNotFoundError(
            f"{source} does not exist; pass an existing file or folder of .txt/.json/.jsonl/.csv/.parquet files, a "
            f"save_to_disk folder, a Hub dataset name or {TINYWORLD!r}."
        )
    else:
        dataset = _load_hub(str(source), split, streaming)
    return _check_text_column(dataset, text_column, source)


def _load_local(path: Path, split: str, streaming: bool) -> Dataset | IterableDataset:
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path} has splits {list(loaded)}, not {split!r}; pass split=... with one of them.")
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded
    files = [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    suffixes = {p.suffix.lower() for p in files}
    unknown = suffixes - BUILDERS.keys()
    if not files or unknown:
        found = f"files with suffixes {sorted(unknown)}" if unknown else "no files"
        raise ValueError(f"{path} holds {found}; TinyLLM reads {sorted(BUILDERS)} (one format per folder).")
    builders = {BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise ValueError(f"{path} mixes formats {sorted(builders)}; put one format in a folder.")
    return datasets.load_dataset(builders.pop(), data_files=[str(p) for p in files], split="train", streaming=streaming)


def _load_hub(name: str, split: str, streaming: bool) -> Dataset | IterableDataset:
    try:
        return datasets.load_dataset(name, split=split, streaming=streaming)
    except (ConnectionError, OSError) as err:
        raise ConnectionError(
            f"Could not load the Hub dataset {name!r} ({type(err).__name__}: {err}). If this machine is offline, "
            f"download it where there is internet (`datasets.load_dataset(...).save_to_disk(folder)`) and pass the "
            f"folder, or use {TINYWORLD!r}."
        ) from err


def _check_text_column(dataset: Dataset | IterableDataset, text_column: str, source: object):
    columns = dataset.column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"{source} has no column {text_column!r}; its columns are {columns}. Pass text_column=...")
    return dataset


def _looks_like_a_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in BUILDERS or source.count("/") > 1


__all__ = ["load_text_dataset"]
