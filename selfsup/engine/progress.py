"""The training progress bar: step, loss, learning rate, samples/s and time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class TrainProgress:
    """A rich progress bar that is silent where ``enabled`` is False (other ranks, tests)."""

    def __init__(
        self, total: int, start: int = 0, enabled: bool = True, description: str = "pretrain"
    ) -> None:
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.2e}  {task.fields[sps]:.0f} samples/s"
            ),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task(
            description, total=total, completed=start, loss=float("nan"), lr=0.0, sps=0.0
        )

    def __enter__(self) -> TrainProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def set_total(self, total: int) -> None:
        self.progress.update(self.task, total=total)

    def update(self, step: int, loss: float, lr: float, samples_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, lr=lr, sps=samples_per_s)
