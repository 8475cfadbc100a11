"""Issue 4: a progress bar on long runs. `predict(progress=True)` drives a rich bar over every input (failed
ones included), stops it at the end, and gives the same answers as a run without it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image

import pthkit.tasks.predict as predict_mod
from pthkit.preprocess.types import Preprocess

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

    made: list[dict[str, Any]] = []
    original = predict_mod._progress

    def recording(total: int):
        bar, task = original(total)
        seen = {"total": total, "advanced": 0, "stopped": False}
        advance, stop = bar.advance, bar.stop

        def _advance(t, n):
            seen["advanced"] += n
            advance(t, n)

        def _stop():
            seen["stopped"] = True
            stop()

        bar.advance, bar.stop = _advance, _stop
        made.append(seen)
        return bar, task

    monkeypatch.setattr(predict_mod, "_progress", recording)
    with_bar = list(predict_mod.predict(model, PRE, paths, batch_size=2, workers=0, progress=True))
    without = list(predict_mod.predict(model, PRE, paths, batch_size=2, workers=0))
    assert made == [{"total": 6, "advanced": 6, "stopped": True}]
    assert [p.ok for p in with_bar] == [True] * 5 + [False]
    assert [[c.index for c in p.classes] for p in with_bar] == [[c.index for c in p.classes] for p in without]
