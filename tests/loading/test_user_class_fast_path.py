"""A user's class (``--arch file.py:Class``) whose tensors fit it by name is built directly: no registry of timm and
torchvision, no identification index (3 s of a 5 s run on a small table model). One whose names differ still gets
identification's key map, so loading across naming conventions keeps working."""

from __future__ import annotations

from pathlib import Path

import torch

import pthkit
from pthkit.architectures.registry import Registry

from _tabular_model import MODEL_PY, MyModel


def _write(tmp_path: Path, state: dict[str, torch.Tensor]) -> tuple[Path, str]:
    (tmp_path / "my_model.py").write_text(MODEL_PY)
    weights = tmp_path / "w.pth"
    torch.save(state, weights)
    return weights, f"{tmp_path / 'my_model.py'}:MyModel"


def _count_identify(monkeypatch) -> list[int]:
    import pthkit.architectures as arch_pkg

    calls: list[int] = []
    real = arch_pkg.identify

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(arch_pkg, "identify", counting)
    return calls


def test_a_file_spec_resolves_without_loading_the_registry(tmp_path: Path) -> None:
    (tmp_path / "my_model.py").write_text(MODEL_PY)
    registry = Registry()
    arch = registry.get(f"{tmp_path / 'my_model.py'}:MyModel")
    assert arch.source == "user" and not registry._loaded


def test_a_user_class_that_fits_by_name_skips_identification(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    original = MyModel().eval()
    weights, spec = _write(tmp_path, {f"module.{k}": v for k, v in original.state_dict().items()})
    calls = _count_identify(monkeypatch)
    model = pthkit.open(weights, arch=spec, device="cpu")
    assert calls == []
    x = torch.randn(5, 10)
    assert model.module is not None
    with torch.no_grad():
        assert torch.allclose(model.module(x), original(x), atol=1e-6)


def test_a_user_class_with_other_names_still_gets_a_key_map(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(1)
    original = MyModel().eval()
    renamed = {k.replace("layer1", "fc_in").replace("layer2", "fc_out"): v for k, v in original.state_dict().items()}
    weights, spec = _write(tmp_path, renamed)
    calls = _count_identify(monkeypatch)
    model = pthkit.open(weights, arch=spec, device="cpu")
    assert calls  # the names did not fit: identification aligned them
    x = torch.randn(5, 10)
    assert model.module is not None
    with torch.no_grad():
        assert torch.allclose(model.module(x), original(x), atol=1e-6)
