"""Fine-tune and evaluate non-image models on tables: ``pthkit finetune WEIGHTS data.csv --target COL``.

- The model is opened strictly with its own head (:func:`pthkit.loading.head.open_with_classes`: works for user
  classes **without** a ``num_classes`` argument); the head is found by structure and replaced when the target needs
  another number of outputs, reported as ``"layer2: 50 → 2 replaced by 50 → 3"``.
- The loss follows the target column (:func:`decide_task`): class names or a few integer codes → classification
  (cross-entropy), other numbers → regression (MSE); ``loss=`` overrides it.
- Validation runs through :mod:`pthkit.engine`; the best epoch is written as a bundle that records the input spec,
  the column names, the labels (or output names) and the task, so ``pthkit predict BUNDLE data.csv`` needs no flags.
- ``resume=True`` continues ``out``'s run from ``checkpoints/last.pt`` (only ``epochs`` and ``patience`` may change).

:func:`evaluate_table` reports MAE, RMSE and R² for regression models and the image classifiers' metrics
(:func:`pthkit.tasks.evaluate.compute_metrics`) for classifiers.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import nn

from pthkit.errors import DatasetError, PreprocessError, TrainingError
from pthkit.tasks._results import EpochHistory

if TYPE_CHECKING:
    from pthkit.data.tables import TableData
    from pthkit.input_spec import InputSpec
    from pthkit.model import Model

__all__ = [
    "LossName",
    "RegressionReport",
    "TableTask",
    "TabularResult",
    "decide_task",
    "evaluate_table",
    "finetune_table",
]

LossName = Literal["auto", "cross-entropy", "mse"]
_LOSSES = ("auto", "cross-entropy", "mse")
# An integer-valued target with at most this many distinct values is taken as class codes (0/1, 1..5 ratings).
_MAX_INT_CLASSES = 20
_CKPT = "checkpoints/last.pt"
_STATE = "checkpoints/run.json"


@dataclass(frozen=True)
class TableTask:
    """What the target column asks for: ``classify`` with ``classes`` (sorted), or ``regress``; and why."""

    kind: Literal["classify", "regress"]
    classes: list[str] | None
    evidence: str

    @property
    def loss(self) -> str:
        return "cross-entropy" if self.kind == "classify" else "mse"


def _sorted_classes(values: Sequence[str]) -> list[str]:
    uniq = sorted(set(values))
    try:
        return sorted(uniq, key=float)
    except ValueError:
        return uniq


def decide_task(y: np.ndarray, column: str, loss: str = "auto") -> TableTask:
    """Classification or regression from the target values (strings as read), unless ``loss`` says which."""
    if loss not in _LOSSES:
        raise PreprocessError.build("--loss", received=repr(loss), expected=" | ".join(_LOSSES))
    values = [str(v) for v in y]
    numbers: np.ndarray | None
    try:
        numbers = np.asarray([float(v) for v in values], dtype=np.float64)
    except ValueError:
        numbers = None
    if loss == "mse":
        if numbers is None:
            bad = next(v for v in values if not _is_float(v))
            raise DatasetError.build(f"--target {column}", received=f"a non-numeric value {bad!r}",
                                     expected="numbers for --loss mse")
        return TableTask("regress", None, f"target {column!r}: regression (--loss mse)")
    uniq = _sorted_classes(values)
    if loss == "cross-entropy":
        return TableTask("classify", uniq, f"target {column!r}: {len(uniq)} classes (--loss cross-entropy)")
    if numbers is None:
        return TableTask("classify", uniq, f"target {column!r} holds names: {len(uniq)} classes → cross-entropy")
    integral = bool(np.all(numbers == np.round(numbers)))
    if integral and len(uniq) <= _MAX_INT_CLASSES:
        return TableTask("classify", uniq, f"target {column!r} holds {len(uniq)} integer codes → classification "
                         "(cross-entropy; --loss mse for regression)")
    return TableTask("regress", None, f"target {column!r} holds numbers ({len(uniq)} distinct) → regression "
                     "(MSE; --loss cross-entropy for classes)")


def _is_float(v: str) -> bool:
    try:
        float(v)
    except ValueError:
        return False
    return True


@dataclass
class TabularResult(EpochHistory):
    """What a table fine-tuning run produced."""

    out_dir: Path
    architecture: str
    task: str
    classes: list[str] | None
    target: str
    feature_names: list[str] | None
    best_epoch: int | None
    monitor: str
    history: list[dict[str, Any]]
    epochs_run: int
    stopped_early: bool
    resumed: bool
    head_change: str | None
    evidence: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def __str__(self) -> str:
        what = f"{len(self.classes)} classes" if self.classes else "regression"
        lines = [f"Fine-tuned {self.architecture} on {self.target!r} ({what}): {self.epochs_run} epochs"
                 + (" (stopped early)" if self.stopped_early else "") + f" in {self.elapsed_s:.1f} s, "
                 f"bundle in {self.out_dir}"]
        lines += self.evidence
        best = self.best
        if best:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in best.items() if k.startswith("val_") and isinstance(v, float))
            lines.append(f"best epoch {self.best_epoch}: {shown}")
        return "\n".join(lines)


# --- data ------------------------------------------------------------------------------------------------------------------


def _split(n: int, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0.0 <= val_split < 1.0:
        raise PreprocessError.build("--val-split", received=repr(val_split), expected="a fraction in [0, 1)")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_split)) if n >= 5 else 0
    return order[n_val:], order[:n_val]


def _targets(task: TableTask, y: np.ndarray) -> np.ndarray:
    if task.kind == "regress":
        return np.asarray([float(v) for v in y], dtype=np.float32).reshape(-1, 1)
    assert task.classes is not None
    index = {c: i for i, c in enumerate(task.classes)}
    try:
        return np.asarray([index[str(v)] for v in y], dtype=np.int64)
    except KeyError as err:
        raise DatasetError.build("target", received=f"class {err.args[0]!r}",
                                 expected=f"one of the run's classes ({', '.join(task.classes[:8])})") from None


# --- the run ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Config:
    weights: str
    data: str
    target: str
    arch: str | None
    arch_kwargs: dict[str, Any] | None
    columns: list[str] | None
    loss: str
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    val_split: float
    seed: int
    patience: int | None
    allow_nan: bool


def finetune_table(
    weights: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    target: str,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    columns: Sequence[str] | None = None,
    loss: str = "auto",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    val_split: float | None = None,
    seed: int | None = None,
    patience: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    trust: bool = False,
    allow_nan: bool = False,
    progress: bool = True,
) -> TabularResult:
    """Fine-tune WEIGHTS on the table DATA to predict column ``target``; the best epoch becomes a bundle in ``out``.

    Defaults: 30 epochs, batch 64, AdamW lr 1e-3 with weight decay 1e-4 and a cosine schedule, 20% validation
    (seeded split). Classification monitors ``val_acc``, regression ``val_loss`` (MSE).

    Raises:
        TrainingError: ``out`` holds another run (without ``overwrite``/``resume``), or a bad resume state.
        DatasetError / PreprocessError: the table does not fit the model (see :mod:`pthkit.data.tables`).
        LoadError: the weights do not fit ``arch`` (strict load; only the head is ever re-initialized).
    """
    started = time.perf_counter()
    out_dir = Path(out)
    ckpt_path = out_dir / _CKPT
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            raise TrainingError.build("--resume", received=f"no {_CKPT} in {out_dir}",
                                      expected="the --out folder of an earlier table fine-tuning run")
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        stored = json.loads((out_dir / _STATE).read_text(encoding="utf-8"))
        cfg = _Config(**stored)
        if epochs is not None:
            cfg.epochs = int(epochs)
        if patience is not None:
            cfg.patience = int(patience)
    else:
        if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
            raise TrainingError.build("--out", received=f"{out_dir} (not empty)", expected="a new or empty folder",
                                      hint="Pass --overwrite to replace it, or --resume to continue its run.")
        if out_dir.exists() and overwrite:
            shutil.rmtree(out_dir)
        cfg = _Config(weights=str(weights), data=str(data), target=target, arch=arch, arch_kwargs=arch_kwargs,
                      columns=list(columns) if columns else None, loss=loss, epochs=int(epochs or 30),
                      batch_size=int(batch_size or 64), lr=float(lr or 1e-3),
                      weight_decay=float(1e-4 if weight_decay is None else weight_decay),
                      val_split=float(0.2 if val_split is None else val_split), seed=int(seed or 0),
                      patience=patience, allow_nan=allow_nan)
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise PreprocessError.build("training settings", received=f"epochs={cfg.epochs}, batch_size={cfg.batch_size}, "
                                    f"lr={cfg.lr}", expected="epochs >= 1, batch size >= 1, lr > 0")

    from pthkit.data.tables import read_table
    from pthkit.loading.head import open_with_classes
    from pthkit.tasks.outputs import _model_name

    torch.manual_seed(cfg.seed)
    headed = open_with_classes(cfg.weights, None, arch=cfg.arch, arch_kwargs=cfg.arch_kwargs, trust=trust,
                               device=device)
    handle = headed.model
    spec = handle.input_spec
    if spec.kind == "image":
        raise PreprocessError.build(str(cfg.data), received="a table", expected=f"images: {handle.architecture} is an "
                                    "image model", hint="Fine-tune image models on an image folder.")
    table = read_table(cfg.data, spec=spec, model_name=_model_name(handle.architecture), columns=cfg.columns,
                       target=cfg.target, allow_nan=cfg.allow_nan)
    if table.y is None or len(table.x) == 0:
        raise DatasetError.build(str(cfg.data), received="no rows", expected="rows with a target value")
    task = decide_task(table.y, cfg.target, cfg.loss)
    if state is not None and state.get("classes") != task.classes:
        raise TrainingError.build("--resume", received=f"classes {task.classes}",
                                  expected=f"the run's classes {state.get('classes')}",
                                  hint="The table changed since the run started.")
    width = len(task.classes) if task.classes is not None else 1
    change = headed.set_classes(width)
    module = headed.module
    evidence = [task.evidence]
    if change is not None:
        evidence.append(f"head: {change}")
    y = _targets(task, table.y)
    x = table.x
    train_idx, val_idx = _split(len(x), cfg.val_split, cfg.seed)
    dev = handle.device
    module.to(dev)

    from pthkit.engine.progress import ProgressBar

    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train_idx) / cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(1.0, s / max(1, cfg.epochs * steps_per_epoch)))))
    history: list[dict[str, Any]] = []
    best_epoch: int | None = None
    best_value: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 0
    if state is not None:
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = json.loads(state["history"])
        start_epoch = int(state["epoch"])
        best_epoch = state.get("best_epoch")
        best_value = state.get("best_value")
        best_state = state.get("best_model")
        torch.set_rng_state(state["rng"])
    monitor = "val_acc" if task.kind == "classify" else "val_loss"
    higher = monitor == "val_acc"
    criterion: nn.Module = nn.CrossEntropyLoss() if task.kind == "classify" else nn.MSELoss()
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y)
    stopped = False
    bar = ProgressBar("finetune", cfg.epochs, enabled=progress, fields=("loss", monitor), transient=False,
                      elapsed=True)
    try:
        bar.update(completed=start_epoch)
        for epoch in range(start_epoch, cfg.epochs):
            module.train()
            perm = torch.from_numpy(np.random.default_rng(cfg.seed + epoch).permutation(train_idx))
            total = 0.0
            for s in range(0, len(perm), cfg.batch_size):
                idx = perm[s:s + cfg.batch_size]
                xb, yb = xt[idx].to(dev), yt[idx].to(dev)
                optimizer.zero_grad(set_to_none=True)
                loss_value = criterion(_first(module, xb), yb)
                loss_value.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss_value.detach()) * len(idx)
            row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(1, len(train_idx))}
            if len(val_idx):
                row.update(_validate(module, x[val_idx], y[val_idx], task, cfg.batch_size))
            history.append(row)
            # classification: accuracy, ties broken by the lower validation loss (a perfect accuracy is common)
            value = row.get(monitor, -row["train_loss"] if higher else row["train_loss"])
            if higher and "val_loss" in row:
                value = float(value) - 1e-6 * min(float(row["val_loss"]), 1e5)
            if best_value is None or (value > best_value if higher else value < best_value):
                best_value, best_epoch = float(value), epoch + 1
                best_state = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
            fields: dict[str, Any] = {"loss": f"{row['train_loss']:.4f}",
                                      monitor: f"{row.get(monitor, float('nan')):.4f}"}
            bar.update(**fields)
            bar.advance()
            _save_state(out_dir, cfg, module, optimizer, scheduler, history, epoch + 1, best_epoch, best_value,
                        best_state, task)
            if cfg.patience is not None and best_epoch is not None and epoch + 1 - best_epoch >= cfg.patience:
                stopped = True
                break
    finally:
        bar.close()
    final = copy.deepcopy(module).cpu()
    if best_state is not None:
        final.load_state_dict(best_state)
    _write_bundle(final, out_dir, handle, headed, task, table, cfg, history, best_epoch, spec)
    return TabularResult(out_dir=out_dir, architecture=handle.architecture, task=task.kind, classes=task.classes,
                         target=cfg.target, feature_names=table.feature_names, best_epoch=best_epoch, monitor=monitor,
                         history=history, epochs_run=len(history), stopped_early=stopped, resumed=state is not None,
                         head_change=str(change) if change is not None else None, evidence=evidence,
                         elapsed_s=time.perf_counter() - started)


def _first(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The main output (first tensor) of ``module(x)`` as N × k."""
    from pthkit.engine import first_tensor

    return first_tensor(module(x)).flatten(1)


