"""Time series: ``{"series": float32 (T, C)}`` samples, NaN where a value is missing.

Specs:
    ucr:NAME        a UCR/UEA archive set shipped inside the ``sktime`` wheel (or ``aeon``'s,
                    when that is installed): GunPoint, ArrowHead, ItalyPowerDemand, OSULeaf,
                    ACSF1, BasicMotions, JapaneseVowels, PLAID (+ PickupGestureWiimoteZ in
                    aeon), each with the archive's own train/test split
    series:PATH     your own series: a ``.ts`` file (``X_TRAIN.ts`` beside ``X_TEST.ts``, or a
                    folder holding one such pair), a ``.npy``/``.npz`` array (N, T[, C]) with
                    optional labels, or a CSV with one series per row

Series of one set are padded with NaN to the set's longest, so a batch stacks; the encoder
treats a NaN as missing (TS2Vec's rule: the time step is masked out), so variable length and
missing values are the same thing to it. The ``.ts`` files are read by the small parser below,
not by importing sktime (5 s and pandas) for twelve megabytes of text.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import math
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from selfsup.errors import SelfsupError

Split = Literal["train", "test"]
Row = TypeVar("Row")
Read = TypeVar("Read")

ARCHIVE_SETS: tuple[str, ...] = (
    "GunPoint",
    "ArrowHead",
    "ItalyPowerDemand",
    "OSULeaf",
    "ACSF1",
    "BasicMotions",
    "JapaneseVowels",
    "PLAID",
    "PickupGestureWiimoteZ",
)
"""The classification sets of the UCR/UEA archives that ship inside the sktime or aeon wheel
(Tecator ships too, but its target is a number: a regression set, left out)."""

PACKAGES = ("sktime", "aeon")
"""Where the archive files are looked for, in this order (``<package>/datasets/data/NAME/``)."""

SERIES_SOURCES: dict[str, str] = {
    "ucr": (
        "UCR/UEA archive sets with their own splits, ucr:NAME (GunPoint, ArrowHead, "
        "ItalyPowerDemand, OSULeaf, ACSF1, BasicMotions, JapaneseVowels, PLAID); "
        "`pip install selfsup[series]` (the sktime wheel holds the files)"
    ),
    "series": (
        "your own series, series:PATH: .ts (UCR/UEA format, X_TRAIN.ts + X_TEST.ts), .npy/.npz "
        "(N, T[, C]) with optional labels, or a CSV of one series per row ('label' column)"
    ),
}

TEST_FRACTION = 0.2
SPLIT_SEED = 0
MISSING = ("?", "nan", "NaN", "")
"""Cells read as a missing value."""


class SeriesDataset(Dataset[dict[str, Tensor]]):
    """In-memory series, NaN-padded to one length: values float32 (N, T, C), labels (N,)."""

    input_key = "series"
    in_memory = True

    def __init__(
        self,
        values: Tensor,
        labels: Tensor | None,
        *,
        name: str,
        split: Split,
        class_names: list[str] | None = None,
        skipped: list[str] | None = None,
    ) -> None:
        if values.ndim != 3 or len(values) == 0:
            raise SelfsupError(f"{name} ({split}) holds no series of shape (N, T, C)")
        self._values = values.float()
        self.has_labels = labels is not None
        self._labels = labels.long() if labels is not None else torch.full((len(values),), -1)
        self.class_names = list(class_names or [])
        self.num_classes = len(self.class_names)
        self.name = name
        self.split = split
        self.channels = int(values.shape[2])
        self.length = int(values.shape[1])
        self.skipped = list(skipped or [])

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"series": self._values[index], "label": self._labels[index]}

    def labels(self) -> Tensor:
        """Every label, int64 (N,); -1 everywhere when unlabelled (as images)."""
        return self._labels

    def as_tensor(self) -> Tensor:
        """Every series, float32 (N, T, C), NaN where missing or past the series' end."""
        return self._values

    def __repr__(self) -> str:
        return f"SeriesDataset({self.name!r}, {self.split}, n={len(self)}, T={self.length}, C={self.channels})"


