"""Block writers of ``pthkit predict`` for tables: the numbers and names read back, in every format, with and
without pyarrow, and the same columns and keys as the per-row writers."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _tabular_model import NAMES, MyModel, single_thread
from pthkit.cli import _table_output
from pthkit.cli._table_output import BlockWriter, output_columns
from pthkit.errors import PreprocessError
from pthkit.tasks.outputs import csv_header, predict_arrays, predict_blocks, predict_tensors


class Pair(nn.Module):
    """Two outputs: three scores and one value per row."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 3)
        self.b = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x), self.b(x)


@pytest.fixture(autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(5).normal(size=(53, 10)).astype(np.float32)


def _model(cls: type[nn.Module] = MyModel) -> nn.Module:
    torch.manual_seed(0)
    return cls().eval()


def _expected(model: nn.Module, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = model(torch.from_numpy(x))
    return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]


def _csv_file(path: Path, x: np.ndarray) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(NAMES) + "\n")
        np.savetxt(fh, x, delimiter=",", fmt="%.9g")
    return str(path)


def _write(model: nn.Module, inputs: object, fmt: str, names: list[str] | None = None, *, arrow: bool = True,
           block_rows: int = 16) -> str:
    stream = io.StringIO()
    writer = BlockWriter(stream, fmt, names)  # type: ignore[arg-type]
    writer._arrow = arrow and writer._arrow
    for block in predict_blocks(model, inputs, batch_size=7, block_rows=block_rows):
        writer.write(block)
    return stream.getvalue()


def _floats(values: object, exact: bool) -> np.ndarray:
    """Parsed text values: as float32 when pyarrow wrote them (its text reads back as the same float32)."""
    return np.asarray(values, dtype=np.float32 if exact else np.float64)


def _check(got: np.ndarray, expected: np.ndarray, exact: np.ndarray | None) -> None:
    """Within 1e-5 of model(x); equal to the stacked outputs themselves when ``exact`` (pyarrow's text)."""
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    if exact is not None:
        np.testing.assert_array_equal(got, exact)


@pytest.mark.parametrize("arrow", [True, False])
def test_csv_and_json_read_back_as_model_of_x(arrow: bool, tmp_path: Path, x: np.ndarray) -> None:
    model = _model()
    path = _csv_file(tmp_path / "rows.csv", x)
    expected = _expected(model, x)[0]
    exact = predict_arrays(model, path, batch_size=7)["output"]
    table = list(csv.reader(io.StringIO(_write(model, path, "csv", arrow=arrow))))
    assert table[0] == ["input", "ok", "error", "output_0", "output_1"]
    assert [r[0] for r in table[1:]] == [f"{path}:{i + 1}" for i in range(len(x))]
    assert {(r[1], r[2]) for r in table[1:]} == {("1", "")}
    _check(_floats([[float(v) for v in r[3:]] for r in table[1:]], arrow), expected, exact if arrow else None)
    lines = [json.loads(line) for line in _write(model, path, "json", arrow=arrow).splitlines()]
    assert [(d["input"], d["path"], d["ok"]) for d in lines] == [(f"{path}:{i + 1}",) * 2 + (True,)
                                                                for i in range(len(x))]
    _check(_floats([d["outputs"] for d in lines], arrow), expected, exact if arrow else None)
    text = _write(model, path, "text", arrow=arrow).splitlines()
    first = dict(kv.split("=") for kv in text[16].split(": ", 1)[1].split(", "))
    assert text[16].startswith(f"{path}:17: ")
    np.testing.assert_allclose([float(first["output_0"]), float(first["output_1"])], expected[16], atol=1e-5)


def test_same_columns_and_keys_as_the_row_writers(x: np.ndarray) -> None:
    for model, names in ((_model(), None), (_model(), ["price", "volume"]), (_model(Pair), None)):
        rows = list(predict_tensors(model, x[:3], output_names=names))
        header = next(csv.reader(io.StringIO(_write(model, x[:3], "csv", names))))
        assert header == csv_header(rows[0], 5)
        block_json = json.loads(_write(model, x[:3], "json", names).splitlines()[1])
        row_json = rows[1].to_dict()
        assert block_json.keys() == row_json.keys() and block_json["input"] == row_json["input"] == "input[1]"
        got, want = block_json["outputs"], row_json["outputs"]
        if isinstance(want, dict):
            assert list(got) == list(want)
            got, want = list(got.values()), list(want.values())
        np.testing.assert_allclose(np.hstack(got), np.hstack(want), atol=1e-5)