def _validate(module: nn.Module, x: np.ndarray, y: np.ndarray, task: TableTask, batch_size: int) -> dict[str, float]:
    """Validation metrics through the engine (the model's training flags and weights are left as they are)."""
    from pthkit.data.tables import ArraySource
    from pthkit.engine import evaluate_batches
    from pthkit.input_spec import InputSpec

    spec = InputSpec(kind="tensor", shape=(), source="validation split")
    source = ArraySource(x, label="validation", spec=spec, model_name="model", allow_nan=True, targets=y)
    outs, tgts = [], []
    for logits, targets in evaluate_batches(module, source, batch_size=max(batch_size, 256)):
        outs.append(logits.cpu())
        tgts.append(targets.cpu())
    pred = torch.cat(outs)
    tgt = torch.cat(tgts)
    if task.kind == "classify":
        loss = float(nn.functional.cross_entropy(pred, tgt.long()))
        return {"val_loss": loss, "val_acc": float((pred.argmax(1) == tgt).double().mean())}
    return _regression_metrics(pred.double(), tgt.double().reshape(pred.shape))


def _regression_metrics(pred: torch.Tensor, tgt: torch.Tensor) -> dict[str, float]:
    err = pred - tgt
    mse = float((err**2).mean())
    ss_tot = float(((tgt - tgt.mean(0)) ** 2).sum())
    ss_res = float((err**2).sum())
    return {"val_loss": mse, "val_mae": float(err.abs().mean()), "val_rmse": math.sqrt(mse),
            "val_r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")}


