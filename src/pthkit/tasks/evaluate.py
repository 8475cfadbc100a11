"""Evaluate a classifier on a labelled image folder or CSV: accuracy, per-class scores, confusion, calibration.

:func:`compute_metrics` is the pure part (logits + targets → :class:`EvaluationReport`), so its numbers can be checked
by hand; :func:`evaluate` loads the model (bundle folder, weights file, ``pthkit.open`` handle or ``nn.Module``), runs it
through :mod:`pthkit.engine` (the decoding ``predict`` uses) and
optionally writes ``confusion_matrix.png`` / ``confusion_matrix.json`` / ``evaluation.json`` to ``out_dir``.

Metrics are computed here with torch rather than scikit-learn (an optional dependency of pthkit): per-class precision,
recall and F1 are the textbook definitions (0 where undefined, like sklearn's ``zero_division=0``), and the expected
calibration error uses 15 equal-width confidence bins ``(lo, hi]`` (Guo et al., 2017).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pthkit.data.images import ImageSource
from pthkit.engine import AMP_MODES, Backend, Engine, as_backend, collect
from pthkit.errors import DatasetError

if TYPE_CHECKING:
    from pthkit.model import Model

__all__ = ["ClassMetrics", "EvaluationReport", "compute_metrics", "evaluate", "expected_calibration_error"]


@dataclass
class ClassMetrics:
    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class EvaluationReport:
    """Everything :func:`evaluate` measured. ``confusion[i][j]`` counts images of class i predicted as class j."""

    classes: list[str]
    num_images: int
    top1: float
    top5: float | None
    top_k: int
    per_class: list[ClassMetrics]
    macro_f1: float
    confusion: list[list[int]]
    most_confused: list[dict[str, Any]]
    ece: float
    ece_bins: int = 15
    mean_loss: float | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return d

    def __str__(self) -> str:
        lines = [f"{self.model + ': ' if self.model else ''}{self.num_images} images, {len(self.classes)} classes",
                 f"top-1 accuracy {self.top1:.4f}"
                 + (f", top-{self.top_k} {self.top5:.4f}" if self.top5 is not None else "")
                 + f", macro F1 {self.macro_f1:.4f}, ECE {self.ece:.4f} ({self.ece_bins} bins)"]
        if self.most_confused:
            pairs = ", ".join(f"{p['true']}→{p['predicted']} ×{p['count']}" for p in self.most_confused[:5])
            lines.append(f"most confused: {pairs}")
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable image(s) skipped")
        for name, path in self.files.items():
            lines.append(f"{name}: {path}")
        return "\n".join(lines)


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    """ECE: Σ_b |B_b|/N · |accuracy(B_b) − mean confidence(B_b)| over ``bins`` equal-width bins ``(lo, hi]``."""
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).double()
    conf = conf.double()
    n = conf.numel()
    if n == 0:
        return 0.0
    edges = torch.linspace(0.0, 1.0, bins + 1, dtype=torch.float64)
    ece = 0.0
    for b in range(bins):
        lo, hi = edges[b], edges[b + 1]
        mask = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        k = int(mask.sum())
        if k:
            ece += k / n * abs(float(correct[mask].mean()) - float(conf[mask].mean()))
    return ece


def compute_metrics(
    logits: torch.Tensor, targets: torch.Tensor, classes: Sequence[str], *, bins: int = 15, top_k: int = 5,
    most_confused: int = 10,
) -> EvaluationReport:
    """Metrics of ``logits`` (N×K) against integer ``targets`` (N) for classes named ``classes`` (K)."""
    logits = logits.detach().float().cpu()
    targets = targets.detach().long().cpu()
    n, k = logits.shape
    if len(classes) != k:
        raise DatasetError.build("class names", received=f"{len(classes)} names", expected=f"{k} (model outputs)",
                                 hint="Pass one name per model output.")
    probs = logits.softmax(dim=1)
    pred = logits.argmax(dim=1)
    conf = torch.zeros(k, k, dtype=torch.long)
    conf.index_put_((targets, pred), torch.ones(n, dtype=torch.long), accumulate=True)
    tp = conf.diag().double()
    predicted = conf.sum(0).double()
    support = conf.sum(1).double()
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    per_class = [ClassMetrics(str(classes[i]), float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
                 for i in range(k)]
    present = support > 0
    macro_f1 = float(f1[present].mean()) if bool(present.any()) else 0.0
    kk = min(top_k, k)
    top5 = float((logits.topk(kk, dim=1).indices == targets[:, None]).any(1).double().mean()) if k > top_k else None
    off = conf.clone()
    off.fill_diagonal_(0)
    pairs = [(int(off[i, j]), i, j) for i in range(k) for j in range(k) if off[i, j] > 0]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    confused = [{"true": str(classes[i]), "predicted": str(classes[j]), "count": c,
                 "fraction_of_true": c / max(1, int(support[i]))} for c, i, j in pairs[:most_confused]]
    loss = float(nn.functional.cross_entropy(logits, targets)) if n else None
    return EvaluationReport(
        classes=[str(c) for c in classes], num_images=n, top1=float((pred == targets).double().mean()) if n else 0.0,
        top5=top5, top_k=kk, per_class=per_class, macro_f1=macro_f1, confusion=conf.tolist(),
        most_confused=confused, ece=expected_calibration_error(probs, targets, bins), ece_bins=bins, mean_loss=loss,
    )


def save_confusion_png(report: EvaluationReport, path: str | os.PathLike) -> Path:
    """Draw the confusion matrix (rows: true class, columns: predicted) with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    k = len(report.classes)
    cm = torch.tensor(report.confusion, dtype=torch.float64)
    side = min(24.0, max(4.0, 0.45 * k + 2))
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    try:
        im = ax.imshow(cm.numpy(), cmap="Blues")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if k <= 40:
            ax.set_xticks(range(k), labels=report.classes, rotation=90)
            ax.set_yticks(range(k), labels=report.classes)
        if k <= 25:
            top = float(cm.max()) if cm.numel() else 0.0
            for i in range(k):
                for j in range(k):
                    v = int(cm[i, j])
                    if v:
                        ax.text(j, i, str(v), ha="center", va="center",
                                color="white" if v > top / 2 else "black", fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"top-1 {report.top1:.3f} on {report.num_images} images")
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def _model_labels(preprocess: Any, config: dict[str, Any] | None) -> list[str] | None:
    names = getattr(preprocess, "label_names", None)
    if not names and config:
        names = config.get("label_names") or (config.get("pretrained_cfg") or {}).get("label_names")
    return [str(n) for n in names] if names else None


