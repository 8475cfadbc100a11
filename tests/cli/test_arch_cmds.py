"""`pthkit architectures`, `pthkit identify` and `pthkit load` end to end through the console script's main()."""

from __future__ import annotations

import json

import pytest
import torch

from pthkit.cli import main as main_mod
from pthkit.cli._output import console
from pthkit.errors import IdentificationError, LoadError, UnknownArchitectureError

USER_MODEL = '''
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int = 3, width: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3)
        self.bn = nn.BatchNorm2d(width)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.bn(self.stem(x)).mean((2, 3)))
'''


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch):
    monkeypatch.setattr(console, "width", 250)
    monkeypatch.delenv("PTHKIT_DEBUG", raising=False)


def run(capsys, *args) -> tuple[int, str, str]:
    code = main_mod.main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    import torchvision

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "resnet18_1000.pth"
    torch.save({"model": torchvision.models.resnet18(num_classes=1000).state_dict(), "epoch": 1}, path)
    return path


@pytest.fixture
def user_files(tmp_path):
    code = tmp_path / "mynet.py"
    code.write_text(USER_MODEL)
    spec = f"{code}:Net"
    from pthkit.architectures import build_model

    torch.manual_seed(1)
    weights = tmp_path / "mynet.pth"
    torch.save({"module." + k: v for k, v in build_model(spec, width=8).state_dict().items()}, weights)
    return spec, weights


def test_architectures_lists_with_pattern_and_source(capsys):
    code, out, _ = run(capsys, "architectures", "resnet18", "--source", "torchvision")
    assert code == 0
    assert out.splitlines()[0] == "torchvision:resnet18"
    assert "1 architectures matching 'resnet18' from torchvision" in out
    code, out, _ = run(capsys, "architectures", "timm:efficientnet_lite*", "--json")
    data = json.loads(out)
    assert code == 0 and "timm:efficientnet_lite0" in data["architectures"] and data["count"] == len(data["architectures"])


def test_architectures_refuses_unknown_source(capsys):
    code, _, err = run(capsys, "architectures", "--source", "keras")
    assert code == UnknownArchitectureError.exit_code and len(err.strip().splitlines()) == 1


def test_load_partial_new_head_prints_the_report(capsys, resnet_file):
    code, out, err = run(capsys, "load", resnet_file, "--arch", "torchvision:resnet18", "--num-classes", "10",
                         "--device", "cpu")
    assert code == 0, err
    assert "loaded 120/122 tensors into torchvision:resnet18 (num_classes=10)" in out  # the rendering
    code, out, err = run(capsys, "load", resnet_file, "--arch", "torchvision:resnet18", "--num-classes", "10",
                         "--device", "cpu", "--json")
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["reinitialized"] == ["fc.weight", "fc.bias"]
    assert data["loaded"] == 120


def test_load_refused_exits_with_the_load_error_code_a_report_and_one_line_error(capsys, resnet_file):
    code, out, err = run(capsys, "load", resnet_file, "--arch", "torchvision:resnet18", "--arch-kwargs",
                         "num_classes=10", "--arch-kwargs", "zero_init_residual=True", "--device", "cpu", "--json")
    # arch-kwargs num_classes is a deliberate head change too: loads
    assert code == 0, err
    assert json.loads(out)["reinitialized"] == ["fc.weight", "fc.bias"]
    code, out, err = run(capsys, "load", resnet_file, "--arch", "torchvision:resnet34", "--device", "cpu")
    assert code == LoadError.exit_code
    assert "status: refused" in out
    lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "weights do not fit torchvision:resnet34" in lines[0] and "--partial" in lines[0]
    code, out, err = run(capsys, "load", resnet_file, "--arch", "torchvision:resnet34", "--device", "cpu", "--json")
    data = json.loads(out)
    assert code == LoadError.exit_code and data["ok"] is False and data["error"]
    assert {i["cause"] for i in data["missing"] if not i["harmless"]} == {"not-in-file"}


