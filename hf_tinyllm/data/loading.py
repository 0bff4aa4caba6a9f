"""Load users' text with `datasets`: local text/json/jsonl/csv/parquet files or folders, a `save_to_disk` folder,
a Hub dataset name, or the embedded TinyWorld corpus.

Local files are read by `datasets`' own builders. When a builder fails on a file, the file is scanned for the cause
(the first undecodable byte, the first JSON line that does not parse or whose text is not a string) and the error
becomes a one-line `ValueError` naming the file, the byte offset or line, and the fix. The scan runs only on that
failure path, so a good corpus is read once; with `streaming=True` each file is opened as the stream reaches it and
diagnosed there, so a bad byte 900 MB into a file is reported when the stream meets it, in constant memory.
"""

import codecs
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, Features, IterableDataset, Value

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
ENCODED_BUILDERS = ("text", "json", "csv")  # the builders that decode text and take an `encoding` option
STRING_FEATURES = (Value("string"), Value("large_string"))
SCAN_CHUNK_BYTES = 1 << 20  # read size when scanning a file for its first undecodable byte
STREAM_BATCH_ROWS = 1000  # rows per batch read from a streamed file


def load_text_dataset(
    source: str | Path,
    text_column: str = "text",
    split: str = "train",
    streaming: bool = False,
    encoding: str = "utf-8",
    config: str | None = None,
) -> Dataset | IterableDataset:
    """One split of a text corpus, with its `text_column` checked.

    `source` is `"tinyworld"` (the embedded corpus), a file or folder of .txt/.json/.jsonl/.csv/.parquet files, a
    folder written by `save_to_disk`, or a Hub dataset name. `streaming=True` reads files lazily (corpora larger
    than RAM); a `save_to_disk` folder is memory-mapped anyway. `encoding` is the text encoding of local
    txt/json/jsonl/csv files; `config` a Hub dataset's configuration (e.g. fineweb-edu's "sample-10BT"). Local files
    are one `"train"` split. Bad data raises a one-line `ValueError` naming
    the file and the fix (with `streaming=True`, when the stream reaches the bad part).
    """
    _check_encoding(encoding)
    if config is not None and (str(source) == TINYWORLD or Path(source).exists()):
        raise ValueError(f"config={config!r} names a Hub dataset's configuration; {source} is not a Hub dataset.")
    if str(source) == TINYWORLD:
        from .tinyworld import tinyworld_dataset

        dataset = tinyworld_dataset()[split]
        dataset = dataset.to_iterable_dataset() if streaming else dataset
    elif Path(source).exists():
        dataset = _load_local(Path(source), split, streaming, encoding, text_column)
    elif _looks_like_a_path(str(source)):
        raise FileNotFoundError(
            f"{source} does not exist; pass an existing file or folder of .txt/.json/.jsonl/.csv/.parquet files, a "
            f"save_to_disk folder, a Hub dataset name or {TINYWORLD!r}."
        )
    else:
        dataset = _load_hub(str(source), split, streaming, config)
    return _check_text_column(dataset, text_column, source)


