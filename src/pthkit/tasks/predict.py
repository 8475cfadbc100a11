"""Batched prediction over images: the rows (top-k, multi-label, logits, features) built on :mod:`pthkit.engine`.

The machinery (decode pool, batch-level normalization, DataLoader workers, amp, channels_last, devices, backends)
is the engine's (:class:`pthkit.engine.Engine`, :class:`pthkit.data.images.ImageSource`); this module validates the
arguments, picks the labels and turns each batch's outputs into :class:`Prediction` rows.

Outputs: softmax top-k (default), sigmoid labels over a threshold (multi-label), raw logits, and pooled features
(the classifier's input), one :class:`Prediction` per input in input order; a failed image gives a Prediction with
``error`` set and the run goes on.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from pthkit.data.images import ImageSource
from pthkit.data.inputs import expand_inputs
from pthkit.data.labels import read_labels, resolve_label_names
from pthkit.engine import (
    Backend,
    Batch,
    Engine,
    EngineRun,
    Outputs,
    RunCounters,
    as_backend,
    first_tensor,
)
from pthkit.engine.backends import FeatureExtractor, cpu_supports_bf16
from pthkit.engine.threads import auto_decode_threads, auto_workers
from pthkit.engine.types import AMP_MODES, AmpMode
from pthkit.errors import InputNotFoundError, PreprocessError

__all__ = [
    "AmpMode",
    "ClassScore",
    "FeatureExtractor",
    "OutputMode",
    "Prediction",
    "PredictionStream",
    "auto_decode_threads",
    "auto_workers",
    "cpu_supports_bf16",
    "predict",
    "save_features",
]

OutputMode = Literal["softmax", "sigmoid", "logits"]
OUTPUT_MODES: tuple[str, ...] = ("softmax", "sigmoid", "logits")


@dataclass(frozen=True)
class ClassScore:
    """One class of a prediction: its output index, name (or ``None``) and score (probability, or logit)."""

    index: int
    label: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}

    def __str__(self) -> str:
        name = self.label if self.label is not None else f"class {self.index}"
        return f"{name} ({self.score:.3f})"


@dataclass
class Prediction:
    """What the model said about one input.

    ``classes``: the top-k classes (softmax probabilities, or logits in ``"logits"`` mode), or every class whose
    sigmoid probability reaches the threshold (``"sigmoid"`` mode), best first. ``logits`` holds the full output
    vector in ``"logits"`` mode (as a list; ``raw_logits`` keeps it as an array in every mode); ``features`` the pooled
    embedding when asked. ``error`` is set (and the rest empty)
    when the input could not be read.
    """

    path: str
    index: int
    mode: str = "softmax"
    classes: list[ClassScore] = field(default_factory=list)
    logits: list[float] | None = None
    features: np.ndarray | None = None
    error: str | None = None
    raw_logits: np.ndarray | None = field(default=None, repr=False)
    """The model's output vector (float32) in every mode, for checks such as ``check_predictions_sane``."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top1(self) -> ClassScore | None:
        return self.classes[0] if self.classes else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "ok": self.ok}
        if self.error is not None:
            out["error"] = self.error
            return out
        out["mode"] = self.mode
        out["classes"] = [c.to_dict() for c in self.classes]
        if self.logits is not None:
            out["logits"] = [round(v, 6) for v in self.logits]
        if self.features is not None:
            out["features_dim"] = int(self.features.shape[-1])
        return out

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.path}: FAILED {self.error}"
        return f"{self.path}: " + ", ".join(str(c) for c in self.classes)


def _check(value: object, what: str, ok: bool, expected: str) -> None:
    if not ok:
        raise PreprocessError.build(what, received=repr(value), expected=expected)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _items(inputs: object) -> list[Any]:
    """Paths (folders, globs and lists expanded) and PIL images, in the order given."""
    if isinstance(inputs, (str, os.PathLike, Image.Image)):
        inputs = [inputs]
    if not isinstance(inputs, Sequence):
        raise PreprocessError.build("inputs", received=type(inputs).__name__,
                                    expected="paths, folders, globs, @list.txt or PIL images (a list)")
    items: list[Any] = []
    for item in inputs:
        items.extend([item] if isinstance(item, Image.Image) else expand_inputs([item]))
    return items


class PredictionStream(Iterator[Prediction]):
    """The iterator :func:`predict` returns: one :class:`Prediction` per input, in input order, as batches finish.

    ``counters`` (``done``/``total``/``failed``) say how far it got; Ctrl-C raises
    :class:`pthkit.engine.RunInterrupted` ("interrupted after N of M images"). ``close()`` stops the decode pool.
    """

    def __init__(self, run: EngineRun, rows: _RowBuilder) -> None:
        self._run = run
        self._rows = rows
        self._pending: deque[Prediction] = deque()

    @property
    def counters(self) -> RunCounters:
        return self._run.counters

    @property
    def total(self) -> int:
        return self._run.counters.total

    def __iter__(self) -> PredictionStream:
        return self

    def __next__(self) -> Prediction:
        while not self._pending:
            batch, out = next(self._run)
            self._pending.extend(self._rows(batch, out))
        return self._pending.popleft()

    def close(self) -> None:
        self._run.close()


