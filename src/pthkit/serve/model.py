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

    def resolved(self, model: "Model") -> "ServePlan":
        """The plan a worker follows to open the same model without identifying it again."""
        return ServePlan(
            source=self.source, arch=model.architecture, arch_kwargs=dict(model.arch_kwargs) or self.arch_kwargs,
            trust=self.trust, device=self.device, backend=self.backend, labels=model.labels,
            key_map=dict(model.key_map) or None, preprocess=model.preprocess,
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

    def __init__(self, model: "Model", plan: ServePlan) -> None:
        self.model = model
        self.plan = plan.resolved(model)

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
        return data

    # --- running it -------------------------------------------------------------------------------------------------

    def predict_images(self, paths: Sequence[str], top_k: int) -> list["Prediction"]:
        """Predict image files in one batch (the ``pthkit predict`` path: decoding, batch normalization, top-k)."""
        return list(self.model.predict([os.fspath(p) for p in paths], batch_size=max(1, len(paths)), top_k=top_k))

    def predict_rows(self, rows: Sequence[Sequence[float]], top_k: int) -> list[dict[str, Any]]:
        """Predict feature rows in one batch; one ``pthkit predict --json`` row each."""
        import numpy as np

        array = np.asarray(rows, dtype=np.float32)
        try:
            predictions = self.model.predict(array, batch_size=max(1, len(array)), top_k=top_k)
        except ModuleNotFoundError as err:
            if err.name not in _PENDING_MODULES:
                raise
            return _forward_rows(self.model, array, top_k)
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
    """Open the model of ``plan`` with :func:`pthkit.open` (refusing unsafe files unless ``plan.trust``).

    ``plan.preprocess`` (set in a worker's plan) replaces the resolved pipeline, so the worker runs the pipeline the
    main process resolved and described.
    """
    import pthkit

    if plan.source == "":
        raise PreprocessError.build("model", received="an empty path", expected="a weights file or bundle folder")
    try:
        model = pthkit.open(
            Path(plan.source), arch=plan.arch, arch_kwargs=plan.arch_kwargs, trust=plan.trust, device=plan.device,
            key_map=plan.key_map, labels=plan.labels, backend=plan.backend, check=check,
        )
    except ModuleNotFoundError as err:
        if err.name not in _PENDING_MODULES:
            raise
        model = _open_transitional(plan)
    if plan.preprocess is not None and model.is_image_model:
        model.preprocess = plan.preprocess
    return ServedModel(model, plan)


# --- transitional: until the modules pthkit.open imports (input spec, export openers) are committed -------------------
# Those land with issues 11 and 12; until then a weights file is opened with load_model + resolve_preprocess, and the
# input spec is read from the first layer here. Remove this block when ``pthkit.open`` imports cleanly.

_PENDING_MODULES = frozenset({"pthkit.export", "pthkit.export.openers", "pthkit.input_spec", "pthkit.tasks.outputs"})


@dataclass(frozen=True)
class _FirstLayerSpec:
    kind: str
    shape: tuple[int | None, ...]
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "shape": list(self.shape), "source": self.source}

    def describe(self) -> str:
        return f"{self.kind} {tuple(self.shape)} ({self.source})"


def _first_layer_spec(module: Any) -> _FirstLayerSpec:
    from torch import nn

    for name, layer in module.named_modules():
        if isinstance(layer, nn.Conv2d):
            return _FirstLayerSpec("image", (layer.in_channels, None, None), f"first layer {name}: Conv2d")
        if isinstance(layer, nn.Linear):
            return _FirstLayerSpec("features", (layer.in_features,), f"first layer {name}: Linear({layer.in_features})")
    return _FirstLayerSpec("tensor", (), "no Conv2d/Linear layer found")


def _open_transitional(plan: ServePlan) -> "Model":
    from pthkit.bundle import is_bundle
    from pthkit.model import Model, ModelSource

    if is_bundle(plan.source):
        from pthkit.bundle import load_bundle

        module, preprocess, config = load_bundle(plan.source, device=plan.device, arch=plan.arch, trust=plan.trust)
        arch = str((config.get("pthkit") or {}).get("arch") or config.get("architecture"))
        spec = _first_layer_spec(module)
        return Model(module=module, architecture=arch, task="classify" if spec.kind == "image" else "raw",
                     input_spec=spec, preprocess=preprocess if spec.kind == "image" else None,  # type: ignore[arg-type]
                     labels=plan.labels or getattr(preprocess, "label_names", None),
                     source=ModelSource("bundle", Path(plan.source)), config=config,
                     evidence=[f"bundle {Path(plan.source).name}: {arch}"])
    from pthkit.loading import load_model

    module, report = load_model(plan.source, plan.arch, arch_kwargs=plan.arch_kwargs, device=plan.device,
                                key_map=plan.key_map, trust=plan.trust)
    spec = _first_layer_spec(module)
    how = (f"identified as {report.architecture}" if plan.arch is None else f"architecture {report.architecture} (given)")
    import torch

    model = Model(module=module, architecture=report.architecture, task="raw", input_spec=spec,  # type: ignore[arg-type]
                  preprocess=None, labels=plan.labels, source=ModelSource("weights", Path(plan.source)),
                  report=report, evidence=[how], arch_kwargs=dict(report.kwargs), key_map=dict(report.remapped),
                  device=torch.device(report.device))
    if spec.kind == "image":
        from pthkit.preprocess import resolve_preprocess

        overrides = {"label_names": list(plan.labels)} if plan.labels else None
        model.preprocess = resolve_preprocess(module, arch=report.architecture, checkpoint=report.checkpoint,
                                              overrides=overrides)
        model.task = "classify"
        if model.labels is None and model.preprocess.label_names:
            model.labels = list(model.preprocess.label_names)
    return model


def _forward_rows(model: "Model", array: Any, top_k: int) -> list[dict[str, Any]]:
    """Rows through the module (until ``pthkit.tasks.outputs`` is committed): raw outputs per row."""
    import torch

    assert model.module is not None
    with torch.inference_mode():
        out = model.module(torch.as_tensor(array, device=model.device))
    if isinstance(out, (tuple, list)):
        out = out[0]
    values = out.float().reshape(out.shape[0], -1).cpu()
    return [{"ok": True, "outputs": {"output": [round(float(v), 6) for v in row]}} for row in values]
