"""read_checkpoint on every format and wrapping: tensors come back bitwise equal, nothing from the file runs."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import json
import pickle
import sys
import textwrap
import types
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from pthkit.checkpoint import Checkpoint, read_checkpoint
from pthkit.errors import CheckpointError, CorruptCheckpointError, NoTensorDataError


def small_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4, 2)
    )


@pytest.fixture()
def sd():
    return small_model().state_dict()


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype, k
        assert got[k].shape == v.shape, k
        assert torch.equal(got[k], v), k


# --- plain formats ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mmap", [True, False])
def test_zip_state_dict(tmp_path, sd, mmap):
    path = tmp_path / "model.pth"
    torch.save(sd, path)
    ckpt = read_checkpoint(path, mmap=mmap)
    assert isinstance(ckpt, Checkpoint)
    assert (ckpt.format, ckpt.verdict, ckpt.source, ckpt.prefixes_removed) == ("zip", "safe", [], [])
    assert_same(ckpt.tensors, sd)
    assert ckpt.file_size == path.stat().st_size
    json.dumps(ckpt.to_dict())


def test_legacy_format(tmp_path, sd):
    path = tmp_path / "old.pth"
    torch.save({"state_dict": sd, "epoch": 7}, path, _use_new_zipfile_serialization=False)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "legacy" and ckpt.verdict == "safe"
    assert_same(ckpt.tensors, sd)
    assert ckpt.entries == {"epoch": 7}


def test_safetensors(tmp_path, sd):
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path), metadata={"format": "pt", "arch": "tiny"})
    ckpt = read_checkpoint(path)
    assert ckpt.format == "safetensors" and ckpt.verdict == "safe"
    assert ckpt.metadata == {"format": "pt", "arch": "tiny"}
    assert_same(dict(sorted(ckpt.tensors.items())), dict(sorted(sd.items())))


def test_raw_pickle_of_tensors_and_arrays(tmp_path, sd):
    path = tmp_path / "weights.bin"
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    path.write_bytes(pickle.dumps({**sd, "extra_array": arr}, protocol=4))
    ckpt = read_checkpoint(path)
    assert ckpt.format == "pickle"
    assert_same(ckpt.tensors, sd)
    assert ckpt.entries["extra_array"] == arr.tolist()
    assert ckpt.verdict == "safe"


def test_hugging_face_bin_and_lightning_ckpt(tmp_path, sd):
    hf = tmp_path / "pytorch_model.bin"
    torch.save(sd, hf)
    assert_same(read_checkpoint(hf).tensors, sd)

    model = small_model()
    n_params = len(list(model.parameters()))
    # What SGD(momentum=0.9).state_dict() / StepLR.state_dict() hold (built by hand: creating a torch optimizer
    # imports torch._dynamo, ~4 s).
    opt_state = {
        "state": {i: {"momentum_buffer": torch.randn(p.shape)} for i, p in enumerate(model.parameters())},
        "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0, "weight_decay": 0.0, "nesterov": False,
                          "params": list(range(n_params))}],
    }
    sched_state = {"step_size": 3, "gamma": 0.1, "base_lrs": [0.1], "last_epoch": 2, "_last_lr": [0.1]}
    lightning = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "optimizer_states": [opt_state],
        "lr_schedulers": [sched_state],
        "hyper_parameters": {"lr": 0.1, "num_classes": 2},
        "callbacks": {},
    }
    path = tmp_path / "last.ckpt"
    torch.save(lightning, path)
    ckpt = read_checkpoint(path)
    assert ckpt.format == "zip"
    assert ckpt.source == ["state_dict"] and ckpt.prefixes_removed == ["model."]
    assert_same(ckpt.tensors, model.state_dict())
    assert ckpt.entries["epoch"] == 3 and ckpt.entries["global_step"] == 120
    assert ckpt.entries["hyper_parameters"] == {"lr": 0.1, "num_classes": 2}
    opt_summary = ckpt.entries["optimizer_states"][0]
    assert opt_summary == {"type": "optimizer state", "param_groups": 1, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0,
                           "nesterov": False, "params": n_params, "state_entries": n_params}
    assert ckpt.entries["lr_schedulers"][0]["last_epoch"] == 2
    assert ckpt.metadata["lightning_version"] == "2.4.0"
    assert any(f.kind == "prefix" and "model." in f.detail for f in ckpt.findings)
    json.dumps(ckpt.to_dict())


def test_torchscript_without_and_with_trust(tmp_path):
    model = small_model().eval()
    path = tmp_path / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(model), str(path))
    ckpt = read_checkpoint(path)
    assert ckpt.format == "torchscript" and ckpt.verdict == "needs-trust"
    assert_same(ckpt.tensors, model.state_dict())
    assert any("__torch__" in c for c in ckpt.classes)
    assert any(f.kind == "torchscript" for f in ckpt.findings)
    with pytest.warns(UserWarning, match="runs code from the file"):
        trusted = read_checkpoint(path, trust=True)
    assert_same(trusted.tensors, model.state_dict())


# --- classes weights_only refuses --------------------------------------------------------------------------------------


def test_namespace_and_numpy_scalars_become_plain_data(tmp_path, sd):
    args = argparse.Namespace(lr=np.float64(0.01), epochs=np.int64(90), arch="tiny", mean=np.array([0.5, 0.4]))
    path = tmp_path / "with_args.pth"
    torch.save({"state_dict": sd, "args": args, "best_acc1": np.float32(71.5), "epoch": 90}, path)
    with pytest.raises(Exception):  # noqa: B017 - the point: torch's safe loader refuses this file
        torch.load(path, weights_only=True)
    ckpt = read_checkpoint(path)
    assert_same(ckpt.tensors, sd)
    assert ckpt.entries["args"] == {"__class__": "argparse.Namespace", "lr": 0.01, "epochs": 90, "arch": "tiny", "mean": [0.5, 0.4]}
    assert ckpt.entries["best_acc1"] == 71.5 and ckpt.entries["epoch"] == 90
    assert "argparse.Namespace" in ckpt.classes
    assert ckpt.verdict == "needs-trust"
    assert any(f.kind == "weights-only" for f in ckpt.findings)
    json.dumps(ckpt.to_dict())


_MODULE_SOURCE = textwrap.dedent(
    """
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(4, 4, 3, padding=1)
            self.bn = torch.nn.BatchNorm2d(4)
            self.register_buffer("scratch", torch.zeros(2), persistent=False)

    class MyNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = torch.nn.Conv2d(3, 4, 3)
            self.blocks = torch.nn.Sequential(Block(), Block())
            self.head = torch.nn.Linear(4, 5)
            self.register_buffer("scale", torch.ones(1))

        def __reduce_ex__(self, proto):  # a malicious author could put anything here; it must never matter
            return super().__reduce_ex__(proto)
    """
)


@pytest.mark.parametrize("legacy", [False, True])
def test_whole_pickled_module_of_a_class_that_no_longer_exists(tmp_path, legacy, monkeypatch):
    name = f"pthkit_gone_{'legacy' if legacy else 'zip'}"
    src = tmp_path / f"{name}.py"
    src.write_text(_MODULE_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    mod = __import__(name)
    torch.manual_seed(1)
    model = mod.MyNet()
    model.blocks[1].bn.running_mean.fill_(0.25)
    want = model.state_dict()
    path = tmp_path / "whole_model.pth"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(model, path, _use_new_zipfile_serialization=not legacy)
    # The class disappears: not importable any more.
    del sys.modules[name]
    src.unlink()
    monkeypatch.syspath_prepend(str(tmp_path / "empty"))
    sys.path.remove(str(tmp_path))
    with pytest.raises(ModuleNotFoundError):
        __import__(name)

    ckpt = read_checkpoint(path)
    assert ckpt.format == ("legacy" if legacy else "zip")
    assert_same(ckpt.tensors, want)
    assert f"{name}.MyNet" in ckpt.classes and f"{name}.Block" in ckpt.classes
    assert "torch.nn.modules.conv.Conv2d" in ckpt.classes
    assert ckpt.verdict == "needs-trust"
    assert name not in sys.modules


# --- containers, selection, prefixes -----------------------------------------------------------------------------------


WRAPPERS = {
    "state_dict": (lambda sd: {"state_dict": sd, "epoch": 1}, ["state_dict"]),
    "model": (lambda sd: {"model": sd}, ["model"]),
    "model_state_dict": (lambda sd: {"model_state_dict": sd, "optimizer_state_dict": {"state": {}, "param_groups": []}}, ["model_state_dict"]),
    "module": (lambda sd: {"module": sd}, ["module"]),
    "net": (lambda sd: {"net": sd}, ["net"]),
    "params": (lambda sd: {"params": sd}, ["params"]),
    "network": (lambda sd: {"network": sd}, ["network"]),
    "nested": (lambda sd: {"model": {"state_dict": sd, "step": 5}, "meta": {"who": "me"}}, ["model", "state_dict"]),
    "ema_only": (lambda sd: {"ema": sd}, ["ema"]),
    "model_ema_only": (lambda sd: {"model_ema": sd}, ["model_ema"]),
}


@pytest.mark.parametrize("wrapper", list(WRAPPERS))
def test_containers_are_unwrapped(tmp_path, sd, wrapper):
    build, source = WRAPPERS[wrapper]
    path = tmp_path / "ckpt.pth"
    torch.save(build(sd), path)
    ckpt = read_checkpoint(path)
    assert ckpt.source == source
    assert_same(ckpt.tensors, sd)


def test_nested_entries_are_kept(tmp_path, sd):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {"state_dict": sd, "step": 5}, "meta": {"who": "me"}}, path)
    assert read_checkpoint(path).entries == {"model": {"step": 5}, "meta": {"who": "me"}}


def test_raw_preferred_over_ema_unless_asked(tmp_path, sd):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": sd, "state_dict_ema": ema}, path)
    auto = read_checkpoint(path)
    assert auto.source == ["state_dict"] and list(auto.alternatives) == ["state_dict_ema"]
    assert_same(auto.tensors, sd)
    chosen = read_checkpoint(path, select="ema")
    assert chosen.source == ["state_dict_ema"]
    assert_same(chosen.tensors, ema)
    assert any("state_dict_ema" in f.detail for f in auto.findings if f.kind == "weights")
    raw_only = tmp_path / "raw_only.pth"
    torch.save({"state_dict": sd}, raw_only)
    with pytest.raises(CheckpointError, match="no EMA weights"):
        read_checkpoint(raw_only, select="ema")


def test_teacher_student(tmp_path, sd):
    student = {k: v * 0 for k, v in sd.items()}
    path = tmp_path / "distill.pth"
    torch.save({"student": student, "teacher": sd, "epoch": 3}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.source == ["teacher"] and list(ckpt.alternatives) == ["student"]
    assert ckpt.entries == {"epoch": 3}


@pytest.mark.parametrize(
    ("prefixes", "expected"),
    [
        ("module.", ["module."]),
        ("_orig_mod.", ["_orig_mod."]),
        ("model.module.", ["model.", "module."]),
        ("backbone.", ["backbone."]),
    ],
)
def test_prefixes_removed_and_reported(tmp_path, sd, prefixes, expected):
    path = tmp_path / "ckpt.pth"
    torch.save({prefixes + k: v for k, v in sd.items()}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.prefixes_removed == expected
    assert_same(ckpt.tensors, sd)
    assert any(f.kind == "prefix" for f in ckpt.findings)
    kept = read_checkpoint(path, strip_prefix=False)
    assert list(kept.tensors) == [prefixes + k for k in sd] and kept.prefixes_removed == []


def test_top_level_state_dict_with_extra_entries(tmp_path, sd):
    path = tmp_path / "flat.pth"
    torch.save({**sd, "epoch": 4, "arch": "tiny"}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.source == [] and ckpt.entries == {"epoch": 4, "arch": "tiny"}
    assert_same(ckpt.tensors, sd)


def test_bad_select_is_a_typed_error(tmp_path, sd):
    path = tmp_path / "a.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match="select"):
        read_checkpoint(path, select="best")


def test_single_module_prefix_is_not_stripped(tmp_path):
    path = tmp_path / "linear.pth"
    torch.save({f"fc.{k}": v for k, v in torch.nn.Linear(2, 3).state_dict().items()}, path)
    ckpt = read_checkpoint(path)
    assert list(ckpt.tensors) == ["fc.weight", "fc.bias"] and ckpt.prefixes_removed == []


def test_tied_tensors_reported(tmp_path):
    emb = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    sd = {"embed.weight": emb.weight.data, "head.weight": head.weight.data, "other.weight": torch.randn(2)}
    for fmt in ("zip", "legacy"):
        path = tmp_path / f"tied_{fmt}.pth"
        torch.save(sd, path, _use_new_zipfile_serialization=fmt == "zip")
        ckpt = read_checkpoint(path)
        assert ckpt.shared == [["embed.weight", "head.weight"]], fmt


# --- sharded -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["safetensors", "bin"])
def test_sharded_index_and_folder(tmp_path, sd, kind):
    keys = list(sd)
    halves = {"a": keys[: len(keys) // 2], "b": keys[len(keys) // 2 :]}
    weight_map = {}
    for part, names in halves.items():
        fname = f"model-0000{1 if part == 'a' else 2}-of-00002.{kind}"
        shard = {k: sd[k].clone() for k in names}
        if kind == "safetensors":
            save_file(shard, str(tmp_path / fname))
        else:
            torch.save(shard, tmp_path / fname)
        weight_map.update({k: fname for k in names})
    index_name = "model.safetensors.index.json" if kind == "safetensors" else "pytorch_model.bin.index.json"
    (tmp_path / index_name).write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    for target in (tmp_path / index_name, tmp_path):
        ckpt = read_checkpoint(target)
        assert ckpt.format == "sharded" and ckpt.verdict == "safe"
        assert_same(dict(sorted(ckpt.tensors.items())), dict(sorted(sd.items())))
        assert ckpt.metadata["shards"] == "2"


def test_sharded_index_errors(tmp_path, sd):
    save_file(sd, str(tmp_path / "one.safetensors"))
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x": "../../etc/passwd"}}))
    with pytest.raises(CorruptCheckpointError, match="shard name"):
        read_checkpoint(index)
    index.write_text(json.dumps({"weight_map": {"x": "missing.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match="missing"):
        read_checkpoint(index)
    index.write_text(json.dumps({"weight_map": {"not.in.shard": "one.safetensors"}}))
    with pytest.raises(CorruptCheckpointError, match="without"):
        read_checkpoint(index)


def test_folder_with_single_weights_file(tmp_path, sd):
    save_file(sd, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("{}")
    assert read_checkpoint(tmp_path).format == "safetensors"


# --- safety switches ---------------------------------------------------------------------------------------------------


def test_env_var_forcing_unsafe_load_changes_nothing(tmp_path, monkeypatch, sd):
    from .hostile import make_zip_exec

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, marker = make_zip_exec(tmp_path)
    ckpt = read_checkpoint(path)
    assert not marker.exists()
    assert ckpt.verdict == "malicious-looking"


def test_torch_load_fallback_passes_weights_only_explicitly(tmp_path, monkeypatch):
    q = torch.quantize_per_tensor(torch.randn(4), scale=0.1, zero_point=0, dtype=torch.qint8)
    path = tmp_path / "quantized.pth"
    torch.save({"q": q}, path)
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ckpt = read_checkpoint(path)
    assert calls and all(c.get("weights_only") is True for c in calls)
    assert torch.equal(ckpt.tensors["q"].int_repr(), q.int_repr())


@pytest.mark.parametrize("fmt", ["zip", "legacy-misaligned", "safetensors"])
def test_mmap_reading_does_not_copy_the_file(tmp_path, fmt):
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096

    path = tmp_path / "big.pth"
    big = {f"layer{i}.weight": torch.ones(1024, 1024) for i in range(12)}  # 48 MiB
    if fmt == "zip":
        torch.save(big, path)
    elif fmt == "safetensors":
        save_file(big, str(path))
    else:  # a 3-byte record first: every float record after it sits at an odd offset
        torch.save({"pad": torch.zeros(3, dtype=torch.uint8), **big}, path, _use_new_zipfile_serialization=False)
    del big
    gc.collect()
    before = rss()
    ckpt = read_checkpoint(path)
    grown = rss() - before
    assert len(ckpt.tensors) >= 12
    assert grown < 12 * 2**20, f"reading a 48 MiB file grew RSS by {grown / 2**20:.1f} MiB"
    assert float(ckpt.tensors["layer3.weight"][5, 7]) == 1.0


# --- other classes weights_only refuses: dataclasses, omegaconf -----------------------------------------------------------


@dataclasses.dataclass
class TrainConfig:
    lr: float
    layers: list


class _FakeNode:
    def __init__(self, val):
        self._val, self._parent, self._metadata = val, None, None


class _FakeConfig:
    def __init__(self, content):
        self._content, self._parent, self._metadata = content, None, {"ref_type": "Any"}


def test_dataclass_and_omegaconf_become_plain_data(tmp_path, sd, monkeypatch):
    # Stand-ins pickled under omegaconf's real class paths (omegaconf is not installed here, which is the point:
    # the reader must not need it).
    fake_dict = types.ModuleType("omegaconf.dictconfig")
    fake_nodes = types.ModuleType("omegaconf.nodes")
    _FakeConfig.__module__, _FakeConfig.__qualname__ = "omegaconf.dictconfig", "DictConfig"
    _FakeNode.__module__, _FakeNode.__qualname__ = "omegaconf.nodes", "AnyNode"
    fake_dict.DictConfig, fake_nodes.AnyNode = _FakeConfig, _FakeNode
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", fake_dict)
    monkeypatch.setitem(sys.modules, "omegaconf.nodes", fake_nodes)
    cfg = _FakeConfig({"model": _FakeConfig({"name": _FakeNode("resnet"), "depth": _FakeNode(18)}), "lr": _FakeNode(0.1)})
    path = tmp_path / "hydra.ckpt"
    torch.save({"state_dict": sd, "cfg": cfg, "train": TrainConfig(lr=0.5, layers=[1, 2])}, path)
    ckpt = read_checkpoint(path)
    assert_same(ckpt.tensors, sd)
    assert ckpt.entries["cfg"] == {"model": {"name": "resnet", "depth": 18}, "lr": 0.1}
    assert ckpt.entries["train"] == {"__class__": f"{__name__}.TrainConfig", "lr": 0.5, "layers": [1, 2]}
    assert {"omegaconf.dictconfig.DictConfig", "omegaconf.nodes.AnyNode", f"{__name__}.TrainConfig"} <= set(ckpt.classes)


# --- dtypes, devices, tensor kinds ---------------------------------------------------------------------------------------


def test_every_dtype_and_meta_tensors(tmp_path):
    torch.manual_seed(0)
    sd = {
        "f16": torch.randn(3).half(),
        "bf16": torch.randn(3).bfloat16(),
        "f64": torch.randn(3).double(),
        "f8": torch.randn(4).to(torch.float8_e4m3fn),
        "u16": torch.tensor([1, 2, 60000], dtype=torch.int32).to(torch.uint16),
        "i8": torch.tensor([-3, 4], dtype=torch.int8),
        "c64": torch.randn(2, dtype=torch.complex64),
        "bool": torch.tensor([True, False]),
        "strided": torch.randn(4, 6)[:, ::2],
        "meta": torch.empty(3, 2, device="meta"),
    }
    for legacy in (False, True):
        path = tmp_path / f"dtypes_{legacy}.pth"
        torch.save(sd, path, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(NoTensorDataError, match="shapes but no data"):
            read_checkpoint(path)  # loading meta weights is impossible: a typed error, not a RuntimeError later
        ckpt = read_checkpoint(path, allow_meta=True)
        assert ckpt.verdict == "safe" and any(f.kind == "meta" for f in ckpt.findings)
        for k, v in sd.items():
            got = ckpt.tensors[k]
            assert got.dtype == v.dtype and got.shape == v.shape, k
            if k == "meta":
                assert got.is_meta
            else:
                assert torch.equal(got.contiguous().view(torch.uint8), v.contiguous().view(torch.uint8)), k


def test_sparse_tensors_via_torch_safe_loader(tmp_path):
    sparse = torch.randn(3, 3).relu().to_sparse()
    path = tmp_path / "sparse.pth"
    torch.save({"s": sparse, "d": torch.ones(2)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = read_checkpoint(path)
    assert ckpt.verdict == "safe"
    assert torch.equal(ckpt.tensors["s"].to_dense(), sparse.to_dense())
    assert any(f.kind == "reader" for f in ckpt.findings)


def test_gpu_saved_storages_are_read_on_cpu(tmp_path):
    from .forge import FakeStorage, FakeTensor, float_bytes, forged_zip

    storage = FakeStorage("0", 6, location="cuda:3")
    path = forged_zip(tmp_path / "gpu.pth", {"w": FakeTensor(storage, (2, 3), (3, 1))}, {"0": float_bytes(6)})
    ckpt = read_checkpoint(path)
    assert ckpt.tensors["w"].device.type == "cpu"
    assert torch.equal(ckpt.tensors["w"], torch.arange(6.0).reshape(2, 3))


def test_bytes_after_the_pickle_are_reported(tmp_path, sd):
    path = tmp_path / "two.pkl"
    path.write_bytes(pickle.dumps(dict(sd)) + pickle.dumps(argparse.Namespace(x=1)))
    ckpt = read_checkpoint(path)
    assert_same(ckpt.tensors, sd)
    assert ckpt.verdict == "needs-trust" and any(f.kind == "trailing-data" for f in ckpt.findings)


class AttributeDict(dict):
    """Like Lightning's AttributeDict: a dict subclass, pickled as class + set items."""


class StateDictSubclass(collections.OrderedDict):
    pass


def test_dict_subclasses_are_read_as_dicts(tmp_path, sd):
    path = tmp_path / "subclass.ckpt"
    torch.save({"state_dict": StateDictSubclass(sd), "hyper_parameters": AttributeDict(lr=0.1, depth=3)}, path)
    ckpt = read_checkpoint(path)
    assert ckpt.source == ["state_dict"]
    assert_same(ckpt.tensors, sd)
    assert ckpt.entries["hyper_parameters"] == {"__class__": f"{__name__}.AttributeDict", "lr": 0.1, "depth": 3}
