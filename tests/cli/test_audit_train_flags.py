"""`pthkit finetune` hands every training flag the issue names (freeze-then-unfreeze, accumulation, class
imbalance, bf16, early stopping, step checkpoints, resume, seed, split) to `pthkit.tasks.finetune.finetune`
unchanged. The training behaviour behind each one is tested in tests/tasks/test_finetune.py; this checks the wiring
without training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pthkit.cli.main import main


class _Result:
    def to_dict(self) -> dict[str, Any]:
        return {"ok": True}

    def __str__(self) -> str:
        return "trained"


def test_finetune_flags_reach_the_api(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch):
    import pthkit.tasks.finetune as ft

    seen: dict[str, Any] = {}

    def fake(weights, data, out, **kwargs):
        seen.update(kwargs, weights=weights, data=data, out=out)
        return _Result()

    monkeypatch.setattr(ft, "finetune", fake)
    data = tmp_path / "data"
    data.mkdir()
    code = main(["finetune", "w.pth", str(data), "--out", str(tmp_path / "run"), "--freeze-epochs", "2",
                 "--accum-steps", "3", "--class-weights", "balanced", "--amp", "bf16", "--patience", "4",
                 "--save-every-steps", "5", "--resume", "--seed", "7", "--val-split", "0.3", "--monitor", "val_loss",
                 "--epochs", "6", "--no-progress"])
    assert code == 0, capsys.readouterr()
    assert "trained" in capsys.readouterr().out
    expected = {"freeze_epochs": 2, "accum_steps": 3, "class_weights": "balanced", "amp": "bf16", "patience": 4,
                "save_every_steps": 5, "resume": True, "seed": 7, "val_split": 0.3, "monitor": "val_loss",
                "epochs": 6, "progress": False}
    assert {k: seen[k] for k in expected} == expected
    assert Path(seen["out"]) == tmp_path / "run"
