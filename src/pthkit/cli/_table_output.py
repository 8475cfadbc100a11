"""``pthkit predict``'s output for tables, written a block of rows at a time: CSV, JSON lines, plain lines.

A million rows of ``--csv`` / ``--json`` never become a million Python objects: each
:class:`~pthkit.tasks.outputs.OutputBlock` (65,536 rows) is formatted by pyarrow's compute kernels (C++): the float32 values as the shortest text that reads back as the same
float32, the row names (``rows.csv:17``) from :func:`~pthkit.data.tables.name_runs`, joined with the literal parts
of the line. Without pyarrow the same lines are built in Python (values as ``%.7g``; slower); plain lines, read by
people, always are (values as ``%.6g``).

The text is what the per-row writers print: CSV columns ``input, ok, error, output_0 …`` (names quoted when they
need it, control characters shown as ``\\x1b`` as in all CSV output); JSON objects ``{"input", "path", "ok",
"outputs"}`` with ``outputs`` a list, ``{name: value}`` with output names, ``{output: [values]}`` for several outputs
(non-finite values as Python's ``json`` writes them: ``NaN``, ``Infinity``); plain lines ``rows.csv:17:
output_0=…, output_1=…``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from pthkit.cli._output import dumps
from pthkit.cli._safe_text import safe_text
from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from pathlib import Path

    from pthkit.model import Model
    from pthkit.tasks.outputs import OutputBlock

__all__ = ["BlockWriter", "Format", "output_columns", "predict_table_blocks"]

Format = Literal["csv", "json", "text"]
_CELLS_PER_CHUNK = 1 << 20  # values formatted per pyarrow call: bounds the text held at once, whatever the width
_NEEDS_QUOTES = frozenset(',"\r\n')


def output_columns(arrays: dict[str, np.ndarray], output_names: Sequence[str] | None) -> list[str]:
    """Column names of a row's values, as :meth:`~pthkit.tasks.outputs.TensorPrediction.flat` names them:
    ``output_0 …`` (or ``output_names``) for one output, ``<name>`` / ``<name>_<i>`` for several.

    Raises:
        PreprocessError: ``output_names`` that do not name the single output's values one by one.
    """
    widths = {k: int(v.shape[1]) for k, v in arrays.items()}
    if output_names is not None:
        if len(widths) != 1 or len(output_names) != next(iter(widths.values())):
            got = ", ".join(f"{k} ({w} values)" for k, w in widths.items())
            raise PreprocessError.build("--output-names", received=f"{len(output_names)} names for outputs {got}",
                                        expected="one name per value of the model's single output")
        return list(output_names)
    if len(widths) == 1:
        return [f"output_{i}" for i in range(next(iter(widths.values())))]
    return [k if w == 1 else f"{k}_{i}" for k, w in widths.items() for i in range(w)]


class BlockWriter:
    """Writes :class:`~pthkit.tasks.outputs.OutputBlock` s to ``stream`` as ``fmt`` (see the module docstring)."""

    def __init__(self, stream: IO[str], fmt: Format, output_names: Sequence[str] | None = None) -> None:
        self.stream = stream
        self.fmt = fmt
        self.output_names = list(output_names) if output_names is not None else None
        self.rows = 0
        self._template: list[Any] | None = None  # literal strings and (output, column) references, in line order
        # pyarrow's UTF-8 text goes straight to the byte stream underneath when there is one (no decode/encode)
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        self._bytes: Any = getattr(stream, "buffer", None) if encoding == "utf8" else None
        try:
            import pyarrow  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            self._arrow = False
        else:
            self._arrow = fmt != "text"  # lines for people: 6 significant digits, which pyarrow cannot write

    def write(self, block: OutputBlock) -> None:
        if self._template is None:
            self._template = self._make_template(block.arrays)
        from pthkit.data.tables import name_runs

        runs = name_runs(block.source, block.start, block.stop)
        if runs is None:  # a source that cannot describe its names: one run per row
            runs = [(name, 0, "", 1) for name in block.names()]
            plain = True
        else:
            plain = False
        width = sum(int(a.shape[1]) for a in block.arrays.values())
        step = max(1, _CELLS_PER_CHUNK // max(1, width))
        pos = 0
        for prefix, first, suffix, count in runs:
            for lo in range(0, count, step):
                n = min(step, count - lo)
                part = {k: v[pos + lo:pos + lo + n] for k, v in block.arrays.items()}
                name = (prefix, None if plain else first + lo, suffix)
                self._emit(self._lines(name, n, part))
            pos += count
        self.rows += len(block)

    # --- the line template -------------------------------------------------------------------------------------------

    def _make_template(self, arrays: dict[str, np.ndarray]) -> list[Any]:
        columns = output_columns(arrays, self.output_names)
        refs = [(k, j) for k, v in arrays.items() for j in range(int(v.shape[1]))]
        parts: list[Any] = []
        if self.fmt == "csv":
            head = io.StringIO()
            csv.writer(head, lineterminator="\n").writerow(["input", "ok", "error", *columns])
            self.stream.write(safe_text(head.getvalue()))
            parts = ["NAME", ",1,,"]
            for i, ref in enumerate(refs):
                parts += [ref] if i == 0 else [",", ref]
        elif self.fmt == "text":
            parts = ["NAME", ": "]
            for i, (ref, col) in enumerate(zip(refs, columns)):
                parts += [("" if i == 0 else ", ") + safe_text(col, newlines=False) + "=", ref]
        else:
            parts = ['{"input": ', "NAME", ', "path": ', "NAME", ', "ok": true, "outputs": ']
            if len(arrays) == 1 and self.output_names is not None:
                for i, (ref, col) in enumerate(zip(refs, columns)):
                    parts += [("{" if i == 0 else ", ") + dumps(col, indent=None) + ": ", ref]
                parts.append("}")
            elif len(arrays) == 1:
                for i, ref in enumerate(refs):
                    parts += ["[" if i == 0 else ", ", ref]
                parts.append("]")
            else:
                for i, key in enumerate(arrays):
                    width = int(arrays[key].shape[1])
                    parts.append(("{" if i == 0 else ", ") + dumps(key, indent=None) + ": [")
                    for j in range(width):
                        parts += [(key, j)] if j == 0 else [", ", (key, j)]
                    parts.append("]")
                parts.append("}")
            parts.append("}")
        parts.append("\n")
        return parts

    def _name_parts(self, prefix: str, suffix: str) -> tuple[str, str]:
        """The literal text before and after a row's number, escaped for the format."""
        if self.fmt == "json":
            return dumps(prefix, indent=None)[:-1], dumps(suffix, indent=None)[1:]
        if self.fmt == "text":
            return safe_text(prefix, newlines=False), safe_text(suffix, newlines=False)
        prefix, suffix = safe_text(prefix), safe_text(suffix)
        if _NEEDS_QUOTES & set(prefix + suffix):
            return '"' + prefix.replace('"', '""'), suffix.replace('"', '""') + '"'
        return prefix, suffix

    def _emit(self, text: str | memoryview) -> None:
        if isinstance(text, str):
            self.stream.write(text)
        elif self._bytes is not None:
            self.stream.flush()  # the header, written as text, goes first
            self._bytes.write(text)
        else:
            self.stream.write(bytes(text).decode("utf-8"))

    def _lines(self, name: tuple[str, int | None, str], n: int,
               arrays: dict[str, np.ndarray]) -> str | memoryview:
        prefix, first, suffix = name
        before, after = self._name_parts(prefix, suffix)
        assert self._template is not None
        if self._arrow:
            return self._arrow_lines(before, first, after, n, arrays)
        return self._python_lines(before, first, after, n, arrays)

    # --- pyarrow: every row of a chunk at once ------------------------------------------------------------------------

    def _arrow_lines(self, before: str, first: int | None, after: str, n: int,
                     arrays: dict[str, np.ndarray]) -> str | memoryview:
        import pyarrow as pa
        import pyarrow.compute as pc  # type: ignore[import-untyped]

        assert self._template is not None
        number: Any = ""
        if first is not None:
            number = pc.cast(_arrow_array(pa, np.arange(first, first + n, dtype=np.int64)), pa.string())
        texts: dict[tuple[str, int], Any] = {}
        args: list[Any] = []
        for piece in self._template:
            if piece == "NAME":
                args += [before, number, after]
            elif isinstance(piece, tuple):
                if piece not in texts:
                    texts[piece] = self._arrow_values(pa, pc, arrays[piece[0]][:, piece[1]])
                args.append(texts[piece])
            else:
                args.append(piece)
        merged: list[Any] = []
        for a in args:  # adjacent literals joined: fewer arguments to the kernel
            if isinstance(a, str) and merged and isinstance(merged[-1], str):
                merged[-1] += a
            elif not (isinstance(a, str) and a == ""):
                merged.append(a)
        if not any(not isinstance(a, str) for a in merged):  # no array (a row without values): one line
            return "".join(merged) * n
        args = [_arrow_text(pa, a) if isinstance(a, str) else a for a in [*merged, ""]]
        joined = pc.binary_join_element_wise(*args)
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset:joined.offset + n + 1]
        return memoryview(joined.buffers()[2])[int(offsets[0]):int(offsets[-1])]

    def _arrow_values(self, pa: Any, pc: Any, values: np.ndarray) -> Any:
        text = pc.cast(_arrow_array(pa, values.astype(np.float32)), pa.string())
        if self.fmt != "json":
            return text
        if not np.isfinite(values).all():  # JSON as Python's json module writes them
            text = pc.replace_substring(pc.replace_substring(text, "nan", "NaN"), "inf", "Infinity")
        if not (values == np.trunc(values)).any():
            return text
        integral = pc.match_substring_regex(text, r"^-?[0-9]+$")  # "3" → "3.0": a float stays a float in JSON
        dotted = pc.binary_join_element_wise(text, _arrow_text(pa, ".0"), _arrow_text(pa, ""))
        return pc.if_else(integral, dotted, text)

    # --- without pyarrow -------------------------------------------------------------------------------------------

    def _python_lines(self, before: str, first: int | None, after: str, n: int, arrays: dict[str, np.ndarray]) -> str:
        assert self._template is not None
        lists = {k: v.tolist() for k, v in arrays.items()}
        fmt = self._python_value
        out: list[str] = []
        for r in range(n):
            name = before + ("" if first is None else str(first + r)) + after
            out.append("".join(name if p == "NAME" else (fmt(lists[p[0]][r][p[1]]) if isinstance(p, tuple) else p)
                               for p in self._template))
        return "".join(out)

    def _python_value(self, v: float) -> str:
        if self.fmt == "json":
            return dumps(float(f"{v:.7g}"), indent=None)
        return f"{v:.6g}" if self.fmt == "text" else f"{v:.7g}"