def _save_state(out_dir: Path, cfg: _Config, module: nn.Module, optimizer: Any, scheduler: Any,
                history: list[dict[str, Any]], epoch: int, best_epoch: int | None, best_value: float | None,
                best_state: dict[str, torch.Tensor] | None, task: TableTask) -> None:
    """``checkpoints/last.pt`` (tensors and plain values only: it loads with ``weights_only=True``) and the run's
    settings as JSON."""
    path = out_dir / _CKPT
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": json.dumps(history), "epoch": epoch, "best_epoch": best_epoch, "best_value": best_value,
                "best_model": best_state, "rng": torch.get_rng_state(), "classes": task.classes}, tmp)
    os.replace(tmp, path)
    (out_dir / _STATE).write_text(json.dumps(asdict(cfg), indent=2) + "\n", encoding="utf-8")


def _write_bundle(module: nn.Module, out_dir: Path, handle: Model, headed: Any, task: TableTask, table: TableData,
                  cfg: _Config, history: list[dict[str, Any]], best_epoch: int | None, spec: InputSpec) -> None:
    from pthkit.bundle import CONFIG_NAME, save_bundle

    names = table.feature_names
    if names is None and cfg.columns:
        names = list(cfg.columns)
    final_spec = spec.with_feature_names(names, source=f"{spec.source}; columns of {Path(cfg.data).name}")
    best = next((h for h in history if h["epoch"] == best_epoch), None)
    extra: dict[str, Any] = {
        "arch_kwargs": dict(headed.arch_kwargs),
        "input_spec": final_spec.to_dict(),
        "task": task.kind,
        "target": cfg.target,
        "training": {"data": str(cfg.data), "epochs": len(history), "loss": task.loss, "lr": cfg.lr,
                     "batch_size": cfg.batch_size, "seed": cfg.seed},
        "metrics": best or {},
    }
    if headed.head_record is not None:
        extra["head"] = headed.head_record
    if task.kind == "regress":
        extra["output_names"] = [cfg.target]
    if headed.change is not None:
        extra["head_change"] = str(headed.change)
    save_bundle(module, out_dir, architecture=handle.architecture, preprocess={}, label_names=task.classes,
                extra=extra)
    if not headed.takes_num_classes:
        # The class takes no num_classes argument: the bundle rebuilds its head from the recorded head instead.
        path = out_dir / CONFIG_NAME
        config = json.loads(path.read_text(encoding="utf-8"))
        config["num_classes"] = None
        config.get("pretrained_cfg", {}).pop("num_classes", None)
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # checkpoints/last.pt stays (a table model's state is small): --resume --epochs N extends the run later.


