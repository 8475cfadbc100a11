"""Arrays and tables as model inputs: one example per row (tables) or per first-axis slice (arrays), streamed.

Formats: ``.npy`` (memory-mapped), ``.npz`` / ``.safetensors`` / ``torch.save`` files (named arrays, read without
running code: :func:`pthkit.checkpoint.reader.read_checkpoint`), ``.csv`` / ``.tsv`` (header optional), ``.parquet``,
``.jsonl`` (one numeric array, or one object of numbers, per line), ``-`` (CSV on standard input), and in-memory
numpy arrays, torch tensors, lists of rows and pandas DataFrames.

Every source is an :class:`pthkit.engine.types.InputSource`: a known length, a display name per example
(``"rows.csv:17"`` for the 17th data row of a table, ``"x.npy[16]"`` for first-axis slice 16 of an array) and
batches in order. Large files are never read whole: CSV and parquet are read block by block (pyarrow's streaming
readers; the standard ``csv`` module when pyarrow is missing, same values, slower), ``.npy`` is memory-mapped.

What is checked **when a source is opened**, before anything runs (:func:`open_inputs`): the file exists and has a
known format; the chosen columns exist; the width or per-example shape fits the model's
:class:`~pthkit.input_spec.InputSpec` ("MyModel's first layer takes 10 features; rows.csv has 12 columns"); the
first block has only numbers (a bad cell is named by row and column) and no NaN unless ``allow_nan``; a picture is
not given to a non-image model. Blocks read later get the same numeric and NaN checks as they stream; a bad cell
there stops the run with the same one-line error (the rows before it have been output).
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from pthkit.engine.types import Batch
from pthkit.errors import DatasetError, InputNotFoundError, PreprocessError

if TYPE_CHECKING:
    from pthkit.input_spec import InputSpec

__all__ = [
    "ARRAY_SUFFIXES",
    "IMAGE_SUFFIXES",
    "TABLE_SUFFIXES",
    "ArraySource",
    "ChainSource",
    "CsvSource",
    "JsonlSource",
    "ParquetSource",
    "TableData",
    "TensorSource",
    "is_image_input",
    "is_table_input",
    "name_runs",
    "open_input",
    "open_inputs",
    "prefetch",
    "read_table",
]

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson")
ARRAY_SUFFIXES = (".npy", ".npz", ".safetensors", ".pt", ".pth")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".heic",
                  ".avif", ".ico", ".jfif")
# Names that mark the input array of a file holding several (npz, safetensors, torch.save dicts).
_INPUT_NAMES = ("x", "X", "inputs", "input", "features", "data")
_CSV_BLOCK = 1 << 20  # bytes per pyarrow CSV block: memory stays at a few blocks whatever the file size
_CSV_THREADS = False  # measured: no faster with pyarrow threads here, and more blocks held in memory
_PARQUET_ROWS = 65536
_NULL_TOKENS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None", "-nan", "#N/A"})


def _suffix(item: Any) -> str:
    return Path(str(item)).suffix.lower() if isinstance(item, (str, os.PathLike)) else ""


def is_table_input(item: Any) -> bool:
    """True for what this module reads: table/array files by extension, ``-``, arrays, tensors, DataFrames."""
    if isinstance(item, (np.ndarray, torch.Tensor)) or _is_dataframe(item):
        return True
    if isinstance(item, (str, os.PathLike)):
        return str(item) == "-" or _suffix(item) in TABLE_SUFFIXES + ARRAY_SUFFIXES
    return False


def is_image_input(item: Any) -> bool:
    """True for a PIL image or a path with an image extension (what an image model takes)."""
    if type(item).__module__.startswith("PIL."):
        return True
    return _suffix(item) in IMAGE_SUFFIXES


def _is_dataframe(item: Any) -> bool:
    return type(item).__name__ == "DataFrame" and hasattr(item, "columns") and hasattr(item, "to_numpy")


# --- the spec check ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fit:
    """How examples of a source become model inputs: reshape of each row, dtype, and the id bound for tokens."""

    shape: tuple[int, ...]  # per-example shape fed to the model
    dtype: torch.dtype
    num_embeddings: int | None = None


def _spec_text(spec: InputSpec, model_name: str) -> str:
    if spec.kind == "features" and spec.width is not None:
        layer = spec.source.removeprefix("inferred from ")
        where = f"{model_name}'s first layer" if spec.source.startswith("inferred") else model_name
        return f"{where} takes {spec.width} features" + (f" ({layer})" if spec.source.startswith("inferred") else
                                                          f" ({spec.source})")
    shape = ", ".join("*" if v is None else str(v) for v in spec.shape)
    return f"{model_name} takes {spec.kind} of shape ({shape}) per example ({spec.source})"


def _fit(example_shape: tuple[int, ...], spec: InputSpec, *, where: str, what: str, model_name: str,
         columns: Sequence[str] | None = None) -> _Fit:
    """Check one example's shape against ``spec``; raise the one-line mismatch error, or say how to feed it.

    A flat row (a table) also fits a spec with fixed dimensions of the same total size (784 columns →
    ``(1, 28, 28)``) and a sequence spec ``(*, F)`` when its width is a multiple of ``F``.
    """
    dtype = torch.int64 if spec.dtype == "int64" else torch.float32
    dims = spec.shape
    if spec.kind == "image":
        raise PreprocessError.build(
            where, received=f"{what} (a table or array)", expected=f"images: {_spec_text(spec, model_name)}",
            hint="Give image files or folders, or pass --input-shape if the model takes tensors.")
    if not dims:  # unknown spec: take what is given
        return _Fit(shape=example_shape, dtype=dtype)
    if len(dims) == len(example_shape) and all(d is None or d == s for d, s in zip(dims, example_shape)):
        return _Fit(shape=example_shape, dtype=dtype, num_embeddings=spec.num_embeddings)
    if len(example_shape) == 1:
        width = example_shape[0]
        fixed = [d for d in dims if d is not None]
        if len(fixed) == len(dims) and len(dims) > 1 and math.prod(fixed) == width:
            return _Fit(shape=tuple(fixed), dtype=dtype, num_embeddings=spec.num_embeddings)
        if spec.kind == "sequence" and len(dims) == 2 and dims[0] is None and dims[1] and width % dims[1] == 0:
            return _Fit(shape=(width // dims[1], dims[1]), dtype=dtype)
    if spec.kind == "features" and len(example_shape) == 1:
        shown = ""
        if columns:
            shown = " (" + ", ".join(columns[:6]) + (" …" if len(columns) > 6 else "") + ")"
        raise PreprocessError.build(
            f"{_spec_text(spec, model_name)}; {where} has {example_shape[0]} columns",
            received=f"{example_shape[0]} columns{shown}", expected=f"{spec.width} input columns",
            hint=f"Choose {spec.width} columns with --columns, or give --input-shape.")
    got = ", ".join(str(s) for s in example_shape)
    raise PreprocessError.build(
        where, received=f"{what}: examples of shape ({got})", expected=_spec_text(spec, model_name),
        hint="Give inputs of that shape, or --input-shape to say what the model takes.")


def _check_values(block: np.ndarray, fit: _Fit, *, allow_nan: bool, where: str, first_row: int,
                  names: Sequence[str] | None, row_label: str) -> None:
    """NaN/inf and token-id checks on a float64/float32 block of rows (first axis = examples)."""
    if block.size == 0:
        return
    if block.dtype.kind == "f" and not allow_nan:
        bad = np.isnan(block)
        if bad.any():
            row, *rest = np.argwhere(bad)[0]
            col = _col_name(rest, names)
            raise DatasetError.build(
                where, received=f"a missing value (NaN or empty) at {row_label} {first_row + int(row)}{col}",
                expected="a number in every cell", hint="Fill it in, or pass --allow-nan to feed NaN to the model.")
    if fit.dtype == torch.int64:
        if block.dtype.kind == "f" and (not np.isfinite(block).all() or (block != np.round(block)).any()):
            pos = tuple(int(v) for v in np.argwhere(~np.isfinite(block) | (block != np.round(block)))[0])
            row, rest = pos[0], pos[1:]
            raise DatasetError.build(where, received=f"{block[pos]!r} at {row_label} "
                                     f"{first_row + int(row)}{_col_name(rest, names)}",
                                     expected="integer token ids (the model's first layer is an Embedding)")
        if fit.num_embeddings is not None and ((block < 0).any() or (block >= fit.num_embeddings).any()):
            out = (block < 0) | (block >= fit.num_embeddings)
            pos = tuple(int(v) for v in np.argwhere(out)[0])
            row, rest = pos[0], pos[1:]
            raise DatasetError.build(where, received=f"id {int(block[pos])} at {row_label} "
                                     f"{first_row + int(row)}{_col_name(rest, names)}",
                                     expected=f"ids in 0..{fit.num_embeddings - 1} (the Embedding's size)")


def _col_name(rest: Sequence[Any], names: Sequence[str] | None) -> str:
    if not len(rest):
        return ""
    j = int(rest[0])
    if names is not None and j < len(names) and len(rest) == 1:
        return f", column {names[j]!r}"
    return f", position {tuple(int(v) for v in rest)}"


def _to_tensor(block: np.ndarray, fit: _Fit) -> torch.Tensor:
    rows = block.shape[0]
    arr = block.reshape((rows, *fit.shape)) if block.shape[1:] != fit.shape else block
    out = np.ascontiguousarray(arr, dtype=np.int64 if fit.dtype == torch.int64 else np.float32)
    if not out.flags.writeable:  # a memory-mapped .npy slice: torch wants memory it may write
        out = out.copy()
    return torch.from_numpy(out)


def _no_targets(n: int) -> torch.Tensor:
    return torch.full((n,), -1, dtype=torch.int64)


class TensorSource(Protocol):
    """An :class:`~pthkit.engine.types.InputSource` of arrays/tables, plus what the table told about itself."""

    label: str
    feature_names: list[str] | None

    def __len__(self) -> int: ...

    def name(self, index: int) -> str: ...

    def batches(self, batch_size: int) -> Iterator[Batch]: ...


class _FileRows:
    """Display names of a file's data rows, 1-based: ``"rows.csv:17"`` is the 17th (header not counted)."""

    label: str

    def name(self, index: int) -> str:
        return f"{self.label}:{index + 1}"

    def name_parts(self) -> tuple[str, int, str]:
        """``(prefix, base, suffix)``: ``name(i) == f"{prefix}{i + base}{suffix}"`` (see :func:`name_runs`)."""
        return f"{self.label}:", 1, ""


