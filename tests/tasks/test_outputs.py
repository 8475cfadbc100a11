"""Non-image predictions: outputs equal model(x) for every input format; classify/regress/raw; tuple/dict outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import pthkit
from _tabular_model import NAMES, MyModel, single_thread
from pthkit.errors import DatasetError, InputNotFoundError, PreprocessError
from pthkit.tasks.outputs import (
    TensorPrediction,
    csv_header,
    csv_row,
    predict_arrays,
    predict_blocks,
    predict_tensors,
    save_outputs,
)


class TwoHeads(nn.Module):
    def __init__(self, as_dict: bool) -> None:
        super().__init__()
        self.body = nn.Linear(10, 8)
        self.a = nn.Linear(8, 3)
        self.b = nn.Linear(8, 1)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor) -> object:
        h = torch.tanh(self.body(x))
        return {"scores": self.a(h), "value": self.b(h)} if self.as_dict else (self.a(h), self.b(h))


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def model() -> MyModel:
    torch.manual_seed(0)
    return MyModel().eval()


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(3).normal(size=(45, 10)).astype(np.float32)


def _expected(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _write(kind: str, folder: Path, x: np.ndarray) -> object:
    if kind == "csv":
        path = folder / "rows.csv"
        with open(path, "w") as fh:
            fh.write(",".join(NAMES) + "\n")
            np.savetxt(fh, x, delimiter=",", fmt="%.9g")
        return str(path)
    if kind == "tsv":
        path = folder / "rows.tsv"
        np.savetxt(path, x, delimiter="\t", fmt="%.9g")
        return str(path)
    if kind == "npy":
        np.save(folder / "rows.npy", x)
        return str(folder / "rows.npy")
    if kind == "npz":
        np.savez(folder / "rows.npz", inputs=x)
        return str(folder / "rows.npz")
    if kind == "safetensors":
        from safetensors.numpy import save_file

        save_file({"x": x}, str(folder / "rows.safetensors"))
        return str(folder / "rows.safetensors")
    if kind == "pt":
        torch.save(torch.from_numpy(x), folder / "rows.pt")
        return str(folder / "rows.pt")
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({n: x[:, i] for i, n in enumerate(NAMES)}), folder / "rows.parquet")
        return str(folder / "rows.parquet")
    if kind == "jsonl":
        (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in x.astype(float).tolist()))
        return str(folder / "rows.jsonl")
    if kind == "numpy":
        return x
    if kind == "tensor":
        return torch.from_numpy(x)
    if kind == "list":
        return x.tolist()
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["csv", "tsv", "npy", "npz", "safetensors", "pt", "parquet", "jsonl", "numpy",
                                  "tensor", "list"])
def test_outputs_equal_model_of_x_for_every_format(kind: str, tmp_path: Path, model: MyModel, x: np.ndarray) -> None:
    inputs = _write(kind, tmp_path, x)
    handle = pthkit.open(model)
    rows = list(handle.predict(inputs, batch_size=16))
    assert [r.index for r in rows] == list(range(len(x)))
    got = np.asarray([r.outputs["output"] for r in rows])  # type: ignore[attr-defined]
    np.testing.assert_allclose(got, _expected(model, x), rtol=0, atol=1e-5)
    arrays = predict_arrays(handle, inputs, batch_size=7)
    np.testing.assert_allclose(arrays["output"], _expected(model, x), rtol=0, atol=1e-5)


def test_json_row_has_input_and_outputs(tmp_path: Path, model: MyModel, x: np.ndarray) -> None:
    path = _write("csv", tmp_path, x)
    row = list(predict_tensors(model, path))[16]
    d = row.to_dict()
    assert d["input"] == f"{path}:17" and d["ok"] is True
    np.testing.assert_allclose(d["outputs"], _expected(model, x)[16], atol=1e-5)
    assert csv_header(row, 5)[3:] == ["output_0", "output_1"]
    np.testing.assert_allclose([float(v) for v in csv_row(row, 2, 5)[3:]], _expected(model, x)[16], atol=1e-5)


def test_classify_is_softmax_top_k_with_labels(model: MyModel, x: np.ndarray) -> None:
    rows = list(predict_tensors(model, x, task="classify", labels=["no", "yes"], top_k=2))
    probs = torch.softmax(torch.from_numpy(_expected(model, x)), 1).numpy()
    for r, p in zip(rows, probs):
        assert [c.index for c in r.classes] == list(np.argsort(-p))
        assert r.classes[0].label == ["no", "yes"][int(np.argmax(p))]
        np.testing.assert_allclose([c.score for c in r.classes], np.sort(p)[::-1], atol=1e-6)
    implied = list(predict_tensors(model, x[:3], labels=["no", "yes"], top_k=1))
    assert implied[0].task == "classify" and len(implied[0].classes) == 1
    with pytest.raises(PreprocessError):
        list(predict_tensors(model, x, task="classify", labels=["a", "b", "c"]))


def test_regress_names_the_values(model: MyModel, x: np.ndarray) -> None:
    rows = list(predict_tensors(model, x[:4], task="regress", output_names=["price", "volume"]))
    expected = _expected(model, x[:4])
    assert rows[0].to_dict()["outputs"] == pytest.approx({"price": expected[0, 0], "volume": expected[0, 1]},
                                                         abs=1e-5)
    assert [name for name, _ in rows[0].flat()] == ["price", "volume"]
    with pytest.raises(PreprocessError):
        list(predict_tensors(model, x[:4], task="regress", output_names=["only_one"]))


@pytest.mark.parametrize("as_dict", [False, True])
def test_tuple_and_dict_outputs_are_each_named(as_dict: bool, x: np.ndarray) -> None:
    torch.manual_seed(1)
    m = TwoHeads(as_dict).eval()
    rows = list(predict_tensors(m, x, batch_size=10))
    with torch.no_grad():
        a, b = (m(torch.from_numpy(x)).values() if as_dict else m(torch.from_numpy(x)))  # type: ignore[union-attr]
    names = ["scores", "value"] if as_dict else ["output_0", "output_1"]
    assert list(rows[0].outputs) == names  # type: ignore[arg-type]
    np.testing.assert_allclose([r.outputs[names[0]] for r in rows], a.numpy(), atol=1e-5)  # type: ignore[index]
    np.testing.assert_allclose([r.outputs[names[1]] for r in rows], b.numpy(), atol=1e-5)  # type: ignore[index]
    assert set(rows[0].to_dict()["outputs"]) == set(names)
    assert [n for n, _ in rows[0].flat()] == [f"{names[0]}_{i}" for i in range(3)] + [names[1]]


def test_save_outputs_npy_and_safetensors(tmp_path: Path, model: MyModel, x: np.ndarray) -> None:
    arrays = predict_arrays(model, x)
    np.testing.assert_allclose(np.load(save_outputs(arrays, tmp_path / "o.npy")), _expected(model, x), atol=1e-5)
    from safetensors.numpy import load_file

    two = predict_arrays(TwoHeads(True).eval(), x)
    saved = load_file(str(save_outputs(two, tmp_path / "o.safetensors")))
    assert set(saved) == {"scores", "value"} and saved["scores"].shape == (len(x), 3)
    with pytest.raises(PreprocessError):
        save_outputs(two, tmp_path / "two.npy")
    with pytest.raises(PreprocessError):
        save_outputs(arrays, tmp_path / "o.txt")


def test_arguments_and_files_are_checked_before_iterating(tmp_path: Path, model: MyModel) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,c,d,e,f,g,h,i,j\n" + "1,2,3,4,5,6,7,8,9,x\n")
    with pytest.raises(DatasetError):
        predict_tensors(model, str(bad))  # raised here, not at next()
    with pytest.raises(PreprocessError):
        predict_tensors(model, np.zeros((2, 12)))
    with pytest.raises(PreprocessError):
        predict_tensors(model, np.zeros((2, 10)), task="nope")
    with pytest.raises(PreprocessError):
        pthkit.open(model).predict(np.zeros((2, 10)), top_k=0)


def test_a_model_with_another_first_layer(x: np.ndarray) -> None:
    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.GRU(5, 4, batch_first=True)

        def forward(self, s: torch.Tensor) -> torch.Tensor:
            return self.rnn(s)[0][:, -1]

    torch.manual_seed(0)
    m = Seq().eval()
    seqs = np.random.default_rng(0).normal(size=(6, 7, 5)).astype(np.float32)
    rows = list(predict_tensors(m, seqs))
    with torch.no_grad():
        expected = m(torch.from_numpy(seqs)).numpy()
    np.testing.assert_allclose([r.outputs["output"] for r in rows], expected, atol=1e-5)  # type: ignore[index]
    assert isinstance(rows[0], TensorPrediction)


def test_predict_blocks_are_consecutive_and_equal_model_of_x(tmp_path: Path, model: MyModel, x: np.ndarray) -> None:
    path = _write("csv", tmp_path, x)
    blocks = list(predict_blocks(model, path, batch_size=4, block_rows=10))
    assert [(b.start, b.stop) for b in blocks] == [(s, min(s + 12, len(x))) for s in range(0, len(x), 12)]
    assert blocks[1].names()[0] == f"{path}:13"
    np.testing.assert_allclose(np.concatenate([b.arrays["output"] for b in blocks]), _expected(model, x), atol=1e-5)
    with pytest.raises(PreprocessError):
        predict_blocks(model, path, block_rows=0)
    with pytest.raises(InputNotFoundError):
        predict_blocks(model, str(tmp_path / "missing.csv"))  # checked before the first block


def test_rows_leave_the_garbage_collector_as_they_found_it(model: MyModel, x: np.ndarray) -> None:
    import gc

    assert len(list(predict_tensors(model, x, batch_size=8))) == len(x) and gc.isenabled()
    gc.disable()
    try:
        assert len(list(predict_tensors(model, x, batch_size=8))) == len(x) and not gc.isenabled()
    finally:
        gc.enable()
