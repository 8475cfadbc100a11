"""Issue 5: AdamW with a linear warm-up then cosine schedule. The schedule's shape, and the optimizer a run saves."""

from __future__ import annotations

import math

import pytest

from pthkit.tasks.finetune import _cosine_warmup


def test_linear_warmup_then_cosine_to_zero():
    f = _cosine_warmup(4, 14)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(14) == pytest.approx(0.0, abs=1e-12)
    decay = [f(s) for s in range(4, 15)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_no_warmup_starts_at_full_rate():
    f = _cosine_warmup(0, 10)
    assert f(0) == pytest.approx(1.0) and f(10) == pytest.approx(0.0, abs=1e-12)


def test_progress_bar_shows_loss_accuracy_and_throughput(tmp_path, monkeypatch):
    import re
    import sys
    from pathlib import Path

    import torch

    import pthkit.tasks.finetune as ft

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _train_data import TINY_ARCH, make_image_folder, make_tiny_weights

    stats: list[str] = []
    update = ft._Progress.update

    def recording(self, advance, stats_text=None):
        if stats_text is not None:
            stats.append(stats_text)
        update(self, advance, stats_text)

    monkeypatch.setattr(ft._Progress, "update", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        weights = make_tiny_weights(tmp_path / "w.pth")
        data = make_image_folder(tmp_path / "data", per_class=4, size=32)
        ft.finetune(weights, data, tmp_path / "out", arch=TINY_ARCH, epochs=1, batch_size=4, size=32, workers=0,
                    seed=0, progress=True)
    finally:
        torch.set_num_threads(threads)
    assert stats, "the bar was never given loss/accuracy/throughput"
    assert re.fullmatch(r"loss \d+\.\d{4} acc [01]\.\d{3} \d+ img/s", stats[-1]), stats[-1]
