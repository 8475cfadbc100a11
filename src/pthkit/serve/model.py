"""The model a server serves: opened once in the main process (to refuse a bad file before anything listens and to
describe it on ``/info``), re-opened in each inference worker from a picklable :class:`ServePlan`.

Everything goes through :func:`pthkit.open` and :meth:`pthkit.model.Model.predict`, so the server decodes,
preprocesses and scores exactly as ``pthkit predict`` does. The worker re-opens with the architecture, constructor
arguments and key map the main process settled on (no second identification) and reuses the main process's
:class:`~pthkit.preprocess.Preprocess` object, so both processes describe and run the same pipeline.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from pthkit.model import Model
    from pthkit.preprocess.types import Preprocess
    from pthkit.tasks.predict import Prediction

__all__ = ["ServePlan", "ServedModel", "open_served", "ImageResult", "RowsResult"]


@dataclass(frozen=True)
class ServePlan:
    """How to open the model: what the user asked for, then what the main process resolved (sent to the workers)."""

    source: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    trust: bool = False
    device: str = "auto"
    backend: str = "torch"
    labels: list[str] | None = None
    key_map: dict[str, str] | None = None
    preprocess: "Preprocess | None" = None
    threads: int | None = None
    threads_reason: str = ""

    def resolved(self, model: "Model") -> "ServePlan":
        """The plan a worker follows to open the same model without identifying it again."""
        return ServePlan(
            source=self.source, arch=model.architecture, arch_kwargs=dict(model.arch_kwargs) or self.arch_kwargs,
            trust=self.trust, device=self.device, backend=self.backend, labels=model.labels,
            key_map=dict(model.key_map) or None, preprocess=model.preprocess, threads=self.threads,
            threads_reason=self.threads_reason,
        )


@dataclass
class ImageResult:
    """One image's answer: the ``pthkit predict --json`` row, or an error with its HTTP status."""

    row: dict[str, Any] | None = None
    error: str | None = None
    status: int = 200


@dataclass
class RowsResult:
    """One request's rows: one ``pthkit predict --json`` row each."""

    rows: list[dict[str, Any]] = field(default_factory=list)


class ServedModel:
    """A :class:`~pthkit.model.Model` seen from the server: what it consumes, how to describe it, how to run it."""

    def __init__(self, model: "Model", plan: ServePlan, scan: dict[str, Any] | None = None) -> None:
        self.model = model
        self.plan = plan.resolved(model)
        self.scan = scan

    # --- what it is -------------------------------------------------------------------------------------------------

    @property
    def architecture(self) -> str:
        return self.model.architecture

    @property
    def is_image_model(self) -> bool:
        return bool(self.model.is_image_model)

    @property
    def row_width(self) -> int | None:
        """Features per row for a model of feature vectors (``None``: images, or any width)."""
        spec = self.model.input_spec
        if spec.kind == "image" or not spec.shape:
            return None
        last = spec.shape[-1]
        return int(last) if isinstance(last, int) and len(spec.shape) == 1 else None

    def info(self) -> dict[str, Any]:
        """``/info``'s model part: architecture, load evidence summary, preprocessing with provenance, labels."""
        m = self.model
        data = m.to_dict()
        data["labels"] = list(m.labels) if m.labels else None
        data["describe"] = m.describe()
        if m.report is not None:
            data["load"]["headline"] = m.report.headline()
        data["scan"] = self.scan
        return data

    # --- running it -------------------------------------------------------------------------------------------------

    def predict_images(self, paths: Sequence[str], top_k: int) -> list["Prediction"]:
        """Predict image files in one batch (the ``pthkit predict`` path: decoding, batch normalization, top-k)."""
        return list(self.model.predict([os.fspath(p) for p in paths], batch_size=max(1, len(paths)), top_k=top_k))

    def predict_rows(self, rows: Sequence[Sequence[float]], top_k: int) -> list[dict[str, Any]]:
        """Predict feature rows in one batch; one ``pthkit predict --json`` row each."""
        import numpy as np

        array = np.asarray(rows, dtype=np.float32)
        predictions = self.model.predict(array, batch_size=max(1, len(array)), top_k=top_k)
        out: list[dict[str, Any]] = []
        for p in predictions:
            row = p.to_dict()
            row.pop("path", None)
            out.append(row)
        return out


