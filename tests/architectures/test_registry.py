"""The registry: names, ambiguity, suggestions, registration, user code and entry points."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from pthkit.architectures import (
    Architecture,
    Registry,
    build_model,
    get_architecture,
    list_architectures,
    parse_arch_kwargs,
)
from pthkit.errors import (
    AmbiguousArchitectureError,
    ArchitectureBuildError,
    ArchitectureError,
    InputNotFoundError,
    UnknownArchitectureError,
)


def test_lists_torchvision_and_timm_with_globs():
    names = list_architectures()
    assert "torchvision:resnet18" in names and "timm:resnet18" in names
    assert "torchvision:fasterrcnn_resnet50_fpn" in names and "torchvision:raft_small" in names
    assert len([n for n in names if n.startswith("timm:")]) > 1000
    assert list_architectures("resnet18*") == ["timm:resnet18", "timm:resnet18d", "torchvision:resnet18"]
    assert list_architectures("resnet18*", exclude="*18d") == ["timm:resnet18", "torchvision:resnet18"]
    assert list_architectures("resnet18", source="torchvision") == ["torchvision:resnet18"]


def test_bare_name_resolves_only_when_unambiguous():
    arch = get_architecture("efficientnet_lite0")
    assert arch.name == "timm:efficientnet_lite0" and arch.timm_name == "efficientnet_lite0"
    assert arch.torchvision_weights is None
    with pytest.raises(AmbiguousArchitectureError, match="use timm:resnet18 or torchvision:resnet18"):
        get_architecture("resnet18")


def test_torchvision_metadata_and_timm_tag():
    assert get_architecture("torchvision:resnet18").torchvision_weights == "ResNet18_Weights.IMAGENET1K_V1"
    assert get_architecture("timm:resnet18.a1_in1k").name == "timm:resnet18"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownArchitectureError, match=r"received 'resnet181x'.*Did you mean: .*resnet18"):
        get_architecture("resnet181x")


def test_build_model_random_init_with_kwargs():
    model = build_model("timm:test_resnet", num_classes=10).eval()
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ArchitectureBuildError, match="raising TypeError.*Check --arch-kwargs"):
        build_model("timm:test_resnet", not_an_argument=1)


def test_torchvision_detection_builds_without_downloading_backbone():
    model = build_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", num_classes=3)
    assert model.roi_heads.box_predictor.cls_score.out_features == 3


def test_register_refuses_duplicates():
    reg = Registry(builtin=False)
    arch = Architecture(name="mylib:tiny", source="entrypoint", builder=lambda **kw: torch.nn.Linear(2, 2))
    reg.register(arch)
    assert reg.list("mylib:*") == ["mylib:tiny"] and reg.get("tiny") is arch
    with pytest.raises(ArchitectureError, match="duplicate name 'mylib:tiny'"):
        reg.register(arch)
    reg.unregister("mylib:tiny")
    assert reg.list() == []


USER_FILE = textwrap.dedent(
    """
    import torch.nn as nn

    class MyNet(nn.Module):
        def __init__(self, width=8, num_classes=4):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3)
            self.bn = nn.BatchNorm2d(width)
            self.fc = nn.Linear(width, num_classes)

        def forward(self, x):
            return self.fc(self.bn(self.stem(x)).mean((2, 3)))
    """
)


@pytest.fixture
def user_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(USER_FILE)
    return path


def test_user_file_architecture(user_file):
    spec = f"{user_file}:MyNet"
    arch = get_architecture(spec)
    assert arch.source == "user" and arch.name == spec
    model = build_model(spec, **parse_arch_kwargs(["width=16", "num_classes=3"]))
    assert model.stem.out_channels == 16 and model.fc.out_features == 3


def test_user_spec_errors_name_the_problem(tmp_path, user_file):
    with pytest.raises(InputNotFoundError, match="not found"):
        get_architecture(f"{tmp_path}/missing.py:Net")
    with pytest.raises(ArchitectureBuildError, match="no 'Nope' in .*Available: MyNet"):
        get_architecture(f"{user_file}:Nope")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ArchitectureBuildError, match="raising RuntimeError: boom"):
        get_architecture(f"{broken}:Net")


def test_package_module_factory():
    model = build_model("torchvision.models:resnet18", num_classes=5)
    assert model.fc.out_features == 5


def test_parse_arch_kwargs_literals_and_errors():
    assert parse_arch_kwargs(["a=1", "b=0.5", "c=(1, 2)", "d=gelu", "e='x'", "f=True"]) == {
        "a": 1, "b": 0.5, "c": (1, 2), "d": "gelu", "e": "x", "f": True}
    with pytest.raises(ArchitectureBuildError, match="expected key=value"):
        parse_arch_kwargs(["novalue"])


def test_entry_point_adds_architectures(tmp_path, monkeypatch):
    import importlib.metadata as md

    (tmp_path / "pthkit_plugin_demo.py").write_text(textwrap.dedent(
        """
        import torch.nn as nn
        from pthkit.architectures import Architecture

        def hook(registry):
            return [Architecture(name="demo:mlp", source="entrypoint", builder=lambda **kw: nn.Linear(3, 2))]

        def broken(registry):
            raise RuntimeError("plugin bug")
        """
    ))
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [md.EntryPoint(name="demo", value="pthkit_plugin_demo:hook", group="pthkit.architectures"),
           md.EntryPoint(name="bad", value="pthkit_plugin_demo:broken", group="pthkit.architectures")]
    monkeypatch.setattr(md, "entry_points", lambda group=None: eps if group == "pthkit.architectures" else [])
    reg = Registry()
    with pytest.warns(RuntimeWarning, match="entry point 'bad'"):
        names = reg.list("demo:*")
    assert names == ["demo:mlp"]
    assert "plugin bug" in reg.entry_point_errors["bad"]
    assert isinstance(reg.get("demo:mlp").build(), torch.nn.Linear)
    sys.modules.pop("pthkit_plugin_demo", None)