def test_load_json_and_key_map_round_trip(capsys, tmp_path, resnet_file):
    key_map = tmp_path / "map.json"
    code, out, err = run(capsys, "load", resnet_file, "--arch", "torchvision:resnet18", "--device", "cpu",
                         "--dtype", "float16", "--save-key-map", key_map, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] and data["dtype"] == "float16" and data["loaded"] == 122
    assert data["key_map_file"] == str(key_map)
    assert json.loads(key_map.read_text())["architecture"] == "torchvision:resnet18"
    code, out, err = run(capsys, "load", resnet_file, "--key-map", key_map, "--device", "cpu", "--json")
    assert code == 0, err  # (this used to assert only the exit code: the rest was the assertion message)
    again = json.loads(out)
    assert again["architecture"] == "torchvision:resnet18" and again["ok"] and again["loaded"] == data["loaded"]


def test_load_user_architecture_from_py_file(capsys, user_files):
    spec, weights = user_files
    code, out, err = run(capsys, "load", weights, "--arch", spec, "--device", "cpu")
    assert code == 0, err
    assert f"loaded 9/9 tensors into {spec} (num_classes=3)" in out  # conv 2 + BN 5 + head 2
    code, out, err = run(capsys, "load", weights, "--arch", spec, "--arch-kwargs", "width=4", "--device", "cpu")
    assert code == LoadError.exit_code and "7 shape-mismatched [shape]" in err


def test_identify_with_user_arch_shows_where_it_fits(capsys, user_files):
    spec, weights = user_files
    code, out, err = run(capsys, "identify", weights, "--arch", spec, "--arch-kwargs", "width=4")
    assert code == 0, err
    assert f"How the file fits {spec}:" in out
    code, out, err = run(capsys, "identify", weights, "--arch", spec, "--arch-kwargs", "width=4", "--json")
    fit = json.loads(out)["fit"]
    assert code == 0 and fit["ok"] is False and "stem.weight" in {i["key"] for i in fit["mismatched"]}
    code, out, err = run(capsys, "identify", weights, "--arch", spec, "--json")
    data = json.loads(out)
    assert data["fit"]["ok"] is True and data["candidates"][0]["architecture"] == spec


def test_identify_table_for_a_torchvision_file(capsys, resnet_file):
    code, out, err = run(capsys, "identify", resnet_file, "--arch", "torchvision:resnet18", "--top-k", "3")
    assert code == 0, err
    assert "torchvision:resnet18" in out and "num_classes=1000" in out
    assert "strict load would succeed" in out


def test_identify_top_k_is_the_flag_and_top_its_hidden_alias(capsys, resnet_file, monkeypatch):
    import pthkit.architectures as architectures

    asked: list[int] = []
    real = architectures.identify

    def spy(tensors, *, top=5, include=None):
        asked.append(top)
        return real(tensors, top=top, include=include)

    monkeypatch.setattr(architectures, "identify", spy)
    args = ("identify", resnet_file, "--arch", "torchvision:resnet18", "--json")
    assert run(capsys, *args, "--top-k", "2")[0] == 0
    assert run(capsys, *args, "--top", "3")[0] == 0  # the old name still works
    assert run(capsys, *args, "--top-k", "2", "--top", "3")[0] == 2  # and disagreeing with it is a usage error
    assert [t for t in asked if t != 1] == [2, 3]  # (top=1: check_fit matching --arch)
    assert "--top " not in " ".join(run(capsys, "identify", "--help")[1].split()).replace("--top-k", "")


def _unconfident(monkeypatch):
    import pthkit.architectures as architectures
    from pthkit.architectures.types import Candidate, IdentifyResult

    result = IdentifyResult(candidates=[Candidate("timm:resnet18", 0.42, "low", 50, 10, 122, 122,
                                                  kwargs={"num_classes": 1000})],
                            confident=False, message="no confident match")
    monkeypatch.setattr(architectures, "identify", lambda tensors, **_: result)


def test_identify_says_no_confident_match_plainly(capsys, monkeypatch, resnet_file):
    _unconfident(monkeypatch)
    code, out, err = run(capsys, "identify", resnet_file)
    assert code == 0, err
    assert "no confident match" in out and "timm:resnet18" in out and "0.420" in out
    assert "Pass --arch NAME" in out


def test_load_without_arch_refuses_when_not_confident(capsys, monkeypatch, resnet_file):
    _unconfident(monkeypatch)
    code, out, err = run(capsys, "load", resnet_file, "--device", "cpu")
    assert code == IdentificationError.exit_code
    assert "no confident match; top guesses: timm:resnet18 (0.42, low)" in err and "Pass --arch NAME" in err