def check_rows(rows: Any, width: int | None) -> tuple[list[list[float]] | None, str | None, int]:
    """Validate ``{"inputs": [[...], ...]}``: ``(rows, None, 200)`` or ``(None, error, status)``.

    400 when the value is not a non-empty list of equally long lists of finite numbers; 422 when the rows are well
    formed but do not have the width the model takes.
    """
    if not isinstance(rows, list) or not rows:
        return None, "inputs: expected a non-empty list of rows (lists of numbers)", 400
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in rows):
        rows = [rows]  # one row given flat
    out: list[list[float]] = []
    for i, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            return None, f"inputs[{i}]: expected a non-empty list of numbers, got {type(row).__name__}", 400
        values: list[float] = []
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
                return None, f"inputs[{i}][{j}]: expected a finite number, got {v!r}"[:200], 400
            values.append(float(v))
        out.append(values)
    widths = {len(r) for r in out}
    if len(widths) > 1:
        return None, f"inputs: rows of different lengths {sorted(widths)}", 400
    got = widths.pop()
    if width is not None and got != width:
        return None, f"inputs: rows have {got} values; the model's first layer takes {width} features", 422
    return out, None, 200


def open_served(plan: ServePlan, *, check: bool = True) -> ServedModel:
    """Open the model of ``plan`` with :func:`pthkit.open` (refusing malicious-looking files unless ``plan.trust``).

    ``check``: scan the file first and run :func:`pthkit.open`'s post-load check (the main process).
    """
    from pthkit.api import open as pthkit_open

    if plan.source == "":
        raise PreprocessError.build("model", received="an empty path", expected="a weights file or bundle folder")
    scan = scan_model_file(Path(plan.source), trust=plan.trust) if check else None
    model = pthkit_open(
        Path(plan.source), arch=plan.arch, arch_kwargs=plan.arch_kwargs, trust=plan.trust, device=plan.device,
        key_map=plan.key_map, labels=plan.labels, backend=plan.backend, check=check,
    )
    return ServedModel(model, plan, scan)


def open_in_worker(plan: ServePlan) -> ServedModel:
    """Re-open, in an inference worker, the model the main process opened (``plan`` is its resolved plan).

    A weights file with a known image pipeline is loaded with :func:`pthkit.loading.load_model` (architecture, key
    map and constructor arguments as resolved) and wrapped by ``pthkit.open(module)`` with the main process's
    :class:`~pthkit.preprocess.Preprocess`: no second identification and no second normalization inference, which
    would cost seconds per worker and could only give the same answer.
    """
    from pthkit.api import open as pthkit_open
    from pthkit.export.openers import is_exported

    source = Path(plan.source)
    if plan.preprocess is None or not source.is_file() or is_exported(source):  # an .onnx/.xml carries its own
        served = open_served(plan, check=False)
        return served
    from pthkit.loading import load_model

    module, report = load_model(source, plan.arch, arch_kwargs=plan.arch_kwargs, device=plan.device,
                                key_map=plan.key_map, trust=plan.trust)
    model = pthkit_open(module, arch=report.architecture, labels=plan.labels, backend=plan.backend)
    model.preprocess = plan.preprocess
    return ServedModel(model, plan)


def scan_model_file(path: Path, *, trust: bool) -> dict[str, Any] | None:
    """Scan a weights file before serving it (``pthkit scan``); refuse a malicious-looking one unless ``trust``.

    A server runs unattended and answers strangers, so it does not start on a file whose pickles name globals that
    can run code, even though the inert reader would not run them. "needs-trust" files (unknown classes, damaged
    data) go on to the normal load, which reads them inertly or refuses them with its own error; the verdict is
    shown on ``/info``. Folders (bundles, Hugging Face folders) are not scanned here (their loaders check them).
    """
    if not path.is_file():
        return None
    from pthkit.checkpoint import scan_file
    from pthkit.errors import UnsafeCheckpointError

    report = scan_file(path)
    summary = {"verdict": report.verdict, "format": report.format,
               "findings": [f.to_dict() for f in report.findings if f.severity != "info"][:20]}
    if report.verdict == "malicious-looking" and not trust:
        dangers = [f.detail for f in report.findings if f.severity == "danger"] or [f.detail for f in report.findings]
        raise UnsafeCheckpointError.build(
            f"model {path.name}", received=f"scan verdict {report.verdict}: {'; '.join(dangers[:3])}",
            expected="a weights file whose pickles reference only tensor data",
            hint="`pthkit scan FILE` shows every finding; pass --trust only for a file from a source you trust.")
    return summary