def unix_newlines(text: object) -> object:
    """A text's Windows (CRLF) and old Mac (CR) line ends as LF, as Python reads text files; other values as given
    (the column checks report them). Applied where texts are consumed (tokenising, training a tokenizer, scoring),
    not as a pass of its own over the corpus, which would write a second copy of it to the cache."""
    if not isinstance(text, str) or "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _load_local(path: Path, split: str, streaming: bool, encoding: str, text_column: str) -> Dataset | IterableDataset:
    if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, DatasetDict):
            if split not in loaded:
                raise ValueError(f"{path} has splits {list(loaded)}, not {split!r}; pass split=... with one of them.")
            loaded = loaded[split]
        return loaded.to_iterable_dataset() if streaming else loaded
    if split != "train":
        raise ValueError(
            f"{path} is read as one 'train' split, not {split!r}; hold out part of it with split_train_validation, "
            "or save a DatasetDict with save_to_disk and pass that folder."
        )
    files = _data_files(path)
    builder = BUILDERS[files[0].suffix.lower()]
    names = [str(p) for p in files]
    with _diagnosed(names, builder, encoding, text_column):
        options = _builder_options(builder, encoding)
        dataset = datasets.load_dataset(builder, data_files=names, split="train", streaming=streaming, **options)
        if builder == "json" and not streaming:
            # pyarrow's JSON reader does not check UTF-8: a bad byte would surface later, when a row is read.
            dataset.data.table.validate(full=True)
    if not _holds_text(dataset, text_column):
        problem = _first_problem(names, builder, encoding, text_column)  # the JSON line whose text is not a string
        if problem is not None:
            raise ValueError(problem)
    if streaming:
        # One shard per file, each opened by datasets' own builder, so read errors are diagnosed on their file.
        return IterableDataset.from_generator(
            _stream_files,
            features=dataset.features,
            gen_kwargs=dict(files=names, builder=builder, encoding=encoding, features=dataset.features,
                            text_column=text_column),
        )  # fmt: skip
    if len(dataset) == 0:
        raise ValueError(f"{path} has no text (no rows); pass data with at least one text.")
    return dataset


def _data_files(path: Path) -> list[Path]:
    """The non-empty data files of a file or folder, all of one format."""
    files = [path]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"{path} is an empty folder; put .txt/.json/.jsonl/.csv/.parquet files in it.")
    suffixes = {p.suffix.lower() for p in files}
    unknown = suffixes - BUILDERS.keys()
    if unknown:
        raise ValueError(f"{path} holds files with suffixes {sorted(unknown)}; TinyLLM reads {sorted(BUILDERS)}.")
    builders = {BUILDERS[s] for s in suffixes}
    if len(builders) > 1:
        raise ValueError(f"{path} mixes formats {sorted(builders)}; put one format in a folder.")
    # Empty files add no text, and datasets' json builder fails on one when it infers the schema from it.
    non_empty = [p for p in files if p.stat().st_size > 0]
    if not non_empty:
        what = "the file is empty" if path.is_file() else f"all {len(files)} of its files are empty"
        raise ValueError(f"{path} has no text ({what}); pass data with text.")
    return non_empty


def _stream_files(
    files: list[str], builder: str, encoding: str, features: Features | None, text_column: str
) -> Iterator[dict]:
    for file in files:
        with _diagnosed([file], builder, encoding, text_column):
            options = _builder_options(builder, encoding)
            stream = datasets.load_dataset(
                builder, data_files=[file], split="train", streaming=True, features=features, **options
            )
            # `iter`, not `for row in stream`: inside a DataLoader worker, an IterableDataset's own iterator would
            # split this one-file stream among the workers again, and all but one would silently read nothing.
            for batch in stream.iter(batch_size=STREAM_BATCH_ROWS):
                yield from (dict(zip(batch, row, strict=True)) for row in zip(*batch.values(), strict=True))


def _builder_options(builder: str, encoding: str) -> dict:
    return {"encoding": encoding} if builder in ENCODED_BUILDERS else {}


@contextmanager
def _diagnosed(files: list[str], builder: str, encoding: str, text_column: str) -> Iterator[None]:
    """Re-raise an error of datasets' builder on bad files as a ValueError naming the file and the fix; an error
    with no cause found in the files (a full disk, a bug) propagates unchanged."""
    try:
        yield
    except Exception as err:
        problem = _first_problem(files, builder, encoding, text_column)
        if problem is None:
            raise
        raise ValueError(problem) from err


def _first_problem(files: list[str], builder: str, encoding: str, text_column: str) -> str | None:
    for file in files:
        path = Path(file)
        problem = None
        if builder in ENCODED_BUILDERS:
            problem = _first_undecodable_byte(path, encoding)
        if problem is None and builder == "json":
            problem = _first_bad_json_line(path, encoding, text_column)
        if problem is None and builder == "parquet":
            problem = _parquet_problem(path)
        if problem is not None:
            return problem
    return None


