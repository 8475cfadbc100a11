"""pthkit.open: one typed handle for every source, names read from files never imported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import pthkit
from pthkit.errors import (
    ArchitectureError,
    BundleError,
    InputNotFoundError,
    PreprocessError,
    UnsafeCheckpointError,
)
from pthkit.model import Model


@pytest.fixture
def resnet_file(tmp_path: Path) -> Path:
    import timm

    torch.manual_seed(0)

    net = timm.create_model("resnet18", num_classes=7)
    path = tmp_path / "resnet.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture
def mlp_file(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 2))
    path = tmp_path / "mlp.pth"
    torch.save(net.state_dict(), path)
    code = tmp_path / "my_model.py"
    code.write_text(
        "from torch import nn\n"
        "class MyModel(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.layer1 = nn.Linear(10, 50)\n"
        "        self.layer2 = nn.Linear(50, 2)\n"
        "    def forward(self, x):\n"
        "        return self.layer2(self.layer1(x).relu())\n"
    )
    state = {"layer1.weight": net[0].weight, "layer1.bias": net[0].bias,
             "layer2.weight": net[2].weight, "layer2.bias": net[2].bias}
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return path, net


def test_open_weights_with_arch_gives_typed_handle(resnet_file: Path) -> None:
    m = pthkit.open(resnet_file, arch="timm:resnet18", device="cpu")
    assert isinstance(m, Model)
    assert m.architecture == "timm:resnet18"
    assert m.source.kind == "weights" and m.source.path == resnet_file
    assert m.input_spec.kind == "image"
    assert m.preprocess is not None and m.preprocess.input_size[0] == 3
    assert m.task == "classify"
    assert m.report is not None and m.report.ok and m.report.complete
    assert m.module is not None and not m.module.training
    data = m.to_dict()
    json.dumps(data)  # JSON-ready
    assert data["architecture"] == "timm:resnet18"
    assert "timm:resnet18" in m.describe()


def test_open_weights_matches_original_outputs(tmp_path: Path) -> None:
    import timm

    torch.manual_seed(1)
    net = timm.create_model("resnet18", num_classes=5).eval()
    path = tmp_path / "r.pth"
    torch.save(net.state_dict(), path)
    m = pthkit.open(path, arch="timm:resnet18", device="cpu")
    x = torch.randn(2, 3, 64, 64)
    assert m.module is not None
    with torch.no_grad():
        assert torch.allclose(m.module(x), net(x), atol=1e-6)


def test_predict_validates_arguments_eagerly(resnet_file: Path, tmp_path: Path) -> None:
    m = pthkit.open(resnet_file, arch="timm:resnet18", device="cpu")
    with pytest.raises(PreprocessError):
        m.predict([], top_k=0)
    with pytest.raises(PreprocessError):
        m.predict([], batch_size=0)
    with pytest.raises(PreprocessError):
        m.predict([], mode="probabilities")  # type: ignore[arg-type]


def test_predict_on_images_returns_rows(resnet_file: Path) -> None:
    from pthkit.samples import demo_photos

    m = pthkit.open(resnet_file, arch="timm:resnet18", device="cpu", labels=[f"c{i}" for i in range(7)])
    rows = list(m.predict(demo_photos()[:2], top_k=3))
    assert len(rows) == 2 and all(r.ok for r in rows)
    assert rows[0].classes[0].label.startswith("c")
    assert abs(sum(c.score for c in rows[0].classes) - 1.0) < 1.0  # top-3 of a softmax


def test_open_missing_path_is_typed() -> None:
    with pytest.raises(InputNotFoundError):
        pthkit.open("/nonexistent/model.pth")


def test_open_bad_task_is_typed(resnet_file: Path) -> None:
    with pytest.raises(PreprocessError):
        pthkit.open(resnet_file, arch="timm:resnet18", task="segment")  # type: ignore[arg-type]


def test_open_module_in_memory_is_not_mutated() -> None:
    net = nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 2)).train()
    m = pthkit.open(net)
    assert m.module is net and net.training  # described, not changed
    assert m.input_spec.kind != "image"


# --- bundles: names read from files are never imported -----------------------------------------------------------------


def _bundle(tmp_path: Path, arch: str, kwargs: dict | None = None) -> Path:
    from safetensors.torch import save_model

    folder = tmp_path / "bundle"
    folder.mkdir()
    save_model(nn.Linear(2, 2), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "x", "num_classes": None,
        "pthkit": {"arch": arch, "arch_kwargs": kwargs or {}},
    }))
    return folder


def test_bundle_config_code_spec_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    folder = _bundle(tmp_path, "os.path:os.system", {"command": f"touch {marker}"})
    with pytest.raises(UnsafeCheckpointError):
        pthkit.open(folder)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["subprocess:run", "builtins:exec", "evil.py:Net", "pydoc:locate", "os:system"])
def test_bundle_config_names_must_be_registered(tmp_path: Path, name: str) -> None:
    folder = _bundle(tmp_path, name)
    with pytest.raises((UnsafeCheckpointError, ArchitectureError)):
        pthkit.open(folder)


def test_key_map_file_architecture_must_be_registered(tmp_path: Path, resnet_file: Path) -> None:
    marker = tmp_path / "pwned2"
    km = tmp_path / "map.json"
    km.write_text(json.dumps({"format": "pthkit-key-map/1", "architecture": "os.path:os.system",
                              "kwargs": {"command": f"touch {marker}"}, "key_map": {}}))
    with pytest.raises(UnsafeCheckpointError):
        pthkit.open(resnet_file, key_map=km)
    assert not marker.exists()


def test_bundle_config_budget_and_garbage(tmp_path: Path) -> None:
    folder = _bundle(tmp_path, "timm:resnet18")
    (folder / "config.json").write_text("{not json")
    with pytest.raises((BundleError, InputNotFoundError)):
        pthkit.open(folder)
    (folder / "config.json").write_text(json.dumps({"architecture": "resnet18", "pthkit": ["not", "a", "dict"]}))
    with pytest.raises(BundleError):
        pthkit.open(folder)


def test_user_code_bundle_needs_explicit_arch(tmp_path: Path, mlp_file: tuple[Path, nn.Module]) -> None:
    path, net = mlp_file
    code = path.parent / "my_model.py"
    spec = f"{code}:MyModel"
    m = pthkit.open(path, arch=spec, device="cpu")
    assert m.input_spec.kind != "image"
    assert m.report is not None and "module." in "".join(m.report.checkpoint.prefixes_removed)  # type: ignore[union-attr]
    x = torch.randn(4, 10)
    assert m.module is not None
    with torch.no_grad():
        assert torch.allclose(m.module(x), net(x), atol=1e-6)