class _RowBuilder:
    """Outputs of a batch → :class:`Prediction` rows (labels resolved at the first batch, from the output width)."""

    def __init__(self, source: ImageSource, *, mode: str, top_k: int, threshold: float, features: bool,
                 labels: Sequence[str] | None, known: Sequence[str] | None) -> None:
        self.source = source
        self.mode = mode
        self.top_k = top_k
        self.threshold = threshold
        self.features = features
        self.labels = labels
        self.known = known
        self.names: list[str] | None = None
        self.resolved = False

    def __call__(self, batch: Batch, out: Outputs | None) -> list[Prediction]:
        rows: dict[int, Prediction] = {
            idx: Prediction(path=self.source.name(idx), index=idx, mode=self.mode, error=err) for idx, err in batch.failed
        }
        if out is not None:
            pooled = None
            if self.features and isinstance(out, dict):
                logits_t, pooled = out["logits"], out["features"]
            else:
                logits_t = first_tensor(out)
            logits = logits_t.float().flatten(1).cpu()
            if not self.resolved:
                self.names, _ = resolve_label_names(logits.shape[1], labels=self.labels, known=self.known)
                self.resolved = True
            k = min(self.top_k, logits.shape[1])
            pooled_np = pooled.float().cpu().numpy() if pooled is not None else None
            rows.update(_interpret(logits, batch.indices, self.source, self.names, self.mode, k, self.threshold,
                                   pooled_np))
        return [rows[idx] for idx in sorted(rows)]


def predict(
    model: nn.Module | Backend,
    preprocess: Any,
    inputs: Sequence[str | os.PathLike[str] | Image.Image] | str | os.PathLike[str],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    top_k: int = 5,
    mode: OutputMode = "softmax",
    threshold: float = 0.5,
    features: bool = False,
    amp: AmpMode | None = None,
    channels_last: bool = True,
    compile: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    draft: bool = True,
    threads: int | None = None,
) -> PredictionStream:
    """Predict every input; yields one :class:`Prediction` per input, in input order, as batches finish.

    Every argument is checked, the inputs expanded and a labels file read *now* (bad arguments raise here, not at
    the first ``next()``); the images are decoded and run lazily, as the returned iterator is consumed. The
    caller's model is never changed (see :class:`pthkit.engine.TorchBackend`: eval mode per call with the flags
    restored, channels_last applied to the inputs, a copy when another ``device`` is asked for).

    Args:
        model: a classification model (``nn.Module``), or a backend/runner (``__call__(batch)``, ``.name``,
            ``.describe()``), e.g. an ONNX Runtime session wrapper.
        preprocess: a :class:`pthkit.preprocess.Preprocess` (its ``transform()`` is used, and its ``resize_size``
            sets reduced-size JPEG decoding) or any callable PIL RGB image → CHW float tensor.
        inputs: paths, folders, globs, ``@list.txt``, ``-`` (see :func:`pthkit.data.inputs.expand_inputs`) or PIL
            images.
        batch_size: images per forward pass.
        workers: DataLoader worker processes (0 = decode in the main thread). ``None`` (default): for a CPU model,
            decoding threads in this process at a lower priority than the model's; for a GPU model,
            :func:`auto_workers` processes.
        top_k: classes kept per input in ``"softmax"`` / ``"logits"`` modes.
        mode: ``"softmax"`` (single-label probabilities), ``"sigmoid"`` (multi-label: every class with probability
            ≥ ``threshold``) or ``"logits"`` (raw outputs, full vector kept).
        features: also return the pooled embedding (input of the classifier) in ``Prediction.features``.
        amp: ``"bf16"`` / ``"fp16"`` autocast (CPU or GPU); ``None`` runs in the model's dtype.
        channels_last: feed channels_last batches (faster convolutions on CPU and GPU).
        compile: ``torch.compile`` the model first (slow start, faster long runs; needs a C++ compiler on CPU).
        device: where to run; ``None`` = where the model's weights are.
        progress: show a progress bar on stderr.
        labels: class names (a list or a file) overriding the preprocess/bundle names and ImageNet's.
        draft: allow reduced-size JPEG decoding (``False`` decodes every image in full).
        threads: ignored (with a ``DeprecationWarning``): the library never changes torch's thread count; the
            caller does (``torch.set_num_threads``, or :func:`pthkit.engine.threads.cli_thread_policy`).

    Raises:
        InputNotFoundError: no inputs. (A missing or unreadable *single* input is reported in its Prediction.)
        PreprocessError: invalid ``mode``/``amp``/``top_k``/``batch_size``/``threshold``/``workers``/``device``, a
            model that is neither a module nor a backend, or a bad labels file. Labels that do not match the model's
            outputs raise at the first batch (the output width is known then).
    """
    _check(mode, "output mode", mode in OUTPUT_MODES, "softmax, sigmoid or logits")
    _check(top_k, "top_k", _is_int(top_k) and top_k >= 1, "an integer >= 1")
    _check(batch_size, "batch_size", _is_int(batch_size) and batch_size >= 1, "an integer >= 1")
    _check(amp, "amp", amp is None or amp in AMP_MODES, "bf16, fp16 or None")
    _check(threshold, "threshold", isinstance(threshold, (int, float)) and bool(np.isfinite(threshold)),
           "a finite number (a probability; above 1 keeps no class)")
    _check(workers, "workers", workers is None or (_is_int(workers) and workers >= 0), "an integer >= 0 or None")
    if threads is not None:
        warnings.warn("predict(threads=...) is ignored: pthkit never changes torch's thread count; call "
                      "torch.set_num_threads() yourself", DeprecationWarning, stacklevel=2)
    names = read_labels(labels) if isinstance(labels, (str, os.PathLike)) else (list(labels) if labels else None)
    items = _items(inputs)
    if not items:
        raise InputNotFoundError.build("images", received="no inputs", expected="at least one image")
    backend = as_backend(model, device=device, channels_last=channels_last, compile=compile, features=features)
    source = ImageSource(items, preprocess, draft=draft, workers=workers, device=backend.device)
    engine = Engine(backend, batch_size=batch_size, amp=amp, progress=progress, unit="images")
    rows = _RowBuilder(source, mode=mode, top_k=top_k, threshold=threshold, features=features, labels=names,
                       known=getattr(preprocess, "label_names", None))
    return PredictionStream(engine.run(source), rows)