def test_two_outputs_are_named_and_every_value_is_written(x: np.ndarray) -> None:
    model = _model(Pair)
    a, b = _expected(model, x)
    lines = [json.loads(line) for line in _write(model, x, "json").splitlines()]
    assert list(lines[0]["outputs"]) == ["output_0", "output_1"]
    np.testing.assert_allclose([d["outputs"]["output_0"] for d in lines], a, atol=1e-6)
    np.testing.assert_allclose([d["outputs"]["output_1"] for d in lines], b, atol=1e-6)
    table = list(csv.reader(io.StringIO(_write(model, x, "csv"))))
    assert table[0][3:] == ["output_0_0", "output_0_1", "output_0_2", "output_1"]
    np.testing.assert_allclose([[float(v) for v in r[3:]] for r in table[1:]], np.hstack([a, b]), atol=1e-6)


def test_output_names_must_name_each_value() -> None:
    arrays = {"output": np.zeros((2, 2), np.float32)}
    assert output_columns(arrays, ["a", "b"]) == ["a", "b"]
    with pytest.raises(PreprocessError):
        output_columns(arrays, ["a"])
    with pytest.raises(PreprocessError):
        output_columns({"x": np.zeros((2, 1)), "y": np.zeros((2, 1))}, ["a", "b"])


def test_names_needing_quotes_and_control_characters(tmp_path: Path, x: np.ndarray) -> None:
    folder = tmp_path / 'a,b "c"'
    folder.mkdir()
    path = _csv_file(folder / "rows\x1b[2J.csv", x[:4])
    model = _model()
    table = list(csv.reader(io.StringIO(_write(model, path, "csv"))))
    shown = path.replace("\x1b", "\\x1b")  # CSV shows control characters as escapes, like human output
    assert [r[0] for r in table[1:]] == [f"{shown}:{i + 1}" for i in range(4)]
    lines = _write(model, path, "json").splitlines()
    assert "\x1b" not in "".join(lines)
    assert [json.loads(line)["input"] for line in lines] == [f"{path}:{i + 1}" for i in range(4)]  # exact data
    assert "\x1b" not in _write(model, path, "text")


def test_non_finite_and_whole_values_stay_json_floats() -> None:
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            values = torch.tensor([float("nan"), float("inf"), float("-inf"), 3.0, -0.0, 1e20, 0.5])
            return values.expand(len(x), -1)

    for arrow in (True, False):
        text = _write(Fixed(), np.zeros((3, 4), np.float32), "json", arrow=arrow)
        values = json.loads(text.splitlines()[0])["outputs"]
        assert np.isnan(values[0]) and values[1:3] == [float("inf"), float("-inf")]
        assert values[3:] == [3.0, -0.0, 1e20, 0.5] and all(isinstance(v, float) for v in values)
        assert '"NaN"' not in text and "NaN" in text  # as Python's json writes them


def test_rows_are_split_into_chunks_whatever_the_block(monkeypatch: pytest.MonkeyPatch, x: np.ndarray) -> None:
    monkeypatch.setattr(_table_output, "_CELLS_PER_CHUNK", 6)  # 3 rows of 2 values per pyarrow call
    model = _model()
    lines = [json.loads(line) for line in _write(model, x, "json", block_rows=20).splitlines()]
    assert [d["input"] for d in lines] == [f"input[{i}]" for i in range(len(x))]
    exact = predict_arrays(model, x, batch_size=7)["output"]  # pyarrow's text reads back as the same float32
    np.testing.assert_array_equal(_floats([d["outputs"] for d in lines], True), exact)


def test_several_files_keep_their_own_names(tmp_path: Path, x: np.ndarray) -> None:
    a = _csv_file(tmp_path / "a.csv", x[:10])
    np.save(tmp_path / "b.npy", x[10:])
    model = _model()
    table = list(csv.reader(io.StringIO(_write(model, [a, str(tmp_path / "b.npy")], "csv", block_rows=8))))
    assert [r[0] for r in table[1:]] == [f"{a}:{i + 1}" for i in range(10)] + [
        f"{tmp_path / 'b.npy'}[{i}]" for i in range(len(x) - 10)]
    np.testing.assert_allclose([[float(v) for v in r[3:]] for r in table[1:]], _expected(model, x)[0], atol=1e-5)
