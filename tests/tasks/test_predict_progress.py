"""predict(progress=True) drives the one progress helper (pthkit.engine.progress.ProgressBar) over every input (failed
ones included), closes it at the end, and gives the same answers as a run without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image

import pthkit.engine.core as core
from pthkit.engine.progress import ProgressBar
from pthkit.preprocess.types import Preprocess
from pthkit.tasks.predict import predict

PRE = Preprocess(input_size=(3, 64, 64), crop_pct=1.0)


def test_progress_bar_counts_every_input_and_stops(tmp_path: Path, monkeypatch):
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=10).eval()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not a picture")
    paths.append(bad)

    made: list[dict[str, object]] = []

    class Recording(ProgressBar):
        def __init__(self, label: str, total: int | None, *, enabled: bool = True, **kw: object) -> None:
            super().__init__(label, total, enabled=enabled, **kw)  # type: ignore[arg-type]
            self.seen = {"total": total, "enabled": enabled, "advanced": 0, "closed": False}
            made.append(self.seen)

        def advance(self, steps: float = 1) -> None:
            self.seen["advanced"] += steps  # type: ignore[operator]
            super().advance(steps)

        def close(self) -> None:
            self.seen["closed"] = True
            super().close()

    monkeypatch.setattr(core, "ProgressBar", Recording)
    with_bar = list(predict(model, PRE, paths, batch_size=2, workers=0, progress=True))
    without = list(predict(model, PRE, paths, batch_size=2, workers=0))
    assert made[0] == {"total": 6, "enabled": True, "advanced": 6, "closed": True}
    assert made[1]["enabled"] is False
    assert [p.ok for p in with_bar] == [True] * 5 + [False]
    assert [[c.index for c in p.classes] for p in with_bar] == [[c.index for c in p.classes] for p in without]