def _interpret(
    logits: torch.Tensor,
    indices: list[int],
    source: ImageSource,
    names: list[str] | None,
    mode: str,
    k: int,
    threshold: float,
    pooled: np.ndarray | None,
) -> dict[int, Prediction]:
    def label(i: int) -> str | None:
        return names[i] if names is not None and i < len(names) else None

    rows: dict[int, Prediction] = {}
    if mode == "sigmoid":
        probs = torch.sigmoid(logits)
    elif mode == "softmax":
        probs = torch.softmax(logits, dim=1)
    else:
        probs = logits
    top_vals, top_idx = probs.topk(k, dim=1) if mode != "sigmoid" else (None, None)
    raw = logits.numpy()
    for row, idx in enumerate(indices):
        if mode == "sigmoid":
            over = (probs[row] >= threshold).nonzero().flatten().tolist()
            over.sort(key=lambda i: -float(probs[row, i]))
            classes = [ClassScore(i, label(i), float(probs[row, i])) for i in over]
        else:
            classes = [
                ClassScore(int(i), label(int(i)), float(v))
                for v, i in zip(top_vals[row].tolist(), top_idx[row].tolist())  # type: ignore[index]
            ]
        rows[idx] = Prediction(
            path=source.name(idx),
            index=idx,
            mode=mode,
            classes=classes,
            logits=logits[row].tolist() if mode == "logits" else None,
            features=pooled[row] if pooled is not None else None,
            raw_logits=raw[row],
        )
    return rows


def save_features(predictions: Sequence[Prediction], path: str | os.PathLike[str]) -> list[Path]:
    """Write the features of the successful predictions to ``.npy`` or ``.safetensors``; returns the files written.

    Row ``i`` is the ``i``-th successful input. ``.safetensors`` stores the paths in its metadata (``"paths"``, a
    JSON list); ``.npy`` gets a ``<name>.paths.txt`` beside it with one path per line.

    Raises:
        PreprocessError: unknown extension, or no prediction carries features.
    """
    path = Path(path)
    rows = [p for p in predictions if p.ok and p.features is not None]
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".safetensors"):
        raise PreprocessError.build(
            "features file", received=repr(str(path)), expected="a name ending in .npy or .safetensors",
            hint="e.g. --features out.npy",
        )
    if not rows:
        raise PreprocessError.build(
            "features", received="no successful prediction with features", expected="at least one image that decoded",
        )
    array = np.stack([p.features for p in rows]).astype(np.float32)  # type: ignore[misc]
    paths = [p.path for p in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, array)
        sidecar = path.with_name(path.stem + ".paths.txt")
        sidecar.write_text("".join(p + "\n" for p in paths), encoding="utf-8", errors="surrogateescape")
        return [path, sidecar]
    from safetensors.numpy import save_file

    save_file({"features": array}, str(path), metadata={"paths": json.dumps(paths), "format": "pthkit-features"})
    return [path]