def name_runs(source: TensorSource, start: int, stop: int) -> list[tuple[str, int, str, int]] | None:
    """The display names of examples ``start … stop-1`` as runs ``(prefix, first number, suffix, count)``, so that a
    writer can build a million names without a Python string per row; ``None`` for a source that cannot say."""
    if isinstance(source, ChainSource):
        runs: list[tuple[str, int, str, int]] = []
        for offset, part in zip(source.offsets, source.sources):
            lo, hi = max(start, offset), min(stop, offset + len(part))
            if lo < hi:
                inner = name_runs(part, lo - offset, hi - offset)
                if inner is None:
                    return None
                runs += inner
        return runs
    parts = getattr(source, "name_parts", None)
    if parts is None:
        return None
    prefix, base, suffix = parts()
    return [(prefix, start + base, suffix, stop - start)] if stop > start else []


# --- arrays --------------------------------------------------------------------------------------------------------------


class ArraySource:
    """Examples = first-axis slices of an array (numpy, memory-mapped ``.npy``, or torch tensor).

    Values are converted batch by batch (a memory-mapped file is never read whole); the first batch is checked when
    the source is built.
    """

    def __init__(self, array: np.ndarray, *, label: str, spec: InputSpec, model_name: str, allow_nan: bool,
                 feature_names: list[str] | None = None, row_style: str = "index",
                 targets: np.ndarray | None = None) -> None:
        if array.dtype.kind not in "biuf":
            raise DatasetError.build(label, received=f"an array of dtype {array.dtype}", expected="numbers")
        if array.ndim == 0:
            array = array.reshape(1, 1)
        if array.ndim == 1:
            array = array.reshape(-1, 1)
        self.array = array
        self.label = label
        self.feature_names = feature_names
        self.row_style = row_style
        self.allow_nan = allow_nan
        self.targets = targets
        what = f"{array.shape[0]} × {' × '.join(str(s) for s in array.shape[1:])} array"
        self.fit = _fit(tuple(array.shape[1:]), spec, where=label, what=what, model_name=model_name,
                        columns=feature_names)
        self._check(0, min(len(self), 4096))

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def name(self, index: int) -> str:
        return f"{self.label}:{index + 1}" if self.row_style == "row" else f"{self.label}[{index}]"

    def name_parts(self) -> tuple[str, int, str]:
        """``(prefix, base, suffix)``: ``name(i) == f"{prefix}{i + base}{suffix}"`` (see :func:`name_runs`)."""
        return (f"{self.label}:", 1, "") if self.row_style == "row" else (f"{self.label}[", 0, "]")

    def _check(self, start: int, end: int) -> np.ndarray:
        block = np.asarray(self.array[start:end])
        _check_values(block, self.fit, allow_nan=self.allow_nan, where=self.label,
                      first_row=start + (1 if self.row_style == "row" else 0), names=self.feature_names,
                      row_label="row" if self.row_style == "row" else "index")
        return block

    def batches(self, batch_size: int) -> Iterator[Batch]:
        n = len(self)
        for start in range(0, n, batch_size):
            end = min(n, start + batch_size)
            block = self._check(start, end)
            targets = (torch.as_tensor(self.targets[start:end]) if self.targets is not None
                       else _no_targets(end - start))
            yield Batch(tensors=_to_tensor(block, self.fit), indices=list(range(start, end)), targets=targets,
                        failed=[])


