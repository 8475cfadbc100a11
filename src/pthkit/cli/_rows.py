"""How ``pthkit predict`` prints prediction rows, whichever engine computed them.

Local ``predict`` (images and tables) and ``predict --engine ray`` feed the same printers, row by row as the rows
arrive, so the two engines print the same bytes: ``--json`` lines, ``--csv`` (its header written once the output
width is known), or, for people, the rich table of images / one line per table row. Everything that came from a file
(paths, labels, errors) is escaped before it reaches a terminal (:mod:`pthkit.cli._output`).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.table import Table

    from pthkit.tasks.outputs import TensorPrediction
    from pthkit.tasks.predict import Prediction

__all__ = ["ImageRowPrinter", "TableRowPrinter", "image_csv_header", "image_csv_row", "image_table"]


def image_csv_header(mode: str, k: int, n_logits: int) -> list[str]:
    """The ``--csv`` header of image rows: path, ok, error, then the top-k (softmax), the labels (sigmoid) or every
    logit."""
    head = ["path", "ok", "error"]
    if mode == "sigmoid":
        return head + ["labels", "indices", "scores"]
    if mode == "logits":
        return head + [f"logit_{i}" for i in range(n_logits)]
    for r in range(1, k + 1):
        head += [f"label_{r}", f"index_{r}", f"score_{r}"]
    return head


def image_csv_row(p: Prediction, mode: str, k: int, n_logits: int) -> list[Any]:
    """One image's ``--csv`` cells, as wide as :func:`image_csv_header` (a failed image has empty cells)."""
    row: list[Any] = [p.path, int(p.ok), p.error or ""]
    if not p.ok:
        width = 3 if mode == "sigmoid" else (n_logits if mode == "logits" else 3 * k)
        return row + [""] * width
    if mode == "sigmoid":
        return row + [";".join(str(c.label if c.label is not None else c.index) for c in p.classes),
                      ";".join(str(c.index) for c in p.classes), ";".join(f"{c.score:.6f}" for c in p.classes)]
    if mode == "logits":
        return row + [f"{v:.6f}" for v in (p.logits or [])]
    for c in p.classes[:k]:
        row += [c.label if c.label is not None else "", c.index, f"{c.score:.6f}"]
    return row + [""] * (3 * (k - len(p.classes[:k])))


def image_table(predictions: list[Prediction], mode: str) -> Table:
    """The human output of image rows: one line per image, its top classes (or the error)."""
    from rich.table import Table

    from pthkit.cli._output import literal

    title = {"softmax": "top classes (probability)", "sigmoid": "labels over threshold (probability)",
             "logits": "top classes (logit)"}[mode]
    table = Table(title=None, show_lines=False)
    table.add_column("image", overflow="fold")
    table.add_column(title)
    for p in predictions:
        name = literal(Path(p.path).name if p.path and not p.path.startswith("<") else p.path)
        if not p.ok:
            table.add_row(name, f"[red]failed:[/red] {literal(p.error or '')}")
            continue
        if not p.classes:
            table.add_row(name, "[dim](no label over the threshold)[/dim]")
            continue
        cells = []
        for c in p.classes:
            label = c.label if c.label is not None else f"class {c.index}"
            value = f"{c.score:.1%}" if mode != "logits" else f"{c.score:.3f}"
            cells.append(f"{literal(label)} [dim]{value}[/dim]")
        table.add_row(name, ", ".join(cells))
    return table


class ImageRowPrinter:
    """Image rows to stdout as they arrive: ``--json`` lines (flushed each), ``--csv`` (rows wait for the header
    until the logit width is known), or nothing until :meth:`close`, which prints the table of every row."""

    def __init__(self, *, mode: str, top_k: int, json_out: bool, csv_out: bool,
                 stream: TextIO | None = None) -> None:
        from pthkit.cli._output import safe_stream

        self.mode, self.top_k, self.json_out = mode, top_k, json_out
        self.stream = stream if stream is not None else sys.stdout
        self.writer = csv.writer(safe_stream(self.stream), lineterminator="\n") if csv_out else None
        self.pending: list[Prediction] = []  # CSV rows waiting for the header
        self.n_logits: int | None = None if mode == "logits" else 0
        self.header_written = False
        self.shown: list[Prediction] = []  # the human table's rows

    def add(self, p: Prediction) -> None:
        from pthkit.cli._output import dumps

        if self.json_out:
            self.stream.write(dumps(p.to_dict(), indent=None) + "\n")
            self.stream.flush()
        elif self.writer is not None:
            self.pending.append(p)
            if self.n_logits is None and p.ok:
                self.n_logits = len(p.logits or [])
            if self.n_logits is not None:
                self._flush_csv(self.n_logits)
        else:
            self.shown.append(p)

    def _flush_csv(self, n_logits: int) -> None:
        assert self.writer is not None
        if not self.header_written:
            self.writer.writerow(image_csv_header(self.mode, self.top_k, n_logits))
            self.header_written = True
        self.writer.writerows(image_csv_row(q, self.mode, self.top_k, n_logits) for q in self.pending)
        self.pending.clear()

    def close(self) -> None:
        """Write what waits (every image failed in logits mode: a header without logit columns), or the table."""
        if self.writer is not None and self.pending:
            self._flush_csv(0)
        self.stream.flush()
        if not self.json_out and self.writer is None:
            from pthkit.cli._output import console

            console.print(image_table(self.shown, self.mode))


class TableRowPrinter:
    """Table-model rows (:class:`~pthkit.tasks.outputs.TensorPrediction`) to stdout as they arrive: ``--json``
    lines, ``--csv`` (the header once the first good row gives the output width), or one escaped line per row."""

    def __init__(self, *, top_k: int, json_out: bool, csv_out: bool, stream: TextIO | None = None) -> None:
        from pthkit.cli._output import safe_stream

        self.top_k, self.json_out = top_k, json_out
        self.stream = stream if stream is not None else sys.stdout
        self.writer = csv.writer(safe_stream(self.stream), lineterminator="\n") if csv_out else None
        self.width: int | None = None
        self.pending: list[TensorPrediction] = []

    def add(self, p: TensorPrediction) -> None:
        from pthkit.cli._output import dumps
        from pthkit.cli._safe_text import safe_text
        from pthkit.tasks.outputs import csv_header, csv_row

        if self.json_out:
            self.stream.write(dumps(p.to_dict(), indent=None) + "\n")
        elif self.writer is not None:
            if self.width is None:
                self.pending.append(p)
                if not p.ok:
                    return
                self.width = len(p.flat())
                self.writer.writerow(csv_header(p, self.top_k))
                self.writer.writerows(csv_row(q, self.width, self.top_k) for q in self.pending)
                self.pending.clear()
            else:
                self.writer.writerow(csv_row(p, self.width, self.top_k))
        else:
            self.stream.write(safe_text(p) + "\n")  # human lines: names and errors from the data, escaped

    def close(self) -> None:
        """Every row failed: the rows with a header of their three columns."""
        from pthkit.tasks.outputs import csv_row

        if self.writer is not None and self.pending:
            self.writer.writerow(["input", "ok", "error"])
            self.writer.writerows(csv_row(q, 0, self.top_k) for q in self.pending)
        self.stream.flush()