@dataclass
class _Loaded:
    backend: Backend
    preprocess: Any
    config: dict[str, Any] | None
    description: str
    num_outputs: int | None


def _load(model_or_bundle: Any, arch: str | None, device: str, trust: bool, preprocess: Any) -> _Loaded:
    """A backend for the model (never changing a module the caller passed), its preprocessing and config.

    A path is opened with :func:`pthkit.open` (the handle owns that module); a :class:`pthkit.model.Model` handle
    runs its ``runner`` (ONNX Runtime …) when set, else its module; an ``nn.Module`` runs where its weights are
    (``device="auto"``) or on a copy on ``device``.
    """
    from pthkit.model import Model

    if isinstance(model_or_bundle, (str, os.PathLike)):
        from pthkit.api import open as open_model

        model_or_bundle = open_model(model_or_bundle, arch=arch, device=device, trust=trust)
    if isinstance(model_or_bundle, Model):
        handle = model_or_bundle
        pre = preprocess if preprocess is not None else handle.preprocess
        target: Any = handle.runner if handle.runner is not None else handle.module
        backend = as_backend(target, owned=True) if isinstance(target, nn.Module) else as_backend(target)
        return _Loaded(backend, pre, handle.config or None, f"{handle.source} ({handle.architecture})",
                       handle.num_outputs)
    if isinstance(model_or_bundle, nn.Module):
        module = model_or_bundle
        if preprocess is None:
            from pthkit.preprocess import resolve_preprocess

            preprocess = resolve_preprocess(module, arch=arch)
        backend = as_backend(module, device=None if device == "auto" else device)
        num = getattr(module, "num_classes", None)
        return _Loaded(backend, preprocess, None, type(module).__name__, num if isinstance(num, int) else None)
    backend = as_backend(model_or_bundle)  # a backend/runner object (raises a one-line error otherwise)
    if preprocess is None:
        raise DatasetError.build("preprocess", received=f"a {backend.name} backend without preprocessing",
                                 expected="preprocess= (a pthkit Preprocess)", hint="Pass the model's preprocessing.")
    return _Loaded(backend, preprocess, None, backend.name, None)