def _choose_named(arrays: dict[str, Any], *, label: str, columns: Sequence[str] | None,
                  spec: InputSpec, exclude: str | None = None) -> tuple[np.ndarray, list[str] | None]:
    """The input of a file of named arrays: one chosen array, or same-length 1-D arrays stacked as columns."""
    names = [k for k in arrays if k != exclude]
    if not names:
        raise DatasetError.build(label, received="no arrays", expected="at least one named array")
    wanted = list(columns) if columns else None
    if wanted is None and spec.feature_names and all(n in arrays for n in spec.feature_names):
        wanted = list(spec.feature_names)
    if wanted:
        unknown = [c for c in wanted if c not in arrays]
        if unknown:
            raise DatasetError.build(label, received=f"no array named {unknown[0]!r}",
                                     expected=f"one of {', '.join(names[:12])}", hint="Check --columns.")
        if len(wanted) == 1:
            return np.asarray(arrays[wanted[0]]), None
        return _stack_columns(arrays, wanted, label), wanted
    if len(names) == 1:
        return np.asarray(arrays[names[0]]), None
    flat = [n for n in names if np.asarray(arrays[n]).ndim == 1]
    if len(flat) == len(names) and len({np.asarray(arrays[n]).shape[0] for n in names}) == 1:
        return _stack_columns(arrays, names, label), names
    for key in _INPUT_NAMES:
        if key in names:
            return np.asarray(arrays[key]), None
    raise DatasetError.build(label, received=f"{len(names)} arrays ({', '.join(names[:8])})",
                             expected="one input array (or same-length 1-D arrays used as columns)",
                             hint="Choose it with --columns NAME.")


def _stack_columns(arrays: dict[str, Any], names: Sequence[str], label: str) -> np.ndarray:
    cols = [np.asarray(arrays[n]) for n in names]
    if any(c.ndim != 1 for c in cols) or len({c.shape[0] for c in cols}) != 1:
        raise DatasetError.build(label, received=f"arrays {', '.join(names[:6])} of shapes "
                                 f"{', '.join(str(c.shape) for c in cols[:6])}",
                                 expected="1-D arrays of one length to use as columns (or one array name)")
    return np.stack(cols, axis=1)


