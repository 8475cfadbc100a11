"""Array and table sources: every format gives the same numbers, streamed; every refusal happens before running."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pthkit.data import tables
from pthkit.data.tables import open_inputs, read_table
from pthkit.errors import DatasetError, InputNotFoundError, PreprocessError
from pthkit.input_spec import InputSpec, spec_from_shape

SPEC10 = spec_from_shape((10,), source="test")
NAMES = [f"f{i}" for i in range(10)]


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(37, 10)).astype(np.float32)


def _csv(path: Path, x: np.ndarray, header: list[str] | None, delimiter: str = ",") -> Path:
    with open(path, "w", encoding="ascii") as fh:
        if header is not None:
            fh.write(delimiter.join(header) + "\n")
        np.savetxt(fh, x, delimiter=delimiter, fmt="%.9g")  # float32 round-trips exactly
    return path


def _read_all(source: tables.TensorSource, batch_size: int = 8) -> tuple[np.ndarray, list[int]]:
    rows, indices = [], []
    for b in source.batches(batch_size):
        assert b.tensors is not None and not b.failed
        rows.append(b.tensors.numpy())
        indices += b.indices
    return np.concatenate(rows), indices


def _write_format(kind: str, folder: Path, x: np.ndarray) -> Path:
    if kind == "csv":
        return _csv(folder / "rows.csv", x, NAMES)
    if kind == "csv-noheader":
        return _csv(folder / "rows.csv", x, None)
    if kind == "tsv":
        return _csv(folder / "rows.tsv", x, NAMES, "\t")
    if kind == "npy":
        np.save(folder / "rows.npy", x)
        return folder / "rows.npy"
    if kind == "npz":
        np.savez(folder / "rows.npz", x=x, y=np.arange(len(x)))
        return folder / "rows.npz"
    if kind == "npz-columns":
        np.savez(folder / "cols.npz", **{n: x[:, i] for i, n in enumerate(NAMES)})
        return folder / "cols.npz"
    if kind == "safetensors":
        from safetensors.numpy import save_file

        save_file({"inputs": x}, str(folder / "rows.safetensors"))
        return folder / "rows.safetensors"
    if kind == "pt":
        torch.save(torch.from_numpy(x), folder / "rows.pt")
        return folder / "rows.pt"
    if kind == "pt-dict":
        torch.save({"x": torch.from_numpy(x), "labels": torch.arange(len(x))}, folder / "rows.pt")
        return folder / "rows.pt"
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({n: x[:, i] for i, n in enumerate(NAMES)}), folder / "rows.parquet", row_group_size=10)
        return folder / "rows.parquet"
    if kind == "jsonl":
        (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in x.astype(float).tolist()))
        return folder / "rows.jsonl"
    if kind == "jsonl-objects":
        (folder / "rows.jsonl").write_text(
            "".join(json.dumps(dict(zip(NAMES, r))) + "\n" for r in x.astype(float).tolist()))
        return folder / "rows.jsonl"
    raise AssertionError(kind)


FORMATS = ["csv", "csv-noheader", "tsv", "npy", "npz", "npz-columns", "safetensors", "pt", "pt-dict", "parquet",
           "jsonl", "jsonl-objects"]


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_gives_the_rows_in_order(kind: str, tmp_path: Path, x: np.ndarray) -> None:
    path = _write_format(kind, tmp_path, x)
    source = open_inputs(str(path), spec=SPEC10, columns=["x"] if kind == "pt-dict" else None)
    assert len(source) == len(x)
    got, indices = _read_all(source)
    assert indices == list(range(len(x)))
    np.testing.assert_allclose(got, x, rtol=0, atol=1e-6)


def test_names_say_file_and_row(tmp_path: Path, x: np.ndarray) -> None:
    csv_source = open_inputs(str(_csv(tmp_path / "rows.csv", x, NAMES)), spec=SPEC10)
    assert csv_source.name(16) == f"{tmp_path / 'rows.csv'}:17"
    np.save(tmp_path / "a.npy", x)
    assert open_inputs(str(tmp_path / "a.npy"), spec=SPEC10).name(3).endswith("a.npy[3]")


def test_stdin_is_csv(x: np.ndarray, tmp_path: Path) -> None:
    text = _csv(tmp_path / "rows.csv", x, NAMES).read_bytes()
    source = open_inputs("-", spec=SPEC10, stdin=io.BytesIO(text))
    got, _ = _read_all(source)
    np.testing.assert_array_equal(got, x)
    assert source.name(0) == "stdin:1"


def test_in_memory_inputs(x: np.ndarray) -> None:
    for item in (x, torch.from_numpy(x), x.tolist()):
        got, _ = _read_all(open_inputs(item, spec=SPEC10))
        np.testing.assert_allclose(got, x, atol=1e-6)


def test_columns_choose_and_order(tmp_path: Path, x: np.ndarray) -> None:
    wide = np.concatenate([x, x[:, :2] * 10], axis=1)
    path = _csv(tmp_path / "wide.csv", wide, [*NAMES, "extra", "id"])
    order = ["f3", "f1", "f0", "f2", "f4", "f5", "f6", "f7", "f8", "f9"]
    got, _ = _read_all(open_inputs(str(path), spec=SPEC10, columns=order))
    np.testing.assert_array_equal(got, x[:, [3, 1, 0, 2, 4, 5, 6, 7, 8, 9]])
    noheader = _csv(tmp_path / "nh.csv", wide, None)
    got, _ = _read_all(open_inputs(str(noheader), spec=SPEC10, columns=[str(i) for i in range(9, -1, -1)]))
    np.testing.assert_array_equal(got, x[:, ::-1])


def test_feature_names_of_the_spec_pick_columns(tmp_path: Path, x: np.ndarray) -> None:
    wide = np.concatenate([x[:, :1] * 3, x], axis=1)
    path = _csv(tmp_path / "t.csv", wide, ["target", *NAMES[::-1]])
    spec = SPEC10.with_feature_names(NAMES)
    got, _ = _read_all(open_inputs(str(path), spec=spec))
    np.testing.assert_array_equal(got, wide[:, 1:][:, ::-1])


def test_wrong_width_is_refused_before_reading(tmp_path: Path, x: np.ndarray) -> None:
    wide = np.concatenate([x, x[:, :2]], axis=1)
    path = _csv(tmp_path / "rows.csv", wide, [*NAMES, "a", "b"])
    with pytest.raises(PreprocessError) as err:
        open_inputs(str(path), spec=infer_mlp_spec(), model_name="MyModel")
    message = str(err.value)
    assert "MyModel's first layer takes 10 features" in message and "has 12 columns" in message
    np.save(tmp_path / "a.npy", wide)
    with pytest.raises(PreprocessError):
        open_inputs(str(tmp_path / "a.npy"), spec=SPEC10)


def infer_mlp_spec() -> InputSpec:
    from torch import nn

    from pthkit.input_spec import infer_input_spec

    return infer_input_spec(nn.Sequential(nn.Linear(10, 50), nn.ReLU(), nn.Linear(50, 2)))


def _bad_cell_csv(path: Path, x: np.ndarray, row: int, col: int) -> Path:
    lines = [",".join(NAMES)] + [",".join(f"{v:.9g}" for v in r) for r in x]
    cells = lines[row].split(",")
    cells[col] = "oops"
    lines[row] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_non_numeric_cell_names_row_and_column(tmp_path: Path, x: np.ndarray) -> None:
    path = _bad_cell_csv(tmp_path / "bad.csv", x, row=5, col=2)
    with pytest.raises(DatasetError) as err:
        open_inputs(str(path), spec=SPEC10)
    assert "row 5" in str(err.value) and "'f2'" in str(err.value)


def test_non_numeric_cell_in_a_later_block_stops_the_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    big = np.random.default_rng(1).normal(size=(3000, 10)).astype(np.float32)
    path = _bad_cell_csv(tmp_path / "bad.csv", big, row=2500, col=7)
    monkeypatch.setattr(tables, "_CSV_BLOCK", 4096)
    source = open_inputs(str(path), spec=SPEC10)  # the first block is fine
    seen = 0
    with pytest.raises(DatasetError) as err:
        for b in source.batches(100):
            seen += len(b.indices)
    assert "row 2500" in str(err.value) and "'f7'" in str(err.value)
    assert 0 < seen < 2500


def test_nan_refused_unless_allowed(tmp_path: Path, x: np.ndarray) -> None:
    y = x.copy()
    y[4, 6] = np.nan
    path = _csv(tmp_path / "nan.csv", y, NAMES)
    with pytest.raises(DatasetError) as err:
        open_inputs(str(path), spec=SPEC10)
    assert "row 5" in str(err.value) and "'f6'" in str(err.value)
    got, _ = _read_all(open_inputs(str(path), spec=SPEC10, allow_nan=True))
    assert np.isnan(got[4, 6]) and np.isnan(got).sum() == 1
    empty = tmp_path / "empty_cell.csv"
    empty.write_text("a,b\n1,2\n3,\n")
    with pytest.raises(DatasetError):
        open_inputs(str(empty), spec=spec_from_shape((2,), source="t"))
    np.save(tmp_path / "nan.npy", y)
    with pytest.raises(DatasetError):
        open_inputs(str(tmp_path / "nan.npy"), spec=SPEC10)


def test_image_given_to_a_table_model_and_table_given_to_an_image_model(tmp_path: Path, x: np.ndarray) -> None:
    from PIL import Image

    png = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(png)
    with pytest.raises(PreprocessError):
        open_inputs(str(png), spec=SPEC10)
    with pytest.raises(PreprocessError):
        open_inputs(Image.open(png), spec=SPEC10)
    image_spec = InputSpec(kind="image", shape=(3, None, None), channels=3, rank=2, source="test")
    with pytest.raises(PreprocessError):
        open_inputs(str(_csv(tmp_path / "rows.csv", x, NAMES)), spec=image_spec)


def test_stdlib_reader_gives_the_same_numbers_without_pyarrow(tmp_path: Path, x: np.ndarray,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = _csv(tmp_path / "rows.csv", x, NAMES)
    with_arrow, _ = _read_all(open_inputs(str(path), spec=SPEC10))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    without, _ = _read_all(open_inputs(str(path), spec=SPEC10))
    np.testing.assert_array_equal(with_arrow, without)
    bad = _bad_cell_csv(tmp_path / "bad.csv", x, row=9, col=0)
    with pytest.raises(DatasetError) as err:
        list(open_inputs(str(bad), spec=SPEC10).batches(4))
    assert "row 9" in str(err.value) and "'f0'" in str(err.value)
    with pytest.raises(PreprocessError) as missing:
        open_inputs(str(tmp_path / "x.parquet"), spec=SPEC10)
    assert "pthkit[tables]" in str(missing.value)


def test_token_ids_checked_against_the_embedding(tmp_path: Path) -> None:
    spec = InputSpec(kind="tokens", shape=(None,), dtype="int64", num_embeddings=50, source="test")
    ids = np.random.default_rng(0).integers(0, 50, size=(6, 5))
    np.save(tmp_path / "ids.npy", ids)
    got, _ = _read_all(open_inputs(str(tmp_path / "ids.npy"), spec=spec))
    assert got.dtype == np.int64 and (got == ids).all()
    np.save(tmp_path / "bad.npy", ids + 10)
    with pytest.raises(DatasetError):
        list(open_inputs(str(tmp_path / "bad.npy"), spec=spec).batches(8))
    np.save(tmp_path / "frac.npy", ids + 0.5)
    with pytest.raises(DatasetError):
        open_inputs(str(tmp_path / "frac.npy"), spec=spec)


def test_rows_reshape_to_a_fixed_shape_and_to_sequences(tmp_path: Path) -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 12)
    got, _ = _read_all(open_inputs(x, spec=spec_from_shape((3, 2, 2), source="t")))
    assert got.shape == (2, 3, 2, 2) and (got.reshape(2, 12) == x).all()
    seq = InputSpec(kind="sequence", shape=(None, 4), batch_first=True, source="t")
    got, _ = _read_all(open_inputs(x, spec=seq))
    assert got.shape == (2, 3, 4)


def test_unknown_file_and_column_and_format(tmp_path: Path, x: np.ndarray) -> None:
    with pytest.raises(InputNotFoundError):
        open_inputs(str(tmp_path / "nope.csv"), spec=SPEC10)
    path = _csv(tmp_path / "rows.csv", x, NAMES)
    with pytest.raises(DatasetError):
        open_inputs(str(path), spec=SPEC10, columns=["nope"])
    (tmp_path / "a.xyz").write_text("1")
    with pytest.raises(PreprocessError):
        open_inputs(str(tmp_path / "a.xyz"), spec=SPEC10)
    np.savez(tmp_path / "two.npz", a=np.zeros((3, 10)), b=np.zeros((3, 4, 4)))
    with pytest.raises(DatasetError):
        open_inputs(str(tmp_path / "two.npz"), spec=SPEC10)
    got, _ = _read_all(open_inputs(str(tmp_path / "two.npz"), spec=SPEC10, columns=["a"]))
    assert got.shape == (3, 10)


def test_several_files_are_one_source(tmp_path: Path, x: np.ndarray) -> None:
    a = _csv(tmp_path / "a.csv", x[:20], NAMES)
    np.save(tmp_path / "b.npy", x[20:])
    source = open_inputs([str(a), str(tmp_path / "b.npy")], spec=SPEC10)
    got, indices = _read_all(source, batch_size=7)
    assert indices == list(range(len(x))) and len(source) == len(x)
    np.testing.assert_array_equal(got, x)
    assert source.name(20).endswith("b.npy[0]") and source.name(19).endswith("a.csv:20")


def test_name_runs_spell_the_same_names_as_name(tmp_path: Path, x: np.ndarray) -> None:
    a = _csv(tmp_path / "a.csv", x[:20], NAMES)
    np.save(tmp_path / "b.npy", x[20:])
    source = open_inputs([str(a), str(tmp_path / "b.npy")], spec=SPEC10)
    for start, stop in ((0, len(x)), (5, 25), (20, 30), (3, 3)):
        runs = tables.name_runs(source, start, stop)
        assert runs is not None
        spelled = [f"{prefix}{first + k}{suffix}" for prefix, first, suffix, count in runs for k in range(count)]
        assert spelled == [source.name(i) for i in range(start, stop)]
    rows = open_inputs(pd_frame(x), spec=SPEC10)
    assert tables.name_runs(rows, 2, 4) == [("dataframe:", 3, "", 2)] and rows.name(2) == "dataframe:3"

    class Opaque:  # a source that cannot describe its names
        def name(self, index: int) -> str:
            return f"item {index}"

    assert tables.name_runs(Opaque(), 0, 3) is None  # type: ignore[arg-type]


def pd_frame(x: np.ndarray) -> object:
    pd = pytest.importorskip("pandas")
    return pd.DataFrame(x, columns=NAMES)


def test_blank_lines_and_crlf_are_not_rows(tmp_path: Path) -> None:
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"a,b\r\n1,2\r\n\r\n3,4\n\n5,6")
    source = open_inputs(str(path), spec=spec_from_shape((2,), source="t"))
    assert len(source) == 3
    got, _ = _read_all(source)
    np.testing.assert_array_equal(got, [[1, 2], [3, 4], [5, 6]])


def test_read_table_keeps_the_target_raw(tmp_path: Path, x: np.ndarray) -> None:
    path = tmp_path / "t.csv"
    with open(path, "w") as fh:
        fh.write(",".join([*NAMES, "species"]) + "\n")
        for i, r in enumerate(x):
            fh.write(",".join(f"{v:.9g}" for v in r) + f",{'ab'[i % 2]}\n")
    table = read_table(str(path), spec=SPEC10, target="species")
    np.testing.assert_array_equal(table.x, x)
    assert list(table.y[:3]) == ["a", "b", "a"] and table.feature_names == NAMES


@pytest.mark.slow
def test_a_million_rows_stream_in_bounded_memory(tmp_path: Path) -> None:
    """1,000,000 × 10 CSV: RSS stays < 500 MB above the baseline while every row is read (fresh process)."""
    import subprocess

    rng = np.random.default_rng(0)
    path = tmp_path / "big.csv"
    with open(path, "w") as fh:
        fh.write(",".join(NAMES) + "\n")
        for _ in range(10):
            np.savetxt(fh, rng.normal(size=(100_000, 10)), delimiter=",", fmt="%.6g")
    code = (
        "import resource, sys\n"
        "from pthkit.data.tables import open_inputs\n"
        "from pthkit.input_spec import spec_from_shape\n"
        "import pyarrow.csv, pyarrow.compute\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "n = sum(len(b.indices) for b in open_inputs(sys.argv[1], spec=spec_from_shape((10,), source='t')).batches(1024))\n"
        "print(n, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    rows, above_mb = (int(v) for v in out.stdout.split())
    assert rows == 1_000_000
    assert above_mb < 500, above_mb