def _arrow_array(pa: Any, values: np.ndarray) -> Any:
    """A pyarrow array over a 1-D numpy array's memory (``pa.array`` would import pandas, ~1 s, to check the type)."""
    values = np.ascontiguousarray(values)
    kind = pa.float32() if values.dtype == np.float32 else pa.int64()
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def _arrow_text(pa: Any, text: str) -> Any:
    """A pyarrow string scalar (``pa.scalar`` would import pandas to check the value's type)."""
    data = text.encode("utf-8")
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int32))
    return pa.Array.from_buffers(pa.string(), 1, [None, offsets, pa.py_buffer(data)])[0]


def predict_table_blocks(handle: Model, items: object, *, fmt: Format | None, save_outputs: Path | None,
                         batch_size: int, columns: list[str] | None, allow_nan: bool, output_names: list[str] | None,
                         progress: bool, stream: IO[str]) -> None:
    """``pthkit predict`` for raw/regression outputs: :func:`~pthkit.tasks.outputs.predict_blocks` to ``stream`` as
    ``fmt`` (``None``: nothing printed, ``save_outputs`` only) and to ``save_outputs``; notes on stderr."""
    from pthkit.cli._output import err_console
    from pthkit.tasks.outputs import OutputCollector, predict_blocks

    collector = OutputCollector(save_outputs) if save_outputs is not None else None  # checks the suffix first
    from pthkit.data.tables import prefetch

    blocks = predict_blocks(handle, items, batch_size=max(batch_size, 1024), columns=columns, allow_nan=allow_nan,
                            progress=progress)
    if fmt is not None:  # the model runs one block ahead, in a thread, while this one formats and writes
        blocks = prefetch(blocks)
    writer = BlockWriter(stream, fmt, output_names) if fmt is not None else None
    total = 0
    widths = ""
    for block in blocks:
        if not total:
            output_columns(block.arrays, output_names)  # names that do not fit: refused before anything is written
            widths = ", ".join(f"{k}: {v.shape[1]} values" for k, v in block.arrays.items())
        if writer is not None:
            writer.write(block)
        if collector is not None:
            collector.add_block(block)
        total += len(block)
    stream.flush()
    if collector is not None:  # no rows: refused (save_outputs says so)
        err_console.print(f"{total} rows → {collector.save()} ({widths})", markup=False)
    elif writer is None:
        err_console.print(f"{total} rows", markup=False)
    if writer is not None:
        err_console.print(f"{total} rows, 0 failed", markup=False)
