"""One progress helper for every loop in pthkit (predict, evaluate, fine-tune, index build) and the run counters that
Ctrl-C reports ("interrupted after N of M images").

:class:`ProgressBar` is a thin wrapper over ``rich.progress`` on stderr (a no-op when disabled), with optional text
fields (loss, accuracy, img/s). :class:`RunCounters` count what a run has handed out; the latest started run is
published for :func:`current_progress`, which the CLI reads when it catches ``KeyboardInterrupt``.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from typing_extensions import Self

__all__ = ["ProgressBar", "RunCounters", "current_progress", "progress_bar", "publish"]


class RunCounters:
    """``done`` of ``total`` inputs handed out so far (``failed`` of them failed), in ``unit`` (``"images"`` …)."""

    def __init__(self, total: int, unit: str = "inputs") -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.unit = unit

    def add(self, done: int, failed: int = 0) -> None:
        self.done += done
        self.failed += failed

    def note(self) -> str:
        """``interrupted after N of M images`` (what the CLI prints on Ctrl-C)."""
        return f"interrupted after {self.done} of {self.total} {self.unit}"


_lock = threading.Lock()
_current: RunCounters | None = None


def publish(counters: RunCounters | None) -> None:
    """Make ``counters`` the run :func:`current_progress` reports (``None``: no run)."""
    global _current
    with _lock:
        _current = counters


def current_progress() -> tuple[int, int, str]:
    """``(done, total, unit)`` of the latest run started in this process (``(0, 0, "")`` when none)."""
    with _lock:
        c = _current
    return (c.done, c.total, c.unit) if c is not None else (0, 0, "")


class ProgressBar:
    """A rich progress bar on stderr: ``label  ━━━━━  12/80  0:00:03  <fields>``; every method is a no-op when disabled.

    Args:
        label: text before the bar.
        total: steps (``None``: unknown).
        enabled: ``False`` makes it a no-op (non-terminal stderr, rank > 0 …).
        fields: names of text fields shown after the bar, set with :meth:`update` (e.g. ``("loss", "acc")``).
        transient: remove the bar when done (predict) or keep it (training epochs).
        elapsed: show elapsed time instead of time remaining.
    """

    def __init__(self, label: str, total: int | None, *, enabled: bool = True, fields: tuple[str, ...] = (),
                 transient: bool = True, elapsed: bool = False) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._fields = fields
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn() if elapsed else TimeRemainingColumn()]
        columns += [TextColumn(f"{name} {{task.fields[{name}]}}") for name in fields]
        self._bar = Progress(*columns, console=Console(stderr=True), transient=transient)
        self._task = self._bar.add_task(label, total=total, **{name: "-" for name in fields})
        self._bar.start()

    @property
    def enabled(self) -> bool:
        return self._bar is not None

    def advance(self, steps: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, steps)

    def update(self, *, description: str | None = None, total: int | None = None, completed: float | None = None,
               **fields: str) -> None:
        """Change the label, the total, the position or the text fields."""
        if self._bar is None:
            return
        kwargs: dict[str, Any] = dict(fields)
        if description is not None:
            kwargs["description"] = description
        if total is not None:
            kwargs["total"] = total
        if completed is not None:
            kwargs["completed"] = completed
        self._bar.update(self._task, **kwargs)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def progress_bar(label: str, total: int | None, *, enabled: bool = True, **options: Any) -> ProgressBar:
    """Shorthand for :class:`ProgressBar` (``options``: ``fields``, ``transient``, ``elapsed``)."""
    return ProgressBar(label, total, enabled=enabled, **options)
