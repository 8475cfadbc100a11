"""--backend onnxruntime|openvino|auto (pthkit.engine.auto_backend.apply_backend): export once (cached by the
weights' hash in the cache folder), parity on the calibration images, fastest passing backend, else torch saying why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from tests.export.conftest import small_model

from pthkit.engine import auto_backend
from pthkit.errors import ExportError, ParityError


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "exports"


def _seeded_export(cache: Path, onnx_export: tuple, model: Any) -> None:
    """Put the session's ONNX export where the cache expects it (the export itself is tested elsewhere)."""
    import shutil

    folder = cache / auto_backend.export_key(model)
    folder.mkdir(parents=True)
    shutil.copy(onnx_export[1], folder / "model.onnx")
    (folder / "done").write_text("test")


def test_onnxruntime_backend_sets_runner_and_evidence(cache: Path, onnx_export: tuple) -> None:
    model = small_model()
    _seeded_export(cache, onnx_export, model)
    auto_backend.apply_backend(model, "onnxruntime")
    assert model.runner is not None and model.runner.name == "onnxruntime" and model.module is not None
    line = model.evidence[-1]
    assert line.startswith("backend onnxruntime (given): parity passed") and "top-1 44/44" in line
    assert model.runner.describe()["parity"]["passed"] is True
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model.runner(x), model.module(x), atol=1e-4)


@pytest.mark.slow
def test_auto_races_and_caches_the_decision(cache: Path, onnx_export: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model()
    _seeded_export(cache, onnx_export, model)
    auto_backend.apply_backend(model, "auto")
    line = next(e for e in model.evidence if e.startswith("backend auto:"))
    assert "/s" in line  # the measured speeds are shown
    chosen = model.runner.name if model.runner is not None else "torch"
    assert chosen in line
    # warm: the decision is read back, nothing is exported, timed or checked again
    monkeypatch.setattr(auto_backend, "_race", lambda *a: pytest.fail("raced again"))
    again = small_model()
    auto_backend.apply_backend(again, "auto")
    assert any("(decision cached)" in e for e in again.evidence)
    assert (again.runner.name if again.runner is not None else "torch") == chosen


def test_auto_falls_back_to_torch_when_export_fails(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: Any, **_k: Any) -> None:
        raise ExportError("ONNX export: received dynamo: boom; torchscript: boom too; expected a traceable model.")

    monkeypatch.setattr("pthkit.export.onnx_export.export_onnx", broken)
    model = small_model()
    auto_backend.apply_backend(model, "auto")
    assert model.runner is None
    assert any(e.startswith("backend auto: torch (the ONNX export failed: ONNX export: received dynamo: boom")
               for e in model.evidence)
    assert any("--backend auto stayed on torch" in w for w in model.warnings)


def test_auto_falls_back_to_torch_when_parity_fails(cache: Path, onnx_export: tuple,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_model()
    _seeded_export(cache, onnx_export, model)
    real = auto_backend._make_runner

    class Perturbed:
        def __init__(self, inner: Any) -> None:
            self.inner, self.name, self.parity = inner, inner.name, None

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) + 0.5

        def describe(self) -> dict[str, Any]:
            return self.inner.describe()

    monkeypatch.setattr(auto_backend, "_make_runner", lambda name, path: Perturbed(real(name, path)))
    auto_backend.apply_backend(model, "auto")
    assert model.runner is None
    assert any(e.startswith("backend auto: onnxruntime rejected (parity FAILED") for e in model.evidence)
    assert any("no runtime passed parity" in e for e in model.evidence)
    assert any("no runtime passed parity" in w for w in model.warnings)
    # asked for explicitly, a parity failure is an error, never a silent swap
    with pytest.raises(ParityError, match="--backend onnxruntime"):
        auto_backend.apply_backend(small_model(), "onnxruntime")


def test_cache_key_follows_the_weights() -> None:
    a, b = small_model(), small_model()
    assert auto_backend.export_key(a) == auto_backend.export_key(b)
    with torch.no_grad():
        next(b.module.parameters()).add_(1.0)
    assert auto_backend.export_key(a) != auto_backend.export_key(b)


def test_unknown_backend_is_refused() -> None:
    from pthkit.errors import PreprocessError

    with pytest.raises(PreprocessError, match="--backend"):
        auto_backend.apply_backend(small_model(), "tensorrt")
