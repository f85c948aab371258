"""Some of a data set's samples, standing in for the whole set wherever the engine or the
evaluation reads one: a federated client's share, the classes of one task of a stream."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Subset

from selfsup.errors import SelfsupError


class IndexSubset(Subset):
    """The samples ``indices`` of ``dataset``, standing in for it wherever the engine reads a
    data set: indexing, length, labels, and the whole-tensor view of in-memory data. A torch
    ``Subset``, so the evaluation's helpers see through it (labels, texts, collate)."""

    def __init__(self, dataset: Any, indices: Tensor) -> None:
        super().__init__(dataset, indices)  # type: ignore[arg-type]
        self.epoch_order = None  # a shard's windowed order does not apply to a subset
        self._inputs: Tensor | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:  # type: ignore[override]
        return self.dataset[int(self.indices[index])]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        return [self[i] for i in indices]

    def labels(self) -> Tensor:
        return self.dataset.labels()[self.indices]  # type: ignore[attr-defined]

    def as_tensor(self) -> Tensor:
        if self._inputs is None:
            self._inputs = self.dataset.as_tensor()[self.indices]  # type: ignore[attr-defined]
        return self._inputs

    def __getattr__(self, name: str) -> Any:  # name, input_key, in_memory, ... of the whole set
        if name in ("dataset", "indices", "_inputs"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


def keep_classes(dataset: Any, classes: tuple[int, ...] | None, spec: str) -> Any:
    """``dataset`` with only the samples whose label is in ``classes`` (all when None); the
    labels keep their ids, so the tasks of a stream share one label space."""
    if classes is None:
        return dataset
    if not getattr(dataset, "has_labels", False):
        raise SelfsupError(
            f"data.classes keeps the samples of some classes, but {spec!r} has no labels: "
            "drop data.classes"
        )
    labels = torch.as_tensor(dataset.labels()).long().reshape(-1)  # (N,)
    keep = torch.isin(labels, torch.tensor(sorted(set(classes)), dtype=torch.long))
    if not bool(keep.any()):
        found = sorted(set(labels.tolist()))
        raise SelfsupError(
            f"data.classes {list(classes)} keeps no sample of {spec!r}, whose classes are {found}"
        )
    return IndexSubset(dataset, torch.nonzero(keep).flatten())