def evaluate(
    model_or_bundle: str | os.PathLike[str] | nn.Module | Model | Backend,
    data: str | os.PathLike[str],
    *,
    arch: str | None = None,
    preprocess: Any = None,
    label_names: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    amp: str | None = None,
    trust: bool = False,
    out_dir: str | os.PathLike[str] | None = None,
    bins: int = 15,
    progress: bool = False,
) -> EvaluationReport:
    """Run a model over a labelled dataset and measure it (see the module docstring).

    The images go through the same engine and decoding as :func:`pthkit.predict` (reduced-size JPEG decoding, the
    same per-image pipeline and batch normalization), so the accuracy measured here is that of what predict outputs.
    An unreadable image is decoded once, reported in ``skipped``, and left out. The caller's module is not changed.

    Dataset classes are matched to model outputs by name when the model knows its label names (a bundle), else by
    position (sorted folder names ↔ output index), which requires as many outputs as classes.
    """
    from pthkit.data.splits import load_eval_data

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DatasetError.build("batch size", received=repr(batch_size), expected="at least 1", hint="Fix the option.")
    if workers is not None and workers < 0:
        raise DatasetError.build("workers", received=repr(workers), expected="0 or more (0: load data in this process)",
                                 hint="Fix the option.")
    if amp is not None and amp not in AMP_MODES:
        raise DatasetError.build("amp", received=repr(amp), expected="bf16 or fp16", hint="Fix the option.")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DatasetError.build("out folder", received=f"{out_dir} (a file)", expected="a folder path",
                                 hint="Choose another --out.")
    loaded = _load(model_or_bundle, arch, device, trust, preprocess)
    split = load_eval_data(data, check_images=False)  # the engine reports unreadable images (one decode each)
    names = list(label_names) if label_names is not None else _model_labels(loaded.preprocess, loaded.config)
    if names is not None:
        index = {n: i for i, n in enumerate(names)}
        unknown = [c for c in split.classes if c not in index]
        if unknown:
            raise DatasetError.build("dataset classes", received=f"{unknown[:5]} not among the model's labels",
                                     expected=f"classes from {names[:5]}{'…' if len(names) > 5 else ''}",
                                     hint="Name the class folders after the model's labels, or pass --labels.")
        remap = [index[c] for c in split.classes]
        classes = names
    else:
        num_out = loaded.num_outputs
        if isinstance(num_out, int) and num_out != len(split.classes):
            raise DatasetError.build("dataset classes", received=f"{len(split.classes)} class folders",
                                     expected=f"{num_out} (the model's outputs) when the model has no label names",
                                     hint="Pass --labels FILE with the model's class names.")
        remap = list(range(len(split.classes)))
        classes = list(split.classes)
    paths = [p for p, _ in split.val]
    source = ImageSource(paths, loaded.preprocess, targets=[remap[lbl] for _, lbl in split.val], workers=workers,
                         device=loaded.backend.device)
    engine = Engine(loaded.backend, batch_size=batch_size, amp=amp, progress=progress,  # type: ignore[arg-type]
                    unit="images", label="evaluate")
    got = collect(engine, source)
    skipped = [(paths[i], reason) for i, reason in got.failed]
    if got.logits.numel() == 0:
        raise DatasetError.build("dataset", received="no image could be evaluated", expected="readable images",
                                 hint="Check the data path.")
    logits = got.logits
    if logits.shape[1] != len(classes):
        raise DatasetError.build("label names", received=f"{len(classes)} names",
                                 expected=f"{logits.shape[1]} (the model's outputs)", hint="Fix --labels.")
    report = compute_metrics(logits, got.targets, classes, bins=bins)
    report.skipped = list(split.skipped) + skipped
    report.model = loaded.description
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "confusion_matrix.json").write_text(
            json.dumps({"classes": report.classes, "matrix": report.confusion, "rows": "true", "columns": "predicted"},
                       indent=1) + "\n", encoding="utf-8")
        report.files["confusion_matrix_json"] = str(out / "confusion_matrix.json")
        report.files["confusion_matrix_png"] = str(save_confusion_png(report, out / "confusion_matrix.png"))
        report.files["evaluation_json"] = str(out / "evaluation.json")
        (out / "evaluation.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n", encoding="utf-8")
    return report
