"""Predictions of non-image models: arrays and tables in, rows of named outputs out.

:func:`predict_tensors` is what :meth:`pthkit.model.Model.predict` calls when the model does not take images. It
opens the inputs as checked sources (:mod:`pthkit.data.tables`: width, numbers, NaN, images refused), runs them
through :class:`pthkit.engine.Engine`, and turns each batch's outputs into :class:`TensorPrediction` rows:

- ``task="raw"`` (default): the model's output values per example (``outputs``);
- ``task="regress"``: the same values, named by ``output_names`` when given (one name per value);
- ``task="classify"``: softmax (or sigmoid / logits) top-k classes with labels, as for images.

Models returning tuples or dicts give every output, named (``output_0``, ``output_1`` … or the dict's keys).

A row object per example costs microseconds; for large tables use the batch path: :func:`predict_blocks` yields the
stacked outputs of consecutive examples (:class:`OutputBlock`, 65,536 rows) without per-row objects (``pthkit
predict`` formats ``--csv`` / ``--json`` from them and writes ``--save-outputs``), :func:`predict_arrays` concatenates
them; :func:`save_outputs` writes ``.npy`` / ``.safetensors``.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pthkit.errors import PreprocessError
from pthkit.tasks.predict import ClassScore, Prediction

if TYPE_CHECKING:
    from torch import nn

    from pthkit.data.tables import TensorSource
    from pthkit.engine.types import Backend, Outputs
    from pthkit.model import Model

__all__ = [
    "OutputBlock",
    "OutputCollector",
    "OutputTask",
    "TensorPrediction",
    "csv_header",
    "csv_row",
    "named_outputs",
    "predict_arrays",
    "predict_blocks",
    "predict_tensors",
    "prepare_tensors",
    "save_outputs",
]

OutputTask = Literal["classify", "regress", "raw"]
_TASKS = ("classify", "regress", "raw")
_MODES = ("softmax", "sigmoid", "logits")


@dataclass
class TensorPrediction(Prediction):
    """A :class:`~pthkit.tasks.predict.Prediction` for a non-image input (``path`` = ``"rows.csv:17"``).

    ``outputs``: every output of the model for this example, flattened, by name (``{"output": [...]}`` for a model
    returning one tensor; ``{"output_0": …, "output_1": …}`` for tuples; the keys of dicts). ``output_names``: names
    of the values of a single output (``--output-names``). Classification rows also fill ``classes``.
    """

    outputs: dict[str, list[float]] | None = None
    output_names: list[str] | None = field(default=None, repr=False)
    task: str = "raw"

    def outputs_json(self) -> Any:
        """``"outputs"`` as printed: a list for a single unnamed output, ``{name: value}`` with ``output_names``,
        ``{name: [values]}`` for several outputs."""
        if self.outputs is None:
            return None
        if len(self.outputs) == 1:
            values = next(iter(self.outputs.values()))
            if self.output_names is not None and len(self.output_names) == len(values):
                return {n: _round(v) for n, v in zip(self.output_names, values)}
            return [_round(v) for v in values]
        return {k: [_round(v) for v in vs] for k, vs in self.outputs.items()}

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"input": self.path, "path": self.path, "ok": False, "error": self.error}
        out: dict[str, Any] = {"input": self.path, "path": self.path, "ok": True}
        if self.task == "classify":
            out["mode"] = self.mode
            out["classes"] = [c.to_dict() for c in self.classes]
        if self.outputs is not None:
            out["outputs"] = self.outputs_json()
        return out

    def flat(self) -> list[tuple[str, float]]:
        """(column name, value) pairs for CSV: ``output_0 … output_{n-1}`` (or the output names); several outputs
        give ``<name>_<i>``."""
        if self.outputs is None:
            return []
        if len(self.outputs) == 1:
            values = next(iter(self.outputs.values()))
            names = self.output_names if self.output_names is not None and len(self.output_names) == len(values) \
                else [f"output_{i}" for i in range(len(values))]
            return list(zip(names, values))
        pairs: list[tuple[str, float]] = []
        for key, vs in self.outputs.items():
            pairs += [(key if len(vs) == 1 else f"{key}_{i}", v) for i, v in enumerate(vs)]
        return pairs

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.path}: FAILED {self.error}"
        if self.task == "classify" and self.classes:
            return f"{self.path}: " + ", ".join(str(c) for c in self.classes)
        return f"{self.path}: " + ", ".join(f"{k}={v:.6g}" for k, v in self.flat())


def _round(v: float) -> float:
    return float(f"{v:.7g}")  # float32 precision: 7 significant digits keep model(x) within 1e-6 relative


# --- outputs of a batch --------------------------------------------------------------------------------------------------------


def named_outputs(outputs: Outputs, n: int) -> list[tuple[str, torch.Tensor]]:
    """The model's outputs for a batch of ``n`` as ``(name, N × k float32 CPU tensor)`` pairs.

    A tensor is ``"output"``; a tuple/list gives ``output_0``, ``output_1`` … (nested tuples ``output_1_0`` …, e.g.
    an LSTM's ``(out, (h, c))``); a dict keeps its keys. An output whose batch axis is second (an RNN's ``h_n`` of
    ``layers × N × H``) is transposed; one without a batch axis is refused.
    """
    pairs: list[tuple[str, torch.Tensor]] = []

    def add(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            t = value.detach()
            if t.dim() == 0 or (t.shape[0] != n and not (t.dim() >= 2 and t.shape[1] == n)):
                raise PreprocessError.build(
                    f"model output {name}", received=f"shape {tuple(t.shape)} for a batch of {n}",
                    expected="one value or vector per example (batch on the first axis)")
            if t.shape[0] != n:
                t = t.transpose(0, 1)
            pairs.append((name, t.float().reshape(n, -1).cpu()))
        elif isinstance(value, (tuple, list)):
            for i, v in enumerate(value):
                add(f"{name}_{i}", v)
        elif isinstance(value, dict):
            for k, v in value.items():
                add(str(k), v)
        elif value is None:
            return
        else:
            raise PreprocessError.build(f"model output {name}", received=type(value).__name__,
                                        expected="tensors (or tuples/dicts of tensors)")

    if isinstance(outputs, torch.Tensor):
        add("output", outputs)
    elif isinstance(outputs, dict):
        for k, v in outputs.items():
            add(str(k), v)
    elif isinstance(outputs, (tuple, list)):
        for i, v in enumerate(outputs):
            add(f"output_{i}", v)
    else:
        add("output", outputs)
    if not pairs:
        raise PreprocessError.build("model outputs", received="no tensors", expected="at least one output tensor")
    return pairs


# --- the run ------------------------------------------------------------------------------------------------------------------


def _model_name(architecture: str) -> str:
    """``"my_model.py:MyModel"`` → ``"MyModel"``; ``"timm:resnet18"`` → ``"resnet18"``."""
    tail = architecture.rsplit(":", 1)[-1]
    return tail.rsplit(".", 1)[-1] or architecture


@dataclass
class _Prepared:
    source: TensorSource
    backend: Backend | nn.Module
    task: str
    labels: list[str] | None
    output_names: list[str] | None
    top_k: int
    mode: str
    batch_size: int
    progress: bool
    threshold: float


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PreprocessError.build(what, received=repr(value), expected="an integer >= 1")
    return value


def prepare_tensors(model: Model | nn.Module, inputs: Any, *, batch_size: int = 256, top_k: int = 5,
                    task: str | None = None, labels: Sequence[str] | str | os.PathLike[str] | None = None,
                    columns: Sequence[str] | None = None, allow_nan: bool = False,
                    output_names: Sequence[str] | None = None, progress: bool = False, mode: str | None = None,
                    threshold: float = 0.5, stdin: Any = None) -> _Prepared:
    """Validate everything and open the inputs (see :func:`predict_tensors`); nothing runs the model yet."""
    from pthkit.data.tables import open_inputs

    handle = _handle(model)
    _check_int(batch_size, "batch_size")
    _check_int(top_k, "top_k")
    if task is not None and task not in _TASKS:
        raise PreprocessError.build("task", received=repr(task), expected=" | ".join(_TASKS))
    if mode is not None and mode not in _MODES:
        raise PreprocessError.build("mode", received=repr(mode), expected=" | ".join(_MODES))
    names = None
    if labels is not None:
        if isinstance(labels, (str, os.PathLike)):
            from pthkit.data.labels import read_labels

            names = read_labels(labels)
        else:
            names = [str(n) for n in labels]
    chosen = task or handle.task
    if chosen == "raw" and names is not None:
        chosen = "classify"  # labels imply classification (as --labels does on the CLI)
    if output_names is not None and chosen == "classify":
        raise PreprocessError.build("output names", received="--output-names with --task classify",
                                    expected="--task regress or raw (classes are named by --labels)")
    if handle.input_spec.kind == "image":
        from pthkit.data.tables import _fit

        _fit((1,), handle.input_spec, where=_first_name(inputs), what="inputs",
             model_name=_model_name(handle.architecture))  # raises: a table given to an image model
    source = open_inputs(inputs, spec=handle.input_spec, model_name=_model_name(handle.architecture),
                         columns=columns, allow_nan=allow_nan, stdin=stdin)
    runner: Backend | nn.Module
    if handle.runner is not None:
        runner = handle.runner  # type: ignore[assignment]
    elif handle.module is not None:
        from pthkit.engine import TorchBackend

        runner = TorchBackend(handle.module, channels_last=False, owned=handle.source.kind != "module")
    else:
        raise PreprocessError.build("model", received=f"{handle.architecture} without a module or runner",
                                    expected="a loaded model")
    return _Prepared(source=source, backend=runner, task=chosen, labels=names,
                     output_names=list(output_names) if output_names is not None else
                     (list(handle.output_names) if handle.output_names else None),
                     top_k=top_k, mode=mode or "softmax", batch_size=batch_size, progress=progress,
                     threshold=threshold)


def _first_name(inputs: Any) -> str:
    if isinstance(inputs, (str, os.PathLike)):
        return str(inputs)
    if isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], (str, os.PathLike)):
        return str(inputs[0])
    return "inputs"


def _handle(model: Model | nn.Module) -> Model:
    from torch import nn

    if isinstance(model, nn.Module):
        from pthkit.api import open_module

        return open_module(model)
    return model


def predict_tensors(model: Model | nn.Module, inputs: Any, *, batch_size: int = 256, top_k: int = 5,
                    task: str | None = None, labels: Sequence[str] | str | os.PathLike[str] | None = None,
                    columns: Sequence[str] | None = None, allow_nan: bool = False,
                    output_names: Sequence[str] | None = None, progress: bool = False, mode: str | None = None,
                    threshold: float = 0.5, stdin: Any = None) -> Iterator[TensorPrediction]:
    """Predict on arrays/tables with a non-image model: one :class:`TensorPrediction` per example, in order.

    Args:
        model: a :class:`pthkit.model.Model` (``pthkit.open``) or an ``nn.Module``.
        inputs: a path (``.npy .npz .safetensors .pt .csv .tsv .parquet .jsonl``), ``-`` (CSV on stdin), a numpy
            array, a torch tensor, a list of rows, a DataFrame, or a list of paths.
        task: ``"raw"`` / ``"regress"`` / ``"classify"``; ``None``: the model's (``classify`` when labels are given).
        labels: class names (list or file) for ``classify``.
        columns: table columns (or array names of ``.npz`` …) to use as inputs, in this order.
        allow_nan: feed NaN/empty cells to the model instead of refusing them.
        output_names: names of the output values (``regress``; one name per value of a single output).
        mode: ``classify`` scores: ``"softmax"`` (default), ``"sigmoid"`` (every class ≥ ``threshold``), ``"logits"``.

    Everything is checked before this returns (arguments, files, columns, width, first block's numbers); rows
    streamed later get the same checks (a bad cell stops the run with a one-line error naming row and column).

    Raises:
        PreprocessError, DatasetError, InputNotFoundError (see :func:`pthkit.data.tables.open_input`).
    """
    prepared = prepare_tensors(model, inputs, batch_size=batch_size, top_k=top_k, task=task, labels=labels,
                               columns=columns, allow_nan=allow_nan, output_names=output_names, progress=progress,
                               mode=mode, threshold=threshold, stdin=stdin)
    return _rows(prepared)


def _rows(p: _Prepared) -> Iterator[TensorPrediction]:
    from pthkit.engine import Engine

    engine = Engine(p.backend, batch_size=p.batch_size, progress=p.progress, unit="rows")
    source = p.source
    names_checked = False
    labels = p.labels
    for batch, out in engine.run(source):
        failed = [TensorPrediction(path=source.name(i), index=i, mode=p.mode, error=err, task=p.task)
                  for i, err in batch.failed]
        made: list[TensorPrediction] = []
        if out is not None:
            pairs = named_outputs(out, len(batch.indices))
            if not names_checked:
                labels = _check_names(p, pairs, labels)
                names_checked = True
            with _gc_paused():
                made = _batch_rows(p, source, batch.indices, pairs, labels)
        if failed:  # in input order among the batch's rows (tables never fail per row; other sources may)
            made = sorted(made + failed, key=lambda r: r.index)
        yield from made


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a batch's rows are built: thousands of small acyclic containers,
    which trigger a collection over every live object every 700 allocations (measured: Model.predict on a table 4x
    slower). Reference counting frees them as usual; the collector is left as it was found."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _check_names(p: _Prepared, pairs: list[tuple[str, torch.Tensor]],
                 labels: list[str] | None) -> list[str] | None:
    width = pairs[0][1].shape[1]
    if p.output_names is not None and (len(pairs) != 1 or len(p.output_names) != width):
        got = ", ".join(f"{k} ({t.shape[1]} values)" for k, t in pairs)
        raise PreprocessError.build("--output-names", received=f"{len(p.output_names)} names for outputs {got}",
                                    expected="one name per value of the model's single output")
    if p.task == "classify":
        from pthkit.data.labels import resolve_label_names

        names, _ = resolve_label_names(width, labels=labels)
        return names
    return labels


def _batch_rows(p: _Prepared, source: TensorSource, indices: list[int], pairs: list[tuple[str, torch.Tensor]],
                labels: list[str] | None) -> list[TensorPrediction]:
    # numpy's tolist, not torch's: torch's costs ~4 µs a row here, most of Model.predict's time on a big table
    if p.task == "classify":
        logits = pairs[0][1]
        if p.mode == "sigmoid":
            probs = torch.sigmoid(logits)
        elif p.mode == "softmax":
            probs = torch.softmax(logits, dim=1)
        else:
            probs = logits
        k = min(p.top_k, logits.shape[1])
        vals, idx = probs.topk(k, dim=1)
        raw = logits.numpy().copy()  # rows keep views of this (not of torch's buffer: see predict_arrays)
        vals_l, idx_l, probs_np = vals.numpy().tolist(), idx.numpy().tolist(), probs.numpy()
        rows: list[TensorPrediction] = []
        for r, i in enumerate(indices):
            if p.mode == "sigmoid":
                over = sorted(((float(v), int(j)) for j, v in enumerate(probs_np[r]) if v >= p.threshold),
                              reverse=True)
                classes = [ClassScore(j, _label(labels, j), v) for v, j in over]
            else:
                classes = [ClassScore(j, _label(labels, j), v) for v, j in zip(vals_l[r], idx_l[r])]
            rows.append(TensorPrediction(path=source.name(i), index=i, mode=p.mode, classes=classes,
                                         raw_logits=raw[r], task="classify",
                                         logits=raw[r].tolist() if p.mode == "logits" else None))
        return rows
    arrays = [(k, t.numpy().copy()) for k, t in pairs]  # copies: rows keep views (see predict_arrays)
    lists = [(k, a.tolist()) for k, a in arrays]
    first = arrays[0][1]
    task, names = p.task, p.output_names
    return [TensorPrediction(path=source.name(i), index=i, mode="raw", task=task, output_names=names,
                             outputs={k: vs[r] for k, vs in lists}, raw_logits=first[r])
            for r, i in enumerate(indices)]


def _label(labels: list[str] | None, j: int) -> str | None:
    return labels[j] if labels is not None and j < len(labels) else None


# --- fast path: blocks of stacked outputs ---------------------------------------------------------------------------------------


@dataclass
class OutputBlock:
    """The outputs of consecutive examples ``start … stop - 1``, stacked: no object per row.

    ``arrays``: ``{name: n × k float32}``, named as :func:`named_outputs` names them (``"output"`` for a model
    returning one tensor). ``names()`` gives the examples' display names (``"rows.csv:17"``); writers that format
    millions of rows use :func:`pthkit.data.tables.name_runs` on ``source`` instead.
    """

    start: int
    arrays: dict[str, np.ndarray]
    source: TensorSource = field(repr=False)

    def __len__(self) -> int:
        return int(next(iter(self.arrays.values())).shape[0])

    @property
    def stop(self) -> int:
        return self.start + len(self)

    def names(self) -> list[str]:
        return [self.source.name(i) for i in range(self.start, self.stop)]


def predict_blocks(model: Model | nn.Module, inputs: Any, *, batch_size: int = 1024, block_rows: int = 65536,
                   columns: Sequence[str] | None = None, allow_nan: bool = False, progress: bool = False,
                   stdin: Any = None) -> Iterator[OutputBlock]:
    """The batch path of :meth:`pthkit.model.Model.predict` for arrays and tables: every output of the model, in
    :class:`OutputBlock` s of about ``block_rows`` consecutive examples, in input order.

    The same checks (made before this returns), the same engine and backend (``--backend``) as
    :func:`predict_tensors`, without a Python object per example: the way through a large table (``pthkit predict
    … --csv / --json / --save-outputs`` use it). ``model(x)`` per block::

        for block in predict_blocks(handle, "rows.csv"):
            block.arrays["output"]   # len(block) × k float32, examples block.start … block.stop - 1
    """
    _check_int(block_rows, "block_rows")
    p = prepare_tensors(model, inputs, batch_size=batch_size, columns=columns, allow_nan=allow_nan,
                        progress=progress, task="raw", stdin=stdin)
    return _blocks(p, block_rows)


def _blocks(p: _Prepared, block_rows: int) -> Iterator[OutputBlock]:
    from pthkit.engine import Engine

    engine = Engine(p.backend, batch_size=p.batch_size, progress=p.progress, unit="rows")
    parts: dict[str, list[np.ndarray]] = {}
    start = have = 0

    def flush() -> OutputBlock:
        nonlocal start, have
        block = OutputBlock(start=start, arrays={k: np.concatenate(v) for k, v in parts.items()}, source=p.source)
        parts.clear()
        start, have = start + have, 0
        return block

    for batch, out in engine.run(p.source):
        if batch.failed:  # table and array sources never fail per row; a source that does is not for this path
            i, err = batch.failed[0]
            raise PreprocessError.build(p.source.name(i), received=err, expected="a readable example")
        if out is None or not batch.indices:
            continue
        if have and batch.indices[0] != start + have:
            yield flush()
        if not have:
            start = batch.indices[0]
        for name, t in named_outputs(out, len(batch.indices)):
            # a copy: torch's own output buffers, held across batches, fragment the heap (measured: +200 MB RSS
            # for 1,000 batches of 1024 × 2 outputs held, against +8 MB for the copies)
            parts.setdefault(name, []).append(t.numpy().copy())
        have += len(batch.indices)
        if have >= block_rows:
            yield flush()
    if have:
        yield flush()


def predict_arrays(model: Model | nn.Module, inputs: Any, *, batch_size: int = 1024,
                   columns: Sequence[str] | None = None, allow_nan: bool = False, progress: bool = False,
                   stdin: Any = None) -> dict[str, np.ndarray]:
    """Every output of the model for every example, stacked: ``{name: N × k float32 array}`` (no per-row objects).

    :func:`predict_blocks`, concatenated.
    """
    blocks = list(predict_blocks(model, inputs, batch_size=batch_size, columns=columns, allow_nan=allow_nan,
                                 progress=progress, stdin=stdin))
    if not blocks:
        return {}
    return {k: np.concatenate([b.arrays[k] for b in blocks]) for k in blocks[0].arrays}


# --- writing ------------------------------------------------------------------------------------------------------------------


class OutputCollector:
    """Collect the outputs of prediction rows as they stream by (no row objects kept), then :meth:`save` them."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".npy", ".safetensors"):
            raise PreprocessError.build("--save-outputs", received=repr(str(path)),
                                        expected="a file name ending in .npy or .safetensors")
        self.parts: dict[str, list[np.ndarray]] = {}
        self.count = 0

    def add(self, p: Prediction) -> None:
        if not p.ok:
            return
        outputs = getattr(p, "outputs", None)
        if outputs:
            for k, vs in outputs.items():
                self.parts.setdefault(k, []).append(np.asarray(vs, dtype=np.float32))
        elif p.raw_logits is not None:
            self.parts.setdefault("output", []).append(np.asarray(p.raw_logits, dtype=np.float32))
        self.count += 1

    def add_block(self, block: OutputBlock) -> None:
        for k, v in block.arrays.items():
            self.parts.setdefault(k, []).append(v)
        self.count += len(block)

    def save(self) -> Path:
        return save_outputs({k: np.concatenate([np.atleast_2d(a) if a.ndim == 1 else a for a in v])
                             for k, v in self.parts.items()}, self.path)


def save_outputs(arrays: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write ``{name: N × k}`` outputs to ``.npy`` (one output) or ``.safetensors`` (every output, by name)."""
    out = Path(path)
    suffix = out.suffix.lower()
    if suffix not in (".npy", ".safetensors"):
        raise PreprocessError.build("--save-outputs", received=repr(str(path)),
                                    expected="a file name ending in .npy or .safetensors")
    if not arrays:
        raise PreprocessError.build("--save-outputs", received="no successful rows", expected="at least one output")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        if len(arrays) != 1:
            raise PreprocessError.build("--save-outputs", received=f"{len(arrays)} outputs ({', '.join(arrays)})",
                                        expected="one output for .npy", hint="Use FILE.safetensors to keep them all.")
        np.save(out, np.ascontiguousarray(next(iter(arrays.values())), dtype=np.float32))
        return out
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in arrays.items()}, str(out),
              metadata={"format": "pthkit-outputs"})
    return out


def csv_header(p: TensorPrediction, top_k: int) -> list[str]:
    """CSV columns for rows like ``p``: ``input, ok, error`` then ``output_0 …`` or top-k ``label/index/score``."""
    head = ["input", "ok", "error"]
    if p.task == "classify":
        for r in range(1, top_k + 1):
            head += [f"label_{r}", f"index_{r}", f"score_{r}"]
        return head
    return head + [name for name, _ in p.flat()]


def csv_row(p: TensorPrediction, width: int, top_k: int) -> list[Any]:
    """One CSV row matching :func:`csv_header` (``width``: number of output columns)."""
    row: list[Any] = [p.path, int(p.ok), p.error or ""]
    if not p.ok:
        return row + [""] * (3 * top_k if p.task == "classify" else width)
    if p.task == "classify":
        for c in p.classes[:top_k]:
            row += [c.label if c.label is not None else "", c.index, f"{c.score:.6f}"]
        return row + [""] * (3 * (top_k - len(p.classes[:top_k])))
    return row + [f"{v:.7g}" for _, v in p.flat()]