def load_series(spec: str, split: Split = "train", *, skip_bad: bool = False) -> SeriesDataset:
    """One split of the series source ``spec`` (see the module docstring).

    ``skip_bad`` drops what would stop the load with an error (they are named in
    ``dataset.skipped``): series whose every value is missing, and the rows of a .ts or CSV file
    that are ragged where the format wants equal lengths or hold a cell that is not a number.
    """
    if split not in ("train", "test"):
        raise SelfsupError(f"unknown split {split!r}; use 'train' or 'test'")
    prefix, _, argument = spec.partition(":")
    prefix, argument = prefix.strip().lower(), argument.strip()
    if prefix == "ucr":
        path = archive_file(argument, split)
    elif prefix == "series":
        if not argument:
            raise SelfsupError("series needs a path: --data series:PATH (.ts, .npy, .npz, .csv)")
        path = Path(argument).expanduser()
    else:
        raise SelfsupError(f"unknown series source {spec!r}; use ucr:NAME or series:PATH")
    bad_rows: list[str] | None = [] if skip_bad else None
    values, labels, names = _read(path, split, spec, bad_rows)
    values, labels, empty = _drop_empty(values, labels, spec, split, skip_bad)
    skipped = (bad_rows or []) + empty
    return SeriesDataset(values, labels, name=spec, split=split, class_names=names, skipped=skipped)


def archive_folders() -> list[Path]:
    """The folders of archive sets inside the installed packages of ``PACKAGES``, in order."""
    folders = []
    for package in PACKAGES:
        found = importlib.util.find_spec(package)  # locates it without importing it
        if found is None or not found.submodule_search_locations:
            continue
        folder = Path(next(iter(found.submodule_search_locations))) / "datasets" / "data"
        if folder.is_dir():
            folders.append(folder)
    return folders


def archive_file(name: str, split: Split) -> Path:
    """The ``.ts`` file of archive set ``name`` (case-insensitive) and ``split``."""
    known = {key.lower(): key for key in ARCHIVE_SETS}
    if name.lower() not in known:
        raise SelfsupError(
            f"unknown archive set {name!r}: ucr: takes one of {', '.join(ARCHIVE_SETS)}"
        )
    name = known[name.lower()]
    folders = archive_folders()
    if not folders:
        raise SelfsupError(
            f"ucr:{name} needs the archive files: pip install selfsup[series] (the sktime wheel)"
        )
    for folder in folders:  # sktime lacks PickupGestureWiimoteZ; aeon beside it has it
        path = folder / name / f"{name}_{split.upper()}.ts"
        if path.is_file():
            return path
    raise SelfsupError(
        f"{folders[0] / name / f'{name}_{split.upper()}.ts'} is missing: {name} ships only inside "
        + ("aeon; pip install aeon" if name == "PickupGestureWiimoteZ" else "sktime or aeon")
    )


def _read(
    path: Path, split: Split, spec: str, bad_rows: list[str] | None
) -> tuple[Tensor, Tensor | None, list[str] | None]:
    """Values, labels and class names; a bad row is appended to ``bad_rows`` when that is a
    list (``--skip-bad``), and stops the load with its line number when it is None."""
    if path.is_dir():
        path = _ts_in_folder(path, split)
    suffix = path.suffix.lower()
    if suffix == ".ts":
        return _read_ts(_ts_of_split(path, split), bad_rows)
    if not path.is_file():
        raise SelfsupError(f"series file {path} does not exist; check the path after series:")
    if path.stat().st_size == 0:
        raise SelfsupError(f"series file {path} is empty (0 bytes)")
    if suffix in (".npy", ".npz"):
        return _split_arrays(*_read_arrays(path), split)
    if suffix in (".csv", ".tsv"):
        return _split_arrays(*_read_csv(path, bad_rows), split)
    raise SelfsupError(
        f"{spec!r}: series files are .ts, .npy, .npz or .csv, not {suffix or path.name!r}"
    )


def _ts_in_folder(folder: Path, split: Split) -> Path:
    found = sorted(folder.glob(f"*_{split.upper()}.ts"))
    if len(found) != 1:
        raise SelfsupError(
            f"{folder} should hold one X_TRAIN.ts and one X_TEST.ts file, found "
            f"{', '.join(p.name for p in folder.glob('*.ts')) or 'none'}"
        )
    return found[0]