def _named_arrays(path: Path) -> dict[str, Any]:
    """Named arrays of ``.npz`` / ``.safetensors`` / ``torch.save`` files, as numpy (no code from the file runs)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if suffix == ".safetensors":
            from safetensors.numpy import load_file

            return dict(load_file(str(path)))
    except (OSError, ValueError) as err:
        raise DatasetError.build(str(path), received=" ".join(str(err).split())[:160],
                                 expected=f"a readable {suffix} file of numeric arrays") from err
    except Exception as err:  # safetensors raises its own SafetensorError
        raise DatasetError.build(str(path), received=" ".join(str(err).split())[:160],
                                 expected=f"a readable {suffix} file of numeric arrays") from err
    from pthkit.checkpoint.reader import read_checkpoint

    ckpt = read_checkpoint(path, strip_prefix=False)  # pthkit's inert reader: typed errors, budgets, no code
    out: dict[str, Any] = {}
    for key, tensor in ckpt.tensors.items():
        t = tensor.detach()
        out[key] = (t.float() if t.dtype in (torch.bfloat16, torch.float16) else t).cpu().numpy()
    return out


# --- CSV / TSV -------------------------------------------------------------------------------------------------------------


def _is_number(cell: str) -> bool:
    text = cell.strip()
    if text in _NULL_TOKENS:
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def _count_rows(path: Path) -> int:
    """Non-empty lines of a text file (CSV rows or JSON lines): newlines preceded by content (``\\r`` skipped),
    plus a last line without a newline; counted with numpy in 4 MB blocks (one vectorized pass)."""
    count = 0
    tail = b"\n\n"
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            buf = tail + block
            data = np.frombuffer(buf, dtype=np.uint8)
            idx = np.flatnonzero(data[2:] == 10) + 2
            prev = data[idx - 1]
            prev = np.where(prev == 13, data[idx - 2], prev)
            count += int(np.count_nonzero((prev != 10) & (prev != 13)))
            tail = buf[-2:]
    if tail[-1:] not in (b"\n", b"\r"):
        count += 1  # last line without a newline
    return count


def _cell(value: str) -> float:
    text = value.strip()
    if text in _NULL_TOKENS:
        return math.nan
    return float(text)


class CsvSource(_FileRows):
    """A CSV/TSV file (or ``-``: standard input, spooled to a temporary file) read in blocks.

    The header is detected (a first row with a cell that is not a number); ``columns`` chooses and orders the input
    columns by name (or 0-based index when there is no header); ``target`` is a column held out as the label
    (``Batch.targets``, evaluate). Row ``k`` is the ``k``-th data row, 1-based (``rows.csv:17``).
    """

    def __init__(self, path: str | os.PathLike[str], *, spec: InputSpec, model_name: str, allow_nan: bool,
                 columns: Sequence[str] | None = None, target: str | None = None,
                 target_map: dict[str, int] | None = None, stdin: IO[bytes] | None = None,
                 raw_targets: bool = False) -> None:
        self._tmp: Path | None = None
        self.raw_targets = raw_targets
        if str(path) == "-":
            self.label = "stdin"
            self.path = self._spool(stdin if stdin is not None else sys.stdin.buffer)
            self.delimiter = ","
        else:
            self.path = Path(path)
            self.label = str(path)
            if not self.path.is_file():
                raise InputNotFoundError.build("table", received=f"{self.label} (not found)",
                                               expected="a CSV/TSV file", hint="Check the path.")
            self.delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        self.allow_nan = allow_nan
        header, first = self._first_rows()
        self.has_header = header is not None
        all_names = header if header is not None else [str(i) for i in range(len(first))]
        self.all_names = all_names
        if len(set(all_names)) != len(all_names):
            dup = next(n for n in all_names if all_names.count(n) > 1)
            raise DatasetError.build(self.label, received=f"column {dup!r} twice in the header",
                                     expected="unique column names")
        self.target = self._resolve(target, "--target") if target is not None else None
        self.target_map = target_map
        wanted: list[str] | None = None
        if columns:
            wanted = [self._resolve(c, "--columns") for c in columns]
        elif spec.feature_names and all(n in all_names for n in spec.feature_names):
            wanted = list(spec.feature_names)
        self.columns = wanted if wanted is not None else [n for n in all_names if n != self.target]
        self.feature_names = list(self.columns) if self.has_header else None
        self._rows = max(0, _count_rows(self.path) - (1 if self.has_header else 0))
        what = f"{self._rows} rows × {len(self.columns)} columns"
        self.fit = _fit((len(self.columns),), spec, where=self.label, what=what, model_name=model_name,
                        columns=self.columns if self.has_header else None)
        self._pending: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._blocks: Iterator[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._started = False
        self._peek()  # the first block is parsed and checked now

    # -- opening --

    def _spool(self, stream: IO[bytes]) -> Path:
        fd, name = tempfile.mkstemp(prefix="pthkit-stdin-", suffix=".csv")
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
        self._tmp = Path(name)
        return self._tmp

    def _first_rows(self) -> tuple[list[str] | None, list[str]]:
        with open(self.path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            for row in reader:
                if not row or all(not c.strip() for c in row):
                    continue
                if all(_is_number(c) for c in row):
                    return None, row
                for second in reader:
                    if second and any(c.strip() for c in second):
                        return [c.strip() for c in row], second
                return [c.strip() for c in row], []
        raise DatasetError.build(self.label, received="an empty file", expected="rows of numbers")

    def _resolve(self, name: str, flag: str) -> str:
        if name in self.all_names:
            return name
        if not self.has_header and name.lstrip("-").isdigit() and -len(self.all_names) <= int(name) < len(self.all_names):
            return self.all_names[int(name)]
        shown = ", ".join(self.all_names[:10]) + (" …" if len(self.all_names) > 10 else "")
        raise DatasetError.build(f"{flag} {name}", received=f"no such column in {self.label}",
                                 expected=f"one of {shown}" if self.has_header else
                                 f"a 0-based column index below {len(self.all_names)} (the file has no header)")

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __del__(self) -> None:
        self.close()

    # -- reading --

    def __len__(self) -> int:
        return self._rows

    def _reader(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        try:
            import pyarrow  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            return self._stdlib_blocks()
        return self._arrow_blocks()

    def _arrow_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.csv as pacsv  # type: ignore[import-untyped]

        types: dict[str, Any] = {c: pa.float64() for c in self.columns}
        if self.target is not None:
            types[self.target] = pa.string() if self.target_map is not None or self.raw_targets else pa.float64()
        include = list(dict.fromkeys([*self.columns, *([self.target] if self.target else [])]))
        try:
            reader = self._open_arrow(pa, pacsv, types, include)
        except (pa.ArrowInvalid, ValueError) as err:
            raise self._bad_cell(0, err) from None
        done = 0
        while True:
            try:
                rb = reader.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowInvalid, ValueError) as err:
                raise self._bad_cell(done, err) from None
            if rb.num_rows == 0:
                continue
            block = _stack_columns_arrow(rb, self.columns)
            target = None
            if self.target is not None:
                raw = rb.column(self.target).to_numpy(zero_copy_only=False)
                target = self._map_targets(raw, done)
            done += rb.num_rows
            yield block, target

    def _open_arrow(self, pa: Any, pacsv: Any, types: dict[str, Any], include: list[str]) -> Any:
        return pacsv.open_csv(
            str(self.path),
            read_options=pacsv.ReadOptions(column_names=self.all_names, skip_rows=1 if self.has_header else 0,
                                           block_size=_CSV_BLOCK, use_threads=_CSV_THREADS),
            parse_options=pacsv.ParseOptions(delimiter=self.delimiter),
            convert_options=pacsv.ConvertOptions(column_types=types, include_columns=include,
                                                 null_values=sorted(_NULL_TOKENS), strings_can_be_null=True,
                                                 quoted_strings_can_be_null=True),
        )

    def _stdlib_blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        idx = [self.all_names.index(c) for c in self.columns]
        tidx = self.all_names.index(self.target) if self.target is not None else None
        with open(self.path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            rows: list[list[float]] = []
            targets: list[str] = []
            done = 0
            skip_header = self.has_header
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if skip_header:
                    skip_header = False
                    continue
                if len(row) != len(self.all_names):
                    raise DatasetError.build(self.label, received=f"{len(row)} cells at row {done + len(rows) + 1}",
                                             expected=f"{len(self.all_names)} cells like the first row")
                try:
                    rows.append([_cell(row[j]) for j in idx])
                except ValueError:
                    bad = next(j for j in idx if not _is_number(row[j]))
                    raise self._cell_error(done + len(rows) + 1, self.all_names[bad], row[bad]) from None
                if tidx is not None:
                    targets.append(row[tidx])
                if len(rows) >= 8192:
                    yield self._stdlib_block(rows, targets, done)
                    done += len(rows)
                    rows, targets = [], []
            if rows:
                yield self._stdlib_block(rows, targets, done)

    def _stdlib_block(self, rows: list[list[float]], targets: list[str],
                      done: int) -> tuple[np.ndarray, np.ndarray | None]:
        block = np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.columns))
        if self.target is None:
            return block, None
        raw: np.ndarray
        if self.target_map is not None or self.raw_targets:
            raw = np.asarray([None if t.strip() in _NULL_TOKENS else t.strip() for t in targets], dtype=object)
        else:
            try:
                raw = np.asarray([_cell(t) for t in targets], dtype=np.float64)
            except ValueError:
                k = next(i for i, t in enumerate(targets) if not _is_number(t))
                raise self._cell_error(done + k + 1, self.target, targets[k]) from None
        return block, self._map_targets(raw, done)

    def _map_targets(self, raw: np.ndarray, done: int) -> np.ndarray:
        if self.raw_targets:
            missing = [k for k, v in enumerate(raw) if v is None]
            if missing:
                raise DatasetError.build(self.label, received=f"no target value at row {done + missing[0] + 1}, "
                                         f"column {self.target!r}", expected="a value in every target cell")
            return np.asarray([_class_key(v) for v in raw], dtype=object)
        if self.target_map is None:
            values = raw.astype(np.float64)
            if np.isnan(values).any():
                k = int(np.argwhere(np.isnan(values))[0][0])
                raise DatasetError.build(self.label, received=f"no target value at row {done + k + 1}, column "
                                         f"{self.target!r}", expected="a number in every target cell")
            return values
        out = np.empty(len(raw), dtype=np.int64)
        for k, value in enumerate(raw):
            key = None if value is None else str(value).strip()
            if key is None or key not in self.target_map:
                raise DatasetError.build(self.label, received=f"target {key!r} at row {done + k + 1}, column "
                                         f"{self.target!r}",
                                         expected=f"one of the model's classes ({', '.join(list(self.target_map)[:8])})")
            out[k] = self.target_map[key]
        return out

    def _cell_error(self, row: int, column: str, value: str) -> DatasetError:
        col = f"column {column!r}" if self.has_header else f"column {int(column) + 1} (index {column})"
        return DatasetError.build(self.label, received=f"{value.strip()[:40]!r} at row {row}, {col}",
                                  expected="a number in every input cell",
                                  hint="Fix the cell, or leave that column out with --columns.")

    def _bad_cell(self, done: int, err: Exception) -> DatasetError:
        """Name the row and column of the first bad cell after row ``done`` (pyarrow names neither precisely)."""
        try:
            for _ in self._stdlib_scan(done):
                pass
        except DatasetError as located:
            return located
        return DatasetError.build(self.label, received=" ".join(str(err).split())[:200],
                                  expected="a CSV of numbers with the same number of cells on every row")

    def _stdlib_scan(self, skip: int) -> Iterator[None]:
        idx = [self.all_names.index(c) for c in self.columns]
        with open(self.path, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.reader(fh, delimiter=self.delimiter)
            seen = -1 if self.has_header else 0
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                seen += 1
                if seen <= skip:
                    continue
                if len(row) != len(self.all_names):
                    raise DatasetError.build(self.label, received=f"{len(row)} cells at row {seen}",
                                             expected=f"{len(self.all_names)} cells like the first row")
                for j in idx:
                    if not _is_number(row[j]):
                        raise self._cell_error(seen, self.all_names[j], row[j])
                if self.target is not None and self.target_map is None and not self.raw_targets:
                    t = self.all_names.index(self.target)
                    if not _is_number(row[t]):
                        raise self._cell_error(seen, self.target, row[t])
                yield None

    def _peek(self) -> None:
        self._blocks = self._reader()
        first = next(self._blocks, None)
        if first is not None:
            _check_values(first[0], self.fit, allow_nan=self.allow_nan, where=self.label, first_row=1,
                          names=self.columns, row_label="row")
            self._pending.append(first)

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """(rows as float64, targets or None) blocks in file order; checked. Usable once."""
        if self._started:
            raise DatasetError.build(self.label, received="a second pass over a streamed table",
                                     expected="one pass", hint="Open the table again.")
        self._started = True
        row = 1
        for block in self._pending:
            row += len(block[0])
            yield block
        self._pending = []
        assert self._blocks is not None
        for block in prefetch(self._blocks):
            _check_values(block[0], self.fit, allow_nan=self.allow_nan, where=self.label, first_row=row,
                          names=self.columns, row_label="row")
            row += len(block[0])
            yield block
        self.close()

    def batches(self, batch_size: int) -> Iterator[Batch]:
        yield from _rebatch(self.blocks(), batch_size, self.fit)


def prefetch(blocks: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``blocks``, produced one thread ahead: pyarrow parses without the GIL while the caller runs the model (and
    ``pthkit predict`` runs the model this way while it formats the output).

    Measured on the 2-core machine (1,000,000 × 10 CSV, the README's MLP): parse and model overlap instead of taking
    turns. At most ``depth`` blocks wait in the queue; an error in the reader is raised here, in order; stopping early
    stops the thread.
    """
    import queue
    import threading

    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for item in blocks:
                while not stop.is_set():
                    try:
                        q.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(("end", None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
            q.put(("error", err))

    thread = threading.Thread(target=work, name="pthkit-table-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _rebatch(blocks: Iterator[tuple[np.ndarray, np.ndarray | None]], batch_size: int, fit: _Fit,
             offset: int = 0) -> Iterator[Batch]:
    """Blocks of any length → batches of exactly ``batch_size`` rows (the last one shorter), in order."""
    buf: list[np.ndarray] = []
    tbuf: list[np.ndarray | None] = []
    have = 0
    start = offset

    def emit(rows: np.ndarray, targets: np.ndarray | None) -> Batch:
        nonlocal start
        n = rows.shape[0]
        t = torch.from_numpy(targets) if targets is not None else _no_targets(n)
        batch = Batch(tensors=_to_tensor(rows, fit), indices=list(range(start, start + n)), targets=t, failed=[])
        start += n
        return batch

    for block, targets in blocks:
        pos = 0
        if have:  # complete the partial batch first
            need = batch_size - have
            buf.append(block[:need])
            tbuf.append(targets[:need] if targets is not None else None)
            have += min(need, len(block))
            pos = need
            if have < batch_size:
                continue
            rows = np.concatenate(buf)
            tt = None if tbuf[0] is None else np.concatenate([t for t in tbuf if t is not None])
            yield emit(rows, tt)
            buf, tbuf, have = [], [], 0
        while pos + batch_size <= len(block):
            yield emit(block[pos:pos + batch_size], targets[pos:pos + batch_size] if targets is not None else None)
            pos += batch_size
        if pos < len(block):
            buf.append(block[pos:])
            tbuf.append(targets[pos:] if targets is not None else None)
            have = len(block) - pos
    if have:
        rows = np.concatenate(buf)
        tt = None if tbuf[0] is None else np.concatenate([t for t in tbuf if t is not None])
        yield emit(rows, tt)


# --- parquet ------------------------------------------------------------------------------------------------------------------


def _stack_columns_arrow(rb: Any, columns: Sequence[str]) -> np.ndarray:
    """Float64 rows × columns of a pyarrow record batch (nulls → NaN) without going through pandas."""
    out = np.empty((rb.num_rows, len(columns)), dtype=np.float64)
    for j, name in enumerate(columns):
        col = rb.column(name)
        if col.null_count:
            import pyarrow.compute as pc  # type: ignore[import-untyped]  # only here: its import costs ~0.15 s

            col = pc.fill_null(col, float("nan"))
        # the float64 data buffer itself (Array.to_numpy imports pandas, ~0.8 s, on its first call)
        out[:, j] = np.frombuffer(col.buffers()[1], dtype=np.float64, count=len(col), offset=col.offset * 8)
    return out


def _pyarrow(what: str) -> Any:
    try:
        import pyarrow  # type: ignore[import-untyped]
    except ImportError:
        raise PreprocessError.build(what, received="pyarrow is not installed", expected="pyarrow",
                                    hint="pip install 'pthkit[tables]'") from None
    return pyarrow


class ParquetSource(_FileRows):
    """A parquet file read in row groups (``pyarrow.parquet``; one-line error naming ``pthkit[tables]`` without it)."""

    def __init__(self, path: str | os.PathLike[str], *, spec: InputSpec, model_name: str, allow_nan: bool,
                 columns: Sequence[str] | None = None, target: str | None = None,
                 target_map: dict[str, int] | None = None, raw_targets: bool = False) -> None:
        _pyarrow(f"parquet input {path}")
        self.raw_targets = raw_targets
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        self.path = Path(path)
        self.label = str(path)
        if not self.path.is_file():
            raise InputNotFoundError.build("table", received=f"{self.label} (not found)", expected="a parquet file")
        try:
            self.file = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as err:
            raise DatasetError.build(self.label, received=" ".join(str(err).split())[:160],
                                     expected="a readable parquet file") from err
        schema = self.file.schema_arrow
        names = list(schema.names)
        for flag, name in (("--target", target), *(("--columns", c) for c in (columns or []))):
            if name is not None and name not in names:
                raise DatasetError.build(f"{flag} {name}", received=f"no such column in {self.label}",
                                         expected=f"one of {', '.join(names[:10])}")
        self.target = target
        self.target_map = target_map
        if columns:
            self.columns = list(columns)
        elif spec.feature_names and all(n in names for n in spec.feature_names):
            self.columns = list(spec.feature_names)
        else:
            self.columns = [n for n in names if n != target]
        for c in self.columns:
            t = schema.field(c).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise DatasetError.build(self.label, received=f"column {c!r} of type {t}",
                                         expected="numeric input columns",
                                         hint="Leave it out with --columns.")
        self.feature_names: list[str] | None = list(self.columns)
        self.allow_nan = allow_nan
        self._rows = int(self.file.metadata.num_rows)
        self.fit = _fit((len(self.columns),), spec, where=self.label, what=f"{self._rows} rows × "
                        f"{len(self.columns)} columns", model_name=model_name, columns=self.columns)

    def __len__(self) -> int:
        return self._rows

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        row = 1
        cols = list(dict.fromkeys([*self.columns, *([self.target] if self.target else [])]))
        for rb in self.file.iter_batches(batch_size=_PARQUET_ROWS, columns=cols):
            block = np.stack([rb.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                              for c in self.columns], axis=1)
            _check_values(block, self.fit, allow_nan=self.allow_nan, where=self.label, first_row=row,
                          names=self.columns, row_label="row")
            target = None
            if self.target is not None:
                raw = rb.column(self.target).to_numpy(zero_copy_only=False)
                target = np.asarray([_class_key(v) for v in raw], dtype=object) if self.raw_targets else \
                    _targets(raw, self.target_map, self.label, self.target, row)
            row += rb.num_rows
            yield block, target

    def batches(self, batch_size: int) -> Iterator[Batch]:
        yield from _rebatch(self.blocks(), batch_size, self.fit)


def _targets(raw: np.ndarray, target_map: dict[str, int] | None, label: str, column: str, row: int) -> np.ndarray:
    if target_map is None:
        try:
            values = raw.astype(np.float64)
        except (TypeError, ValueError):
            raise DatasetError.build(label, received=f"non-numeric values in target column {column!r}",
                                     expected="numbers (regression) or class names") from None
        if np.isnan(values).any():
            k = int(np.argwhere(np.isnan(values))[0][0])
            raise DatasetError.build(label, received=f"no target at row {row + k}, column {column!r}",
                                     expected="a value in every target cell")
        return values
    out = np.empty(len(raw), dtype=np.int64)
    for k, value in enumerate(raw):
        key = _class_key(value)
        if key not in target_map:
            raise DatasetError.build(label, received=f"target {key!r} at row {row + k}, column {column!r}",
                                     expected=f"one of the classes ({', '.join(list(target_map)[:8])})")
        out[k] = target_map[key]
    return out


def _class_key(value: Any) -> str:
    """A class value as its name: ``1.0`` → ``"1"``, ``"cat"`` → ``"cat"``."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace").strip()
    return str(value).strip()


# --- JSON lines -----------------------------------------------------------------------------------------------------------------


class JsonlSource(_FileRows):
    """One example per line: a JSON array of numbers (any nesting: a tensor) or an object of named numbers."""

    def __init__(self, path: str | os.PathLike[str], *, spec: InputSpec, model_name: str, allow_nan: bool,
                 columns: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.label = str(path)
        if not self.path.is_file():
            raise InputNotFoundError.build("table", received=f"{self.label} (not found)", expected="a .jsonl file")
        self.allow_nan = allow_nan
        self.columns = list(columns) if columns else None
        self._rows = _count_rows(self.path)
        first = next(self._parsed(limit=1), None)
        if first is None:
            raise DatasetError.build(self.label, received="an empty file", expected="one JSON array per line")
        _, example = first
        if self.columns is None and isinstance(self._keys, list):
            self.columns = self._keys
        if self.columns is None and spec.feature_names and isinstance(self._keys, list) and \
                all(n in self._keys for n in spec.feature_names):
            self.columns = list(spec.feature_names)
        self.feature_names = self.columns
        self.fit = _fit(tuple(example.shape), spec, where=self.label, what=f"{self._rows} lines",
                        model_name=model_name, columns=self.columns)
        _check_values(example[None], self.fit, allow_nan=allow_nan, where=self.label, first_row=1,
                      names=self.columns, row_label="line")

    _keys: list[str] | None = None

    def __len__(self) -> int:
        return self._rows

    def _parsed(self, limit: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        shape: tuple[int, ...] | None = None
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            k = 0
            for text in fh:
                if not text.strip():
                    continue
                k += 1
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as err:
                    raise DatasetError.build(self.label, received=f"invalid JSON at line {k} ({err.msg})",
                                             expected="one JSON array of numbers per line") from None
                if isinstance(value, dict):
                    if self._keys is None:
                        self._keys = [str(key) for key in value]
                    keys = self.columns or self._keys
                    missing = [key for key in keys if key not in value]
                    if missing:
                        raise DatasetError.build(self.label, received=f"no {missing[0]!r} at line {k}",
                                                 expected=f"objects with keys {', '.join(keys[:8])}")
                    value = [value[key] for key in keys]
                try:
                    arr = np.asarray(value, dtype=np.float64)
                except (TypeError, ValueError):
                    raise DatasetError.build(self.label, received=f"a non-numeric value at line {k}: "
                                             f"{text.strip()[:60]!r}", expected="numbers only") from None
                if arr.ndim == 0:
                    arr = arr.reshape(1)
                if shape is None:
                    shape = arr.shape
                elif arr.shape != shape:
                    raise DatasetError.build(self.label, received=f"shape {arr.shape} at line {k}",
                                             expected=f"every line of shape {shape} like line 1")
                yield k, arr
                if limit is not None and k >= limit:
                    return

    def blocks(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        rows: list[np.ndarray] = []
        first = 1
        for k, arr in self._parsed():
            rows.append(arr)
            if len(rows) >= 4096:
                block = np.stack(rows)
                _check_values(block, self.fit, allow_nan=self.allow_nan, where=self.label, first_row=first,
                              names=self.columns, row_label="line")
                yield block, None
                first = k + 1
                rows = []
        if rows:
            block = np.stack(rows)
            _check_values(block, self.fit, allow_nan=self.allow_nan, where=self.label, first_row=first,
                          names=self.columns, row_label="line")
            yield block, None

    def batches(self, batch_size: int) -> Iterator[Batch]:
        yield from _rebatch(self.blocks(), batch_size, self.fit)


# --- several inputs ---------------------------------------------------------------------------------------------------------


class ChainSource:
    """Several sources one after the other, indexed 0..N-1 across all of them."""

    def __init__(self, sources: Sequence[TensorSource]) -> None:
        self.sources = list(sources)
        self.offsets = [0]
        for s in self.sources:
            self.offsets.append(self.offsets[-1] + len(s))
        self.label = ", ".join(s.label for s in self.sources)
        names = [s.feature_names for s in self.sources]
        self.feature_names = names[0] if names and all(n == names[0] for n in names) else None

    def __len__(self) -> int:
        return self.offsets[-1]

    def name(self, index: int) -> str:
        import bisect

        k = bisect.bisect_right(self.offsets, index) - 1
        return self.sources[k].name(index - self.offsets[k])

    def batches(self, batch_size: int) -> Iterator[Batch]:
        for offset, source in zip(self.offsets, self.sources):
            for b in source.batches(batch_size):
                yield b._replace(indices=[offset + i for i in b.indices],
                                 failed=[(offset + i, e) for i, e in b.failed])


# --- opening -------------------------------------------------------------------------------------------------------------------


def open_input(item: Any, *, spec: InputSpec, model_name: str = "the model", columns: Sequence[str] | None = None,
               allow_nan: bool = False, target: str | None = None, target_map: dict[str, int] | None = None,
               stdin: IO[bytes] | None = None) -> TensorSource:
    """One input (a path, ``-``, an array, a tensor, a list of rows, a DataFrame) as a checked source.

    Raises:
        PreprocessError: the input does not fit ``spec`` (width, shape), or an image was given to a non-image model.
        DatasetError: unreadable file, unknown column, non-numeric cell (row and column named), NaN (unless
            ``allow_nan``).
        InputNotFoundError: the file does not exist.
    """
    if spec.kind != "image" and is_image_input(item):
        shown = getattr(item, "filename", None) or str(item)
        raise PreprocessError.build(
            str(shown), received="an image", expected=f"arrays or tables: {_spec_text(spec, model_name)}",
            hint="Give .csv, .npy, .parquet … rows, or load an image model.")
    if isinstance(item, torch.Tensor):
        t = item.detach().cpu()
        arr = (t.float() if t.is_floating_point() and t.dtype != torch.float64 else t).numpy()
        return ArraySource(arr, label="input", spec=spec, model_name=model_name, allow_nan=allow_nan)
    if isinstance(item, np.ndarray):
        return ArraySource(item, label="input", spec=spec, model_name=model_name, allow_nan=allow_nan)
    if _is_dataframe(item):
        frame = item[list(columns)] if columns else item
        frame_names = [str(c) for c in frame.columns]
        return ArraySource(frame.to_numpy(dtype=np.float64), label="dataframe", spec=spec, model_name=model_name,
                           allow_nan=allow_nan, feature_names=frame_names, row_style="row")
    if isinstance(item, (list, tuple)):
        try:
            arr = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError):
            raise DatasetError.build("inputs", received="a list with non-numeric values",
                                     expected="a list of rows of numbers") from None
        return ArraySource(arr, label="input", spec=spec, model_name=model_name, allow_nan=allow_nan)
    if not isinstance(item, (str, os.PathLike)):
        raise PreprocessError.build("inputs", received=type(item).__name__,
                                    expected="a path, '-', a numpy array, a torch tensor or a list of rows")
    text = str(item)
    suffix = _suffix(item)
    if text == "-" or suffix in (".csv", ".tsv"):
        return CsvSource(item, spec=spec, model_name=model_name, allow_nan=allow_nan, columns=columns, target=target,
                         target_map=target_map, stdin=stdin)
    if suffix in (".parquet", ".pq"):
        return ParquetSource(item, spec=spec, model_name=model_name, allow_nan=allow_nan, columns=columns,
                             target=target, target_map=target_map)
    if suffix in (".jsonl", ".ndjson"):
        if target is not None:
            raise DatasetError.build("--target", received=f"{text} (JSON lines of arrays)",
                                     expected="a CSV, TSV or parquet table with a target column")
        return JsonlSource(item, spec=spec, model_name=model_name, allow_nan=allow_nan, columns=columns)
    path = Path(text)
    if not path.is_file():
        raise InputNotFoundError.build("input", received=f"{text} (not found)", expected="an array or table file",
                                       hint="Check the path.")
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DatasetError.build(text, received=" ".join(str(err).split())[:160],
                                     expected="a .npy file of numbers (no pickled objects)") from err
        return ArraySource(arr, label=text, spec=spec, model_name=model_name, allow_nan=allow_nan)
    if suffix in (".npz", ".safetensors", ".pt", ".pth"):
        arrays = _named_arrays(path)
        arr, names = _choose_named(arrays, label=text, columns=columns, spec=spec, exclude=target)
        targets = None
        if target is not None:
            if target not in arrays:
                raise DatasetError.build(f"--target {target}", received=f"no array of that name in {text}",
                                         expected=f"one of {', '.join(list(arrays)[:10])}")
            tvals = np.asarray(arrays[target])
            targets = _targets(tvals, target_map, text, target, 0) if target_map is not None else \
                tvals.astype(np.float64)
        return ArraySource(arr, label=text, spec=spec, model_name=model_name, allow_nan=allow_nan,
                           feature_names=names, targets=targets)
    raise PreprocessError.build(text, received=f"a {suffix or 'file without extension'}",
                                expected="an array or table: " + ", ".join((*TABLE_SUFFIXES, *ARRAY_SUFFIXES)) + " or -")


def open_inputs(inputs: Any, *, spec: InputSpec, model_name: str = "the model", columns: Sequence[str] | None = None,
                allow_nan: bool = False, target: str | None = None, target_map: dict[str, int] | None = None,
                stdin: IO[bytes] | None = None) -> TensorSource:
    """Every input (a path, an array, or a list of paths/arrays) as one checked source (see :func:`open_input`).

    A list of numbers-lists (``[[1, 2], [3, 4]]``) is one array of rows; a list of paths is several files.
    """
    items: list[Any]
    if isinstance(inputs, (list, tuple)) and inputs and not all(
            isinstance(i, (str, os.PathLike, np.ndarray, torch.Tensor)) or _is_dataframe(i) or is_image_input(i)
            for i in inputs):
        items = [inputs]  # rows of numbers
    elif isinstance(inputs, (list, tuple)):
        items = list(inputs)
    else:
        items = [inputs]
    if not items:
        raise InputNotFoundError.build("inputs", received="no inputs", expected="at least one array or table")
    if sum(1 for i in items if str(i) == "-") > 1:
        raise PreprocessError.build("inputs", received="'-' twice", expected="standard input at most once")
    sources = [open_input(i, spec=spec, model_name=model_name, columns=columns, allow_nan=allow_nan, target=target,
                          target_map=target_map, stdin=stdin) for i in items]
    return sources[0] if len(sources) == 1 else ChainSource(sources)


# --- whole tables (fine-tuning) --------------------------------------------------------------------------------------------


@dataclass
class TableData:
    """A table read whole: inputs ``x`` (rows × features, float32), raw target values, and the column names."""

    x: np.ndarray
    y: np.ndarray | None  # float64 numbers or object (strings), one per row
    feature_names: list[str] | None
    target: str | None
    label: str


# Fine-tuning holds the table in memory (it is shuffled every epoch): refuse tables beyond this many cells.
_MAX_CELLS = 200_000_000


def read_table(path: str | os.PathLike[str], *, spec: InputSpec, model_name: str = "the model",
               columns: Sequence[str] | None = None, target: str | None = None,
               allow_nan: bool = False) -> TableData:
    """Read a whole CSV/TSV/parquet/array file for training: inputs checked like :func:`open_input`, target raw.

    The target column keeps its values as they are (numbers, or class names as strings) so the caller decides
    between regression and classification.
    """
    text = str(path)
    suffix = _suffix(path)
    if suffix in (".csv", ".tsv") or text == "-":
        src = CsvSource(path, spec=spec, model_name=model_name, allow_nan=allow_nan, columns=columns, target=target,
                        raw_targets=True)
        blocks = list(src.blocks())
    elif suffix in (".parquet", ".pq"):
        psrc = ParquetSource(path, spec=spec, model_name=model_name, allow_nan=allow_nan, columns=columns,
                             target=target, raw_targets=True)
        src = psrc  # type: ignore[assignment]
        blocks = list(psrc.blocks())
    elif suffix in (".npz", ".safetensors", ".pt", ".pth", ".npy"):
        asrc = open_input(path, spec=spec, model_name=model_name, columns=columns, allow_nan=allow_nan)
        assert isinstance(asrc, ArraySource)
        x = np.asarray(asrc.array, dtype=np.float32)
        y = None
        if target is not None:
            if suffix == ".npy":
                raise DatasetError.build("--target", received=f"{text} (one array)",
                                         expected="a table or a file of named arrays holding the target")
            arrays = _named_arrays(Path(text))
            if target not in arrays:
                raise DatasetError.build(f"--target {target}", received=f"no array of that name in {text}",
                                         expected=f"one of {', '.join(list(arrays)[:10])}")
            x_arr, names = _choose_named(arrays, label=text, columns=columns, spec=spec, exclude=target)
            x = np.asarray(x_arr, dtype=np.float32)
            y = np.asarray(arrays[target])
            return TableData(x=x, y=y, feature_names=names, target=target, label=text)
        return TableData(x=x, y=y, feature_names=asrc.feature_names, target=None, label=text)
    else:
        raise PreprocessError.build(text, received=f"a {suffix or 'file without extension'}",
                                    expected="a table for training: .csv, .tsv, .parquet, .npz, .safetensors, .pt")
    rows = sum(len(b[0]) for b in blocks)
    if rows * max(1, len(src.columns)) > _MAX_CELLS:
        raise DatasetError.build(text, received=f"{rows} rows × {len(src.columns)} columns",
                                 expected=f"at most {_MAX_CELLS} cells to train on in memory")
    x = np.concatenate([b[0] for b in blocks]).astype(np.float32) if blocks else \
        np.empty((0, len(src.columns)), np.float32)
    y = np.concatenate([b[1] for b in blocks if b[1] is not None]) if target is not None and blocks else None
    return TableData(x=x, y=y, feature_names=src.feature_names, target=target, label=src.label)
