"""The one head-replacement policy (pthkit.loading.head): the head found by structure for torchvision, timm and user
classes, replaced with the right size, reported, and nothing but the head ever re-initialized."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pthkit.errors import LoadError
from pthkit.loading.head import apply_head_record, find_head, open_with_classes, set_num_classes


class MyModel(nn.Module):  # the design document's custom model: no num_classes, no reset_classifier
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(10, 50)
        self.layer2 = nn.Linear(50, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(torch.relu(self.layer1(x)))


def test_user_class_head_is_the_last_linear_and_is_replaced_with_a_report():
    torch.manual_seed(0)
    model = MyModel()
    before = model.layer1.weight.clone()
    head = find_head(model)
    assert head is not None and (head.name, head.in_features, head.out_features) == ("layer2", 50, 2)
    assert head.keys == ("layer2.weight", "layer2.bias")
    change = set_num_classes(model, 3)
    assert change is not None and str(change) == "layer2: 50 → 2 replaced by 50 → 3"
    assert model(torch.randn(4, 10)).shape == (4, 3)
    assert torch.equal(model.layer1.weight, before)  # the backbone is untouched
    assert set_num_classes(model, 3) is None  # already that size: nothing to do


@pytest.mark.parametrize("name, head_name, kind", [
    ("resnet18", "fc", "linear"),
    ("squeezenet1_1", "classifier.1", "conv1x1"),
    ("mobilenet_v3_small", "classifier.3", "linear"),
    ("googlenet", "fc", "linear"),  # aux1/aux2 heads are training-only: not the head
])
def test_torchvision_heads_are_found_by_structure_and_replaced(name, head_name, kind):
    import torchvision

    kwargs = {"aux_logits": True, "init_weights": False} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(**kwargs).eval()
    head = find_head(model)
    assert head is not None and (head.name, head.kind, head.out_features) == (head_name, kind, 1000)
    change = set_num_classes(model, 3)
    assert change is not None and change.method == "replaced"
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 3)


def test_timm_models_use_their_own_reset_classifier():
    import timm

    model = timm.create_model("test_efficientnet", num_classes=10)
    change = set_num_classes(model, 3)
    assert change is not None and change.method == "reset_classifier"
    assert model.num_classes == 3 and str(change) == "classifier: 256 → 10 replaced by 256 → 3"
    headless = timm.create_model("test_efficientnet", num_classes=0).eval()
    assert find_head(headless) is None
    assert set_num_classes(headless, 4) is not None and headless(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_a_model_without_a_head_is_refused():
    with pytest.raises(LoadError):
        set_num_classes(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 3)
    with pytest.raises(LoadError):
        set_num_classes(MyModel(), 0)


def test_a_recorded_head_rebuilds_the_same_module_and_rejects_anything_else():
    model = MyModel()
    change = set_num_classes(model, 3)
    assert change is not None
    fresh = MyModel()
    apply_head_record(fresh, change.record())
    fresh.load_state_dict(model.state_dict())  # strict: same keys and shapes
    for bad in ({**change.record(), "name": "layer9"}, {**change.record(), "in_features": 7},
                {**change.record(), "kind": "conv1x1"}, {"name": "__class__"}):
        with pytest.raises(LoadError):
            apply_head_record(MyModel(), bad)


def test_open_with_classes_refuses_weights_that_do_not_fit_the_arch(tmp_path):
    """Only the head may be new: a non-fitting --arch is a LoadError, never a partial load."""
    import timm

    torch.manual_seed(0)
    path = tmp_path / "w.pth"
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), path)
    with pytest.raises(LoadError):
        open_with_classes(path, 3, arch="timm:test_resnet")
    headed = open_with_classes(path, 3, arch="timm:test_efficientnet")
    assert headed.change is not None and headed.arch_kwargs["num_classes"] == 3 and headed.head_record is None
    original = torch.load(path, weights_only=True)
    state = headed.module.state_dict()
    assert all(torch.equal(state[k], v) for k, v in original.items() if not k.startswith("classifier."))
