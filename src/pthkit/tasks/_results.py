"""What every fine-tuning result shares (images: :class:`~pthkit.tasks.finetune.FinetuneResult`, tables:
:class:`~pthkit.tasks.tabular.TabularResult`): the per-epoch history, the best epoch in it, and the JSON form."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["EpochHistory"]


class EpochHistory:
    """A mixin for fine-tuning result dataclasses with ``out_dir``, ``history`` and ``best_epoch`` fields."""

    out_dir: Path
    history: list[dict[str, Any]]
    best_epoch: int | None

    @property
    def best(self) -> dict[str, Any] | None:
        """The history entry of the best epoch (the one written as the bundle), if any."""
        return next((h for h in self.history if h["epoch"] == self.best_epoch), None)

    def to_dict(self) -> dict[str, Any]:
        """Every field (``out_dir`` as text) plus ``best``: JSON-ready."""
        d = asdict(self)  # type: ignore[call-overload]  # the subclasses are dataclasses
        d["out_dir"] = str(self.out_dir)
        d["best"] = self.best
        return d
