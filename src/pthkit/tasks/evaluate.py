"""Evaluate a classifier on a labelled image folder or CSV: accuracy, per-class scores, confusion, calibration.

:func:`compute_metrics` is the pure part (logits + targets → :class:`EvaluationReport`), so its numbers can be checked
by hand; :func:`evaluate` loads the model (bundle folder, weights file or ``nn.Module``), runs it over the data and
optionally writes ``confusion_matrix.png`` / ``confusion_matrix.json`` / ``evaluation.json`` to ``out_dir``.

Metrics are computed here with torch rather than scikit-learn (an optional dependency of pthkit): per-class precision,
recall and F1 are the textbook definitions (0 where undefined, like sklearn's ``zero_division=0``), and the expected
calibration error uses 15 equal-width confidence bins ``(lo, hi]`` (Guo et al., 2017).
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from pthkit.errors import DatasetError

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


def _load(
    model_or_bundle: Any, arch: str | None, device: str, trust: bool, preprocess: Any
) -> tuple[nn.Module, Any, dict | None, str]:
    from pthkit.bundle import is_bundle, load_bundle

    if isinstance(model_or_bundle, nn.Module):
        from pthkit.tasks._compat import resolve_for_model

        pre = preprocess if preprocess is not None else resolve_for_model(model_or_bundle, arch=arch)
        return model_or_bundle.eval(), pre, None, type(model_or_bundle).__name__
    path = Path(model_or_bundle)
    if is_bundle(path):
        model, pre, config = load_bundle(path, device=device)
        return model, preprocess if preprocess is not None else pre, config, f"bundle {path}"
    from pthkit.loading import load_model
    from pthkit.tasks._compat import resolve_for_model

    model, report = load_model(path, arch, device=device, trust=trust)
    pre = preprocess if preprocess is not None else resolve_for_model(
        model, arch=getattr(report, "architecture", arch), checkpoint=getattr(report, "checkpoint", None))
    return model.eval(), pre, None, f"{path} ({getattr(report, 'architecture', arch)})"


@torch.no_grad()
def evaluate(
    model_or_bundle: str | os.PathLike | nn.Module,
    data: str | os.PathLike,
    *,
    arch: str | None = None,
    preprocess: Any = None,
    label_names: Sequence[str] | None = None,
    batch_size: int = 64,
    workers: int | None = None,
    device: str = "auto",
    amp: str | None = None,
    trust: bool = False,
    out_dir: str | os.PathLike | None = None,
    bins: int = 15,
) -> EvaluationReport:
    """Run a model over a labelled dataset and measure it (see the module docstring).

    Dataset classes are matched to model outputs by name when the model knows its label names (a bundle), else by
    position (sorted folder names ↔ output index), which requires as many outputs as classes.
    """
    from pthkit.tasks._distributed import _pick_device
    from pthkit.tasks.datasets import ImageItemsDataset, collate_skip_failed, load_eval_data

    if batch_size < 1:
        raise DatasetError.build("batch size", received=repr(batch_size), expected="at least 1", hint="Fix the option.")
    if workers is not None and workers < 0:
        raise DatasetError.build("workers", received=repr(workers), expected="0 or more (0: load data in this process)",
                                 hint="Fix the option.")
    if out_dir is not None and Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise DatasetError.build("out folder", received=f"{out_dir} (a file)", expected="a folder path",
                                 hint="Choose another --out.")
    dev = _pick_device(device, None)
    model, pre, config, desc = _load(model_or_bundle, arch, str(dev), trust, preprocess)
    model = model.to(dev)
    split = load_eval_data(data)
    names = list(label_names) if label_names is not None else _model_labels(pre, config)
    num_out = getattr(model, "num_classes", None)
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
        if isinstance(num_out, int) and num_out != len(split.classes):
            raise DatasetError.build("dataset classes", received=f"{len(split.classes)} class folders",
                                     expected=f"{num_out} (the model's outputs) when the model has no label names",
                                     hint="Pass --labels FILE with the model's class names.")
        remap = list(range(len(split.classes)))
        classes = list(split.classes)
    items = [(p, remap[lbl]) for p, lbl in split.val]
    n_workers = workers if workers is not None else min(4, max(0, (os.cpu_count() or 1) - 1))
    loader = torch.utils.data.DataLoader(ImageItemsDataset(items, pre.transform()), batch_size=batch_size,
                                         num_workers=n_workers, collate_fn=collate_skip_failed,
                                         pin_memory=dev.type == "cuda")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
    all_logits: list[torch.Tensor] = []
    all_targets: list[torch.Tensor] = []
    for batch in loader:
        if batch is None:
            continue
        x, y = batch
        ctx = torch.autocast(dev.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
        with ctx:
            logits = model(x.to(dev, non_blocking=True))
        all_logits.append(logits.float().cpu())
        all_targets.append(y)
    if not all_logits:
        raise DatasetError.build("dataset", received="no image could be evaluated", expected="readable images",
                                 hint="Check the data path.")
    logits = torch.cat(all_logits)
    if logits.shape[1] != len(classes):
        raise DatasetError.build("label names", received=f"{len(classes)} names",
                                 expected=f"{logits.shape[1]} (the model's outputs)", hint="Fix --labels.")
    report = compute_metrics(logits, torch.cat(all_targets), classes, bins=bins)
    report.skipped = list(split.skipped)
    report.model = desc
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