# --- evaluate ------------------------------------------------------------------------------------------------------------------


@dataclass
class RegressionReport:
    """Regression metrics of a model on a table: MAE, RMSE, R² (per output averaged over outputs)."""

    rows: int
    target: str
    mae: float
    rmse: float
    r2: float
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (f"{self.model + ': ' if self.model else ''}{self.rows} rows, target {self.target!r}: "
                f"MAE {self.mae:.6g}, RMSE {self.rmse:.6g}, R² {self.r2:.4f}")


def evaluate_table(model: Model, data: str | os.PathLike[str], *, target: str | None = None,
                   columns: Sequence[str] | None = None, batch_size: int = 1024, allow_nan: bool = False,
                   task: str | None = None, progress: bool = False) -> Any:
    """Evaluate a non-image model on a table: MAE/RMSE/R² (:class:`RegressionReport`) for regression, otherwise
    :class:`pthkit.tasks.evaluate.EvaluationReport` (accuracy, per-class F1, confusion, ECE).

    ``target`` defaults to the bundle's recorded target column. Classification maps the target values to the
    model's labels (or to output indices when the model has no labels). Streams the table through the engine.
    """
    from pthkit.data.tables import open_input
    from pthkit.engine import Engine, TorchBackend, first_tensor
    from pthkit.tasks.outputs import _model_name

    column = target or (model.config.get("pthkit", {}) or {}).get("target")
    if not isinstance(column, str):
        raise PreprocessError.build("--target", received="no target column", expected="the column with the labels",
                                    hint="Pass --target COL.")
    kind = task or model.task
    if kind == "raw":
        kind = "classify" if model.labels else "regress"
    target_map = None
    classes: list[str] | None = None
    if kind == "classify":
        classes = list(model.labels) if model.labels else None
        if classes is None:
            head_width = _output_width(model)
            classes = [str(i) for i in range(head_width)]
        target_map = {c: i for i, c in enumerate(classes)}
    source = open_input(str(data), spec=model.input_spec, model_name=_model_name(model.architecture), columns=columns,
                        allow_nan=allow_nan, target=column, target_map=target_map)
    if model.runner is None and model.module is None:
        raise PreprocessError.build("evaluate", received=f"{model.architecture} without a module",
                                    expected="a loaded model")
    runner: Any = model.runner if model.runner is not None else TorchBackend(model.module,  # type: ignore[arg-type]
                                                                            channels_last=False)
    engine = Engine(runner, batch_size=batch_size, progress=progress, unit="rows", label="evaluate")
    if kind == "classify":
        from pthkit.tasks.evaluate import compute_metrics

        outs, tgts = [], []
        for batch, out in engine.run(source):
            if out is not None:
                outs.append(first_tensor(out).float().flatten(1).cpu())
                tgts.append(batch.targets.long())
        assert classes is not None
        report = compute_metrics(torch.cat(outs), torch.cat(tgts), classes)
        report.model = model.architecture
        return report
    n = 0
    s_abs = s_sq = s_y = s_y2 = 0.0
    for batch, out in engine.run(source):
        if out is None:
            continue
        pred = first_tensor(out).double().flatten(1).cpu()
        tgt = batch.targets.double().reshape(pred.shape[0], -1)
        if tgt.shape[1] != pred.shape[1]:
            raise PreprocessError.build("evaluate", received=f"{pred.shape[1]} outputs per row",
                                        expected=f"{tgt.shape[1]} (the target column)")
        err = pred - tgt
        n += pred.shape[0]
        s_abs += float(err.abs().sum())
        s_sq += float((err**2).sum())
        s_y += float(tgt.sum())
        s_y2 += float((tgt**2).sum())
    if n == 0:
        raise DatasetError.build(str(data), received="no rows", expected="rows to evaluate")
    ss_tot = s_y2 - s_y * s_y / n
    return RegressionReport(rows=n, target=column, mae=s_abs / n, rmse=math.sqrt(s_sq / n),
                            r2=1.0 - s_sq / ss_tot if ss_tot > 0 else float("nan"), model=model.architecture)


def _output_width(model: Model) -> int:
    from pthkit.loading.head import find_head

    head = find_head(model.module) if model.module is not None else None
    if head is None:
        raise PreprocessError.build("evaluate", received="a model without labels or a findable head",
                                    expected="a classifier", hint="Pass --labels.")
    return head.out_features
