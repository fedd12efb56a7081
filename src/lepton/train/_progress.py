"""Progress display: a rich progress bar on a terminal, periodic lines otherwise, or nothing."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TrainingProgress:
    """Shows epochs and batches while training.

    ``enabled=False`` shows nothing. On a terminal it draws a progress bar; when stderr is not a
    terminal (CI logs, pipes) it prints one summary line every ``max(1, epochs // 10)`` epochs.
    """

    def __init__(self, epochs: int, enabled: bool = True, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.epochs = epochs
        self.enabled = enabled
        self.live = enabled and self.console.is_terminal
        self.every = max(1, epochs // 10)
        self._progress: Progress | None = None
        self._epoch_task: TaskID | None = None
        self._batch_task: TaskID | None = None

    def __enter__(self) -> TrainingProgress:
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[info]}"),
                console=self.console,
                transient=True,
            )
            self._progress.__enter__()
            self._epoch_task = self._progress.add_task("epochs", total=self.epochs, info="")
            self._batch_task = self._progress.add_task("batches", total=1, info="")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def start(self, done_epochs: int) -> None:
        if self._progress is not None and self._epoch_task is not None:
            self._progress.update(self._epoch_task, completed=done_epochs)

    def start_epoch(self, epoch: int, batches: int, done: int = 0) -> None:
        if self._progress is not None and self._batch_task is not None:
            self._progress.reset(self._batch_task, total=batches, completed=done, info="")
            self._progress.update(self._batch_task, description=f"epoch {epoch}")

    def advance_batch(self, loss: float) -> None:
        if self._progress is not None and self._batch_task is not None:
            self._progress.update(self._batch_task, advance=1, info=f"loss {loss:.4f}")

    def end_epoch(self, epoch: int, summary: str) -> None:
        if self._progress is not None and self._epoch_task is not None:
            self._progress.update(self._epoch_task, completed=epoch, info=summary)
        elif self.enabled and (epoch % self.every == 0 or epoch == self.epochs or epoch == 1):
            self.console.print(
                f"epoch {epoch}/{self.epochs}  {summary}", highlight=False, soft_wrap=True
            )

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True)