def _ts_of_split(path: Path, split: Split) -> Path:
    """``X_TRAIN.ts`` asked for the test split reads ``X_TEST.ts`` beside it."""
    stem = path.stem
    for tag in ("_TRAIN", "_TEST"):
        if stem.upper().endswith(tag):
            twin = path.with_name(stem[: -len(tag)] + f"_{split.upper()}.ts")
            if not twin.is_file():
                raise SelfsupError(f"{twin} is missing: a .ts set needs its _TRAIN and _TEST files")
            return twin
    if split == "test":
        raise SelfsupError(
            f"{path} is one file: name it X_TRAIN.ts with X_TEST.ts beside it to give a test split"
        )
    return path


def parse_ts(
    text: str, source: str = "the .ts file", bad_rows: list[str] | None = None
) -> tuple[list[np.ndarray], list[str] | None, list[str] | None]:
    """The cases of a ``.ts`` file (the sktime/aeon archive format): one float (T_i, C) array
    per case, NaN for ``?``; the labels as written; and the class names of its header.

    Header lines start with ``@`` (``@classLabel true a b c``, ``@timeStamps false``,
    ``@equalLength true``, ``@data``); after ``@data`` each line is one case, its dimensions
    separated by ``:`` and the label last; values within a dimension are separated by commas.
    Comments start with ``#``. A bad case (a cell that is not a number, another number of
    dimensions than the first case, or another length where ``@equalLength true``) stops the
    parse with its line number, or is described in ``bad_rows`` and left out when that is a
    list.
    """
    class_names: list[str] | None = None
    labelled = equal_length = in_data = False
    if not text.strip():
        raise SelfsupError(f"{source} is empty: a .ts file needs its header and @data lines")
    lines = [(n, raw.strip()) for n, raw in enumerate(text.splitlines(), start=1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    while lines and not in_data:
        words = lines.pop(0)[1].split()
        key = words[0].lower()
        flag = len(words) > 1 and words[1].lower() == "true"
        if key == "@timestamps" and flag:
            raise SelfsupError(
                f"{source}: time-stamped .ts files are not supported; write the values only"
            )
        if key in ("@classlabel", "@targetlabel") and len(words) > 1:
            labelled = flag
            if key == "@classlabel" and labelled:
                class_names = words[2:]
        equal_length = flag if key == "@equallength" else equal_length
        in_data = key == "@data"
    cases: list[np.ndarray] = []
    labels: list[str] = []

    def read(number: int, line: str) -> tuple[np.ndarray, str]:
        return _ts_case(line, labelled, equal_length, cases[:1], source, number)

    for case, label in _good_rows(lines, read, bad_rows):
        cases.append(case)
        labels.append(label)
    if not in_data:
        raise SelfsupError(f"{source} has no @data line: it is not a .ts file")
    if not cases:
        raise SelfsupError(f"{source} holds no series after @data")
    return cases, (labels if labelled else None), class_names


def _ts_case(
    line: str, labelled: bool, equal_length: bool, first: list[np.ndarray], source: str, number: int
) -> tuple[np.ndarray, str]:
    """One data line as float (T, C) and its label (``""`` when unlabelled), checked against
    the ``first`` case of the file (an empty list for the first case itself)."""
    fields = line.split(":")
    label = ""
    if labelled:
        if len(fields) < 2:
            raise SelfsupError(f"{source}, line {number}: a case with no label after ':'")
        label, fields = fields[-1].strip(), fields[:-1]
    lengths = {len(field.split(",")) for field in fields}
    if equal_length and len(lengths) > 1:
        raise SelfsupError(
            f"{source}, line {number}: dimensions of {sorted(lengths)} values where the "
            "header says @equalLength true"
        )
    case = _case(fields, source, number)
    if first and case.shape[1] != first[0].shape[1]:
        raise SelfsupError(
            f"{source}, line {number}: {case.shape[1]} dimensions where the first case has "
            f"{first[0].shape[1]}; every case needs the same"
        )
    if first and equal_length and case.shape[0] != first[0].shape[0]:
        raise SelfsupError(
            f"{source}, line {number}: {case.shape[0]} values where the first case has "
            f"{first[0].shape[0]} and the header says @equalLength true"
        )
    return case, label


def _case(fields: list[str], source: str, number: int) -> np.ndarray:
    """One case's dimensions (comma-separated values each) as float (T, C), NaN-padded."""
    dims = []
    for field in fields:
        cells = field.split(",")
        dims.append([_number(cell, source, number) for cell in cells])
    length = max(len(d) for d in dims)
    out = np.full((length, len(dims)), np.nan)
    for c, d in enumerate(dims):
        out[: len(d), c] = d
    return out


def _number(cell: str, source: str, number: int) -> float:
    cell = cell.strip()
    if cell in MISSING:
        return math.nan
    try:
        return float(cell)
    except ValueError:
        raise SelfsupError(f"{source}, line {number}: {cell[:20]!r} is not a number") from None


def _read_ts(
    path: Path, bad_rows: list[str] | None
) -> tuple[Tensor, Tensor | None, list[str] | None]:
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as error:
        raise SelfsupError(f"cannot read {path} as text ({error})") from None
    cases, labels, names = parse_ts(text, str(path), bad_rows)
    values = _stack(cases)
    if labels is None:
        return values, None, None
    names = names or sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise SelfsupError(
            f"{path}: label {unknown[0]!r} is not among @classLabel {' '.join(names)}"
        )
    return values, torch.tensor([index[label] for label in labels]), names


def _stack(cases: list[np.ndarray]) -> Tensor:
    """(T_i, C) arrays -> float32 (N, max T_i, C), NaN past each one's end."""
    length = max(case.shape[0] for case in cases)
    out = np.full((len(cases), length, cases[0].shape[1]), np.nan, dtype=np.float32)
    for i, case in enumerate(cases):
        out[i, : case.shape[0]] = case
    return torch.from_numpy(out)


def _read_arrays(path: Path) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Series (N, T[, C]) under ``x``/``series`` (or a bare .npy), labels under ``y``/``labels``,
    and ``x_test``/``y_test`` when present."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        if "Object arrays" in str(error):
            raise SelfsupError(
                f"{path} holds an object array (series of different lengths?): pad every "
                "series with NaN to one length, a float array (N, T[, C])"
            ) from None
        raise SelfsupError(
            f"cannot read {path} as .npy/.npz ({error}); save it with np.save(z)"
        ) from None
    if isinstance(loaded, np.ndarray):
        return _as_series(loaded, path), None, None, None
    with loaded:
        keys = list(loaded.files)

        def first(options: tuple[str, ...]) -> np.ndarray | None:
            key = next((k for k in options if k in keys), None)
            return loaded[key] if key is not None else None

        x = first(("series", "x", "X"))
        if x is None:
            raise SelfsupError(
                f"{path} holds {', '.join(keys)}: name the series 'x' (and labels 'y')"
            )
        y, x_test, y_test = (
            first(("labels", "y", "Y")),
            first(("x_test", "X_test")),
            first(("y_test", "Y_test")),
        )
    return (
        _as_series(x, path),
        _as_labels(y, path, len(x)),
        _as_series(x_test, path) if x_test is not None else None,
        _as_labels(y_test, path, len(x_test)) if x_test is not None else None,
    )


def _as_series(array: np.ndarray, path: Path) -> Tensor:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.number):
        raise SelfsupError(
            f"{path}: series must be a numeric array (N, T) or (N, T, C), got {array.dtype} {array.shape}"
        )
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _as_labels(y: np.ndarray | None, path: Path, n: int) -> Tensor | None:
    if y is None:
        return None
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise SelfsupError(
            f"{path}: labels must be integers (N,) = ({n},), got {y.dtype} {y.shape}"
        )
    return torch.from_numpy(y.astype(np.int64))


def _read_csv(path: Path, bad_rows: list[str] | None) -> tuple[Tensor, Tensor | None, None, None]:
    """One series per row; a first row that is not numeric is a header, and its ``label`` (or
    ``class``) column holds integer labels. Every row must have as many cells as the first (a
    row that has not, or holds a cell that is not a number, stops the load, or is described in
    ``bad_rows`` and left out when that is a list)."""
    with path.open(newline="") as f:
        sample = f.read(4096)
        f.seek(0)
        dialect = csv.excel_tab if path.suffix.lower() == ".tsv" or "\t" in sample else csv.excel
        rows = [row for row in csv.reader(f, dialect) if row]
    if not rows:
        raise SelfsupError(f"{path} is empty: write one series per row")
    header = None
    if any(_not_number(cell) for cell in rows[0]):
        header, rows = [cell.strip().lower() for cell in rows[0]], rows[1:]
    if not rows:
        raise SelfsupError(f"{path} has a header but no series")
    width = len(header) if header else len(rows[0])
    label_col = next((header.index(k) for k in ("label", "class") if header and k in header), None)
    values, labels = [], []
    numbered = enumerate(rows, start=2 if header else 1)

    def read(number: int, row: list[str]) -> tuple[list[float], int]:
        return _csv_row(row, width, label_col, path, number)

    for series, label in _good_rows(numbered, read, bad_rows):
        values.append(series)
        labels.append(label)
    if not values:
        raise SelfsupError(f"{path}: every row was bad ({bad_rows[0] if bad_rows else ''})")
    x = torch.tensor(values, dtype=torch.float32)[:, :, None]  # (N, T, 1)
    return x, (torch.tensor(labels) if label_col is not None else None), None, None


def _csv_row(
    row: list[str], width: int, label_col: int | None, path: Path, number: int
) -> tuple[list[float], int]:
    """One CSV row's values and its label (-1 without a label column)."""
    if len(row) != width:
        raise SelfsupError(
            f"{path}, line {number}: {len(row)} cells where the first row has {width}"
        )
    label = -1
    if label_col is not None:
        try:
            label = int(row[label_col])
        except ValueError:
            raise SelfsupError(
                f"{path}, line {number}: label {row[label_col]!r} is not an integer"
            ) from None
        row = row[:label_col] + row[label_col + 1 :]
    return [_number(cell, str(path), number) for cell in row], label


def _good_rows(
    numbered: Iterable[tuple[int, Row]],
    read: Callable[[int, Row], Read],
    bad_rows: list[str] | None,
) -> Iterator[Read]:
    """Each numbered row through ``read``; the ``SelfsupError`` of a bad row stops the load, or,
    when ``bad_rows`` is a list (``--skip-bad``), is appended there and the row left out."""
    for number, row in numbered:
        try:
            yield read(number, row)
        except SelfsupError as error:
            if bad_rows is None:
                raise
            bad_rows.append(str(error))


def _not_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return cell.strip() not in MISSING
    return False


def _split_arrays(
    x: Tensor, y: Tensor | None, x_test: Tensor | None, y_test: Tensor | None, split: Split
) -> tuple[Tensor, Tensor | None, None]:
    """The file's own test set when it has one, else a fixed seeded 80/20 split."""
    if x_test is not None:
        return (x, y, None) if split == "train" else (x_test, y_test, None)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    n_test = int(round(TEST_FRACTION * len(x)))
    keep = torch.from_numpy(np.sort(order[:n_test] if split == "test" else order[n_test:]))
    return x[keep], (y[keep] if y is not None else None), None


def _drop_empty(
    values: Tensor, labels: Tensor | None, spec: str, split: Split, skip_bad: bool
) -> tuple[Tensor, Tensor | None, list[str]]:
    """Series with no observed value are an error, or dropped and named with ``skip_bad``."""
    empty = torch.isnan(values).flatten(1).all(dim=1)  # (N,)
    if not empty.any():
        return values, labels, []
    rows = empty.nonzero().flatten().tolist()
    if not skip_bad:
        raise SelfsupError(
            f"{spec} ({split}): series {rows[0]} has no values (all missing); "
            f"{len(rows)} such series: remove them or pass --skip-bad"
        )
    keep = ~empty
    return (
        values[keep],
        (labels[keep] if labels is not None else None),
        [f"{spec}[{split}][{r}]" for r in rows],
    )


@functools.cache
def shipped_sets() -> tuple[str, ...]:
    """The archive sets found in the installed packages."""
    folders = archive_folders()
    return tuple(
        n for n in ARCHIVE_SETS if any((f / n / f"{n}_TRAIN.ts").is_file() for f in folders)
    )
