"""Progress bars for the commands that take a while (data synth, download and import, the broker's
first fetch, train's epochs): rich, on stderr, and only where stderr is a terminal, so a log file,
CI or a pipe gets none of their control codes.

"A terminal" is rich's reading of stderr: a tty, or `TTY_COMPATIBLE=1` / `FORCE_COLOR` set (and
`TTY_COMPATIBLE=0` turns the bars off on a tty).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID


def stderr_terminal() -> Console | None:
    """stderr as a rich console where it is a terminal, else None."""
    console = Console(stderr=True)
    return console if console.is_terminal else None


class ProgressBars:
    """rich progress bars on stderr while it is a terminal; elsewhere every call does nothing,
    so the code that reports progress never asks where it runs.

    with ProgressBars(TextColumn("{task.description}"), BarColumn()) as bars:
        task = bars.add("BTC-USD", total=3)
        bars.update(task, advance=1)
    """

    def __init__(self, *columns: str | ProgressColumn, transient: bool = False) -> None:
        console = stderr_terminal()
        self._progress = None if console is None else Progress(*columns, console=console, transient=transient)

    @property
    def shown(self) -> bool:
        """Whether the bars are drawn (stderr is a terminal)."""
        return self._progress is not None

    def add(self, description: str, total: float | None, completed: int = 0, **fields: Any) -> TaskID:
        """A bar; `total` None is a bar of unknown length (it pulses)."""
        if self._progress is None:
            return TaskID(0)
        return self._progress.add_task(description, total=total, completed=completed, **fields)

    def update(
        self,
        task: TaskID,
        *,
        advance: float | None = None,
        total: float | None = None,
        description: str | None = None,
        **fields: Any,
    ) -> None:
        """Move a bar on (`total` None: its length stays as it is)."""
        if self._progress is not None:
            self._progress.update(task, advance=advance, total=total, description=description, **fields)

    def finish(self, task: TaskID, description: str | None = None, **fields: Any) -> None:
        """Fill the bar (a bar of unknown length gets the length it reached)."""
        if self._progress is None:
            return
        state = next(t for t in self._progress.tasks if t.id == task)
        length = state.total if state.total is not None else max(state.completed, 1)
        self._progress.update(task, total=length, completed=length, description=description, **fields)

    def __enter__(self) -> ProgressBars:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