def _first_undecodable_byte(path: Path, encoding: str) -> str | None:
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as f:
        while True:
            chunk = f.read(SCAN_CHUNK_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of an unfinished character carried from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                name = "UTF-8" if codecs.lookup(encoding).name == "utf-8" else encoding
                return (
                    f"{path} is not {name} text (byte 0x{err.object[err.start]:02x} at offset "
                    f"{offset - pending + err.start}); convert it to {name} or pass its encoding with --encoding "
                    "(e.g. --encoding latin-1)."
                )
            if not chunk:
                return None
            offset += len(chunk)


def _first_bad_json_line(path: Path, encoding: str, text_column: str) -> str | None:
    """JSON Lines: the first line that does not parse, is not an object, or whose text is not a string. A file that
    starts with `[` is one JSON array (datasets reads it whole, so this does too)."""
    with path.open(encoding=encoding) as f:
        head = f.read(1)
        f.seek(0)
        if head.lstrip("\ufeff") == "[":
            try:
                rows = json.load(f)
            except json.JSONDecodeError as err:
                return f"{path} is not valid JSON (line {err.lineno}: {err.msg}); fix that line."
            problems = (_json_row_problem(path, f"item {i}", row, text_column) for i, row in enumerate(rows))
            return next((p for p in problems if p is not None), None)
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line.lstrip("\ufeff"))
            except json.JSONDecodeError as err:
                return (
                    f"{path} line {number} is not valid JSON (column {err.colno}: {err.msg}); fix or remove that line."
                )
            problem = _json_row_problem(path, f"line {number}", row, text_column)
            if problem is not None:
                return problem
    return None


def _json_row_problem(path: Path, where: str, row: object, text_column: str) -> str | None:
    if not isinstance(row, dict):
        return f"{path} {where} is {type(row).__name__}, not a JSON object; every row must be an object with a text."
    value = row.get(text_column)
    if value is not None and not isinstance(value, str):
        return (
            f"{path} {where}: {text_column!r} is {json.dumps(value)[:40]} ({type(value).__name__}), not a string; "
            "make every text a string, or pass text_column=... naming a column of strings."
        )
    return None


def _parquet_problem(path: Path) -> str | None:
    try:
        pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        return f"{path} is not a Parquet file ({' '.join(str(err).split())}); pass a valid .parquet file."
    return None


def _load_hub(name: str, split: str, streaming: bool, config: str | None) -> Dataset | IterableDataset:
    try:
        return datasets.load_dataset(name, config, split=split, streaming=streaming)
    except (ConnectionError, OSError) as err:
        raise ConnectionError(
            f"Could not load the Hub dataset {name!r} ({type(err).__name__}: {err}). If this machine is offline, "
            f"download it where there is internet (`datasets.load_dataset(...).save_to_disk(folder)`) and pass the "
            f"folder, or use {TINYWORLD!r}."
        ) from err


def _holds_text(dataset: Dataset | IterableDataset, text_column: str) -> bool:
    """False only when the column is known to hold something other than strings."""
    features = dataset.features
    return features is None or text_column not in features or features[text_column] in STRING_FEATURES


def _check_text_column(dataset: Dataset | IterableDataset, text_column: str, source: object):
    columns = dataset.column_names
    if columns is not None and text_column not in columns:
        raise ValueError(f"{source} has no column {text_column!r}; its columns are {columns}. Pass text_column=...")
    if not _holds_text(dataset, text_column):
        feature = dataset.features[text_column]
        kind = feature.dtype if isinstance(feature, Value) else type(feature).__name__
        raise ValueError(
            f"{source}: column {text_column!r} holds {kind} values, not strings; pass "
            "text_column=... naming a column of texts, or convert its values to strings."
        )
    return dataset


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(
            f"encoding={encoding!r} is not a known text encoding; pass a Python codec name such as utf-8 or latin-1."
        ) from None


def _looks_like_a_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or Path(source).suffix.lower() in BUILDERS or source.count("/") > 1


__all__ = ["load_text_dataset", "unix_newlines"]
