"""The typed handle every command and integration starts from: :class:`Model`, returned by :func:`pthkit.open`.

A weights file says nothing about how to use it; pthkit works that out (architecture, load evidence, preprocessing,
labels, what the model consumes and what its outputs mean). :class:`Model` carries those answers together, so
predict, evaluate, fine-tune, bundle, export, serve and the Ray/Spark workers all see the same facts, assembled in
one place (:mod:`pthkit.api`), and each fact keeps its evidence (``evidence``, ``report``, ``preprocess.sources``).

Other sources (an exported ``.onnx``) plug in with :func:`register_opener`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import torch
from torch import nn

from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from pthkit.checkpoint.types import Checkpoint
    from pthkit.input_spec import InputSpec
    from pthkit.loading.report import LoadReport
    from pthkit.preprocess.types import Preprocess
    from pthkit.tasks.predict import Prediction

__all__ = [
    "Model",
    "ModelSource",
    "OpenOptions",
    "OutputMode",
    "Runner",
    "SourceKind",
    "Task",
    "register_opener",
    "registered_openers",
]

SourceKind = Literal["weights", "bundle", "hf", "module", "onnx", "openvino", "torchscript", "pt2"]
Task = Literal["classify", "regress", "raw"]
TASKS: tuple[str, ...] = get_args(Task)
OutputMode = Literal["softmax", "sigmoid", "logits"]
OUTPUT_MODES: tuple[str, ...] = get_args(OutputMode)


class Runner(Protocol):
    """What runs a model that is not a torch module (an ONNX Runtime session …): batch in, outputs out."""

    name: str

    def __call__(self, batch: torch.Tensor) -> Any: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ModelSource:
    """Where a :class:`Model` came from: the kind of source and its path (``None`` for an in-memory module)."""

    kind: SourceKind
    path: Path | None = None

    def sha256(self) -> str | None:
        """Hex sha256 of the source file (streamed); ``None`` for folders and in-memory modules."""
        if self.path is None or not self.path.is_file():
            return None
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.path) if self.path is not None else None}

    def __str__(self) -> str:
        return f"{self.kind} {self.path}" if self.path is not None else self.kind


@dataclass
class Model:
    """A loaded model with everything needed to use it, and the evidence for each of those things.

    - ``module``: the torch module (eval mode, on ``device``); ``None`` when ``runner`` runs the model (``.onnx``).
    - ``architecture``: ``"timm:tf_efficientnet_lite0"``, ``"my_model.py:MyModel"``, ``"onnx:model.onnx"`` …
    - ``task``: what the outputs mean: ``"classify"`` (class scores), ``"regress"`` (values), ``"raw"`` (as is).
    - ``input_spec``: what the model consumes (images or tensors, shape, dtype), with where that came from.
    - ``preprocess``: the image pipeline with provenance (``None`` for non-image models).
    - ``labels``: class names, when known.
    - ``report``: the load evidence (every key explained) for weights files; ``None`` for bundles and exports.
    - ``evidence``: one human line per decision (identification, twin choice, normalization, backend …).
    - ``warnings``: what the post-load check or the loaders found suspicious; never silently dropped.
    """

    module: nn.Module | None
    architecture: str
    task: Task
    input_spec: InputSpec
    preprocess: Preprocess | None
    labels: list[str] | None
    source: ModelSource
    report: LoadReport | None = None
    evidence: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    key_map: dict[str, str] = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    runner: Runner | None = None
    checkpoint: Checkpoint | None = field(default=None, repr=False)
    output_names: list[str] | None = None

    # --- use ---------------------------------------------------------------------------------------------------------

    @property
    def is_image_model(self) -> bool:
        return self.input_spec.kind == "image"

    def predict(
        self,
        inputs: Any,
        *,
        batch_size: int = 32,
        top_k: int = 5,
        mode: OutputMode | None = None,
        threshold: float = 0.5,
        features: bool = False,
        amp: Literal["bf16", "fp16"] | None = None,
        workers: int | None = None,
        progress: bool = False,
        labels: Sequence[str] | str | os.PathLike[str] | None = None,
        task: Task | None = None,
        columns: Sequence[str] | None = None,
        allow_nan: bool = False,
        output_names: Sequence[str] | None = None,
        compile: bool = False,
    ) -> Iterator[Prediction]:
        """Predict on ``inputs``; one :class:`~pthkit.tasks.predict.Prediction` per input, in input order.

        Image models take paths, folders, globs, ``@list.txt`` files or PIL images; other models take arrays,
        tensors, or table files (``.csv``, ``.npy``, ``.parquet`` …). Every argument is checked now, before the
        iterator is returned; a bad input file gives a row with ``error`` set and the run goes on.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PreprocessError.build("batch_size", received=repr(batch_size), expected="an integer >= 1")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise PreprocessError.build("top_k", received=repr(top_k), expected="an integer >= 1")
        if mode is not None and mode not in OUTPUT_MODES:
            raise PreprocessError.build("mode", received=repr(mode), expected=" | ".join(OUTPUT_MODES))
        if task is not None and task not in TASKS:
            raise PreprocessError.build("task", received=repr(task), expected=" | ".join(TASKS))
        if not 0.0 <= float(threshold) <= 1.0:
            raise PreprocessError.build("threshold", received=repr(threshold), expected="a probability in [0, 1]")
        if amp is not None and amp not in ("bf16", "fp16"):
            raise PreprocessError.build("amp", received=repr(amp), expected="bf16 or fp16")
        if self.is_image_model:
            from pthkit.tasks.predict import predict as predict_images

            module_or_runner: Any = self.runner if self.runner is not None else self.module  # --backend sets runner
            return predict_images(
                module_or_runner, self.preprocess, inputs, batch_size=batch_size, workers=workers, top_k=top_k,
                mode=mode or "softmax", threshold=threshold, features=features, amp=amp, progress=progress,
                labels=labels if labels is not None else self.labels, compile=compile,
            )
        from pthkit.tasks.outputs import predict_tensors

        return predict_tensors(
            self, inputs, batch_size=batch_size, top_k=top_k, task=task or self.task,
            labels=list(labels) if isinstance(labels, (list, tuple)) else (labels if labels is not None else self.labels),
            columns=list(columns) if columns is not None else None, allow_nan=allow_nan,
            output_names=list(output_names) if output_names is not None else self.output_names,
            progress=progress, mode=mode,
        )

    # --- describe ----------------------------------------------------------------------------------------------------

    @property
    def num_outputs(self) -> int | None:
        """Size of the output vector when known (classes of a classifier)."""
        if self.labels is not None:
            return len(self.labels)
        n = self.config.get("num_classes") if isinstance(self.config, dict) else None
        return int(n) if isinstance(n, int) else None

    def summary_line(self) -> str:
        """One line: what was loaded and how sure pthkit is (the first line ``pthkit predict`` prints)."""
        return self.evidence[0] if self.evidence else f"{self.architecture} ({self.source})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (no tensors)."""
        out: dict[str, Any] = {
            "architecture": self.architecture,
            "task": self.task,
            "source": self.source.to_dict(),
            "device": str(self.device),
            "input_spec": self.input_spec.to_dict(),
            "preprocess": self.preprocess.to_dict() if self.preprocess is not None else None,
            "labels": {"count": len(self.labels), "first": self.labels[:5]} if self.labels else None,
            "arch_kwargs": dict(self.arch_kwargs),
            "evidence": list(self.evidence),
            "warnings": list(self.warnings),
        }
        if self.runner is not None:
            out["runner"] = self.runner.describe()
        if self.report is not None:
            out["load"] = {
                "ok": self.report.ok, "complete": self.report.complete, "loaded": len(self.report.loaded),
                "remapped": len(self.report.remapped), "missing": len(self.report.missing),
                "unexpected": len(self.report.unexpected), "reinitialized": list(self.report.reinitialized),
            }
        return out

    def describe(self) -> str:
        """Human summary: what was loaded, from where, how it was decided, what it consumes and how to feed it."""
        lines = [f"model: {self.architecture} ({self.task}) from {self.source}"]
        lines += [f"  evidence: {e}" for e in self.evidence]
        lines += [f"  warning: {w}" for w in self.warnings]
        lines.append(f"input: {self.input_spec.describe()}")
        if self.report is not None:
            lines.append("load: " + self.report.problem_summary() if not self.report.complete
                         else f"load: {len(self.report.loaded)} tensors loaded, {len(self.report.remapped)} renamed")
        if self.preprocess is not None:
            lines.append("preprocessing:")
            lines += ["  " + line for line in self.preprocess.describe().splitlines()]
        if self.labels:
            shown = ", ".join(self.labels[:5]) + (" …" if len(self.labels) > 5 else "")
            lines.append(f"labels: {len(self.labels)} ({shown})")
        if self.runner is not None:
            lines.append(f"runner: {self.runner.describe()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class OpenOptions:
    """The arguments of :func:`pthkit.open`, handed to registered openers."""

    arch: str | None = None
    arch_kwargs: dict[str, Any] | None = None
    num_classes: int | None = None
    trust: bool = False
    device: str = "auto"
    select: str = "auto"
    key_map: dict[str, str] | str | os.PathLike[str] | None = None
    overrides: dict[str, Any] | None = None
    labels: list[str] | None = None
    input_shape: tuple[int | None, ...] | None = None
    task: Task | None = None
    backend: str = "torch"
    check: bool = True


Opener = Callable[[Path, OpenOptions], Model]
Predicate = Callable[[Path], bool]
_OPENERS: list[tuple[Predicate, Opener]] = []


def register_opener(predicate: Predicate, opener: Opener) -> None:
    """Teach :func:`pthkit.open` a new kind of source (exported ``.onnx`` …): ``opener(path, options)`` is used for
    every path where ``predicate(path)`` is true, before the built-in kinds. Registering the same pair twice is a
    no-op."""
    if (predicate, opener) not in _OPENERS:
        _OPENERS.append((predicate, opener))


def registered_openers() -> list[tuple[Predicate, Opener]]:
    """The registered ``(predicate, opener)`` pairs, in order."""
    return list(_OPENERS)
