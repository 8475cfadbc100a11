"""Fine-tune a pretrained weights file on an image folder or CSV, and save the best model as a bundle.

The head is replaced for the dataset's classes (partial load: everything else comes from the file), optionally
trained alone first (``freeze_epochs``: linear probe), then the whole network. AdamW with per-group learning rates
(head ``lr``, backbone ``lr * backbone_lr_scale``; no weight decay on biases and norms), linear warm-up then cosine
decay per optimizer step, optional bf16/fp16 autocast, gradient accumulation, balanced class weights, early stopping.

Nothing is lost: ``out_dir/checkpoints/last.pt`` is written atomically at the end of every epoch and every
``save_every_steps`` optimizer steps, with model, optimizer, scheduler, scaler, counters, logs and RNG states, as
plain tensors/numbers (read back with ``torch.load(weights_only=True)``). The order of batches and each sample's
augmentation are functions of (seed, epoch, index) (see :mod:`pthkit.data.splits`), so ``resume=True`` skips the
batches already consumed and ends with the same weights as an uninterrupted run.

Under ``torchrun --nproc-per-node N`` the same call trains with DistributedDataParallel (gloo on CPU, nccl on GPU);
metrics are all-reduced; only rank 0 writes checkpoints, logs and the bundle.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
import torch
from torch import nn

from pthkit.cli._safe_text import safe_text
from pthkit.data.splits import (
    DataSplit,
    ImageItemsDataset,
    SeededSampler,
    ShardSampler,
    collate_skip_failed,
    load_training_data,
)
from pthkit.errors import PthkitError, TrainingError
from pthkit.tasks import _distributed as distributed
from pthkit.tasks._results import EpochHistory

__all__ = ["finetune", "FinetuneConfig", "FinetuneResult", "AmpMode", "ClassWeightsMode", "Monitor",
           "CHECKPOINT_NAME", "BEST_NAME", "load_training_checkpoint"]

AmpMode = Literal["bf16", "fp16"]
ClassWeightsMode = Literal["none", "balanced"]
Monitor = Literal["val_acc", "val_loss"]

CHECKPOINT_NAME = "checkpoints/last.pt"
BEST_NAME = "checkpoints/best.safetensors"
_CKPT_FORMAT = "pthkit-finetune-v1"


@dataclass
class FinetuneConfig:
    """Every argument that decides the training result (stored in checkpoints and in the bundle's config)."""

    weights: str
    data: str
    arch: str | None = None
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    freeze_epochs: int = 0
    val_split: float = 0.2
    seed: int = 0
    size: int | list[int] | None = None  # square side, or [H, W]
    amp: str | None = None
    accum_steps: int = 1
    class_weights: str = "none"
    label_smoothing: float = 0.1
    hflip: float = 0.5
    crop_scale_min: float = 0.08
    color_jitter: float = 0.4
    patience: int | None = None
    monitor: str = "val_acc"
    save_every_steps: int | None = None

    def check(self) -> None:
        def bad(what: str, received: Any, expected: str) -> PthkitError:
            return TrainingError.build(what, received=repr(received), expected=expected, hint="Fix the option.")

        if self.epochs < 1:
            raise bad("epochs", self.epochs, "at least 1")
        if self.batch_size < 1:
            raise bad("batch size", self.batch_size, "at least 1")
        if self.accum_steps < 1:
            raise bad("accum steps", self.accum_steps, "at least 1")
        if self.lr <= 0:
            raise bad("learning rate", self.lr, "a positive number")
        if self.amp not in (None, *get_args(AmpMode)):
            raise bad("amp", self.amp, "bf16 or fp16")
        if self.class_weights not in get_args(ClassWeightsMode):
            raise bad("class weights", self.class_weights, "none or balanced")
        if self.monitor not in get_args(Monitor):
            raise bad("monitor", self.monitor, "val_acc or val_loss")
        if not 0 <= self.freeze_epochs <= self.epochs:
            raise bad("freeze epochs", self.freeze_epochs, f"between 0 and epochs ({self.epochs})")
        if self.patience is not None and self.patience < 1:
            raise bad("patience", self.patience, "at least 1")
        if self.save_every_steps is not None and self.save_every_steps < 1:
            raise bad("save every steps", self.save_every_steps, "at least 1")
        sides = [self.size] if isinstance(self.size, int) else list(self.size or [])
        if self.size is not None and (len(sides) not in (1, 2) or any(isinstance(v, bool) or not isinstance(v, int)
                                                                      or v < 1 for v in sides)):
            raise bad("size", self.size, "a positive number of pixels or [H, W], or no --size for the model's own")


@dataclass
class FinetuneResult(EpochHistory):
    """What a fine-tuning run produced."""

    out_dir: Path
    architecture: str
    classes: list[str]
    best_epoch: int | None
    best_metric: float | None
    monitor: str
    history: list[dict[str, Any]]
    epochs_run: int
    stopped_early: bool
    resumed: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)
    elapsed_s: float = 0.0
    world_size: int = 1
    head_change: str | None = None  # "fc: 512 → 1000 replaced by 512 → 3" when the head was replaced
    evidence: list[str] = field(default_factory=list)  # how the weights were opened (identified as …, head …)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return d

    def __str__(self) -> str:
        best = self.best or {}
        lines = [f"Fine-tuned {self.architecture} on {len(self.classes)} classes: {self.epochs_run} epochs"
                 + (" (stopped early)" if self.stopped_early else "")
                 + f" in {self.elapsed_s:.1f} s, bundle in {self.out_dir}"]
        if best and "val_acc" not in best:
            lines.append(f"no validation images (every class too small to split): the bundle holds the last epoch "
                         f"({self.best_epoch}); add a val/ folder or more images to measure it")
        elif best:
            lines.append(f"best epoch {self.best_epoch}: val_acc {best.get('val_acc', float('nan')):.4f}, "
                         f"val_loss {best.get('val_loss', float('nan')):.4f}")
        if self.head_change:
            lines.append(f"classifier head: {self.head_change}")
        if self.skipped:
            lines.append(f"{len(self.skipped)} unreadable image(s) skipped")
        return "\n".join(lines)


# --- helpers ---------------------------------------------------------------------------------------------------------


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _normal_mode(path: Path) -> None:
    """Give a file the mode a plain ``open()`` would (0666 minus the umask): safetensors writes 0600."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _rng_state() -> dict[str, Any]:
    """Every RNG the loop consumes, as tensors and ints (torch.load(weights_only=True) reads it back)."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "python": {"version": int(py_version), "state": [int(v) for v in py_state], "gauss": py_gauss},
        # The data order has no generator state to save: it is a function of (seed, epoch) (SeededSampler).
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_training_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``last.pt`` written by :func:`finetune` (``weights_only=True``: plain data only)."""
    p = Path(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - truncated / foreign file
        raise TrainingError.build("training checkpoint", received=f"{p} ({' '.join(str(err).split())[:200]})",
                                  expected="a checkpoint written by pthkit finetune",
                                  hint="Start again without --resume (or point --out at the run's folder).") from err
    if not isinstance(state, dict) or state.get("format") != _CKPT_FORMAT:
        raise TrainingError.build("training checkpoint", received=f"{p} (not a pthkit finetune checkpoint)",
                                  expected=_CKPT_FORMAT, hint="Point --out at the folder of a pthkit finetune run.")
    return state


def _param_groups(model: nn.Module, head_names: set[str], cfg: FinetuneConfig) -> list[dict[str, Any]]:
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        is_head = name in head_names
        no_decay = p.ndim <= 1 or name.endswith(".bias")
        groups.setdefault((is_head, no_decay), []).append(p)
    out = []
    for (is_head, no_decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": cfg.lr if is_head else cfg.lr * cfg.backbone_lr_scale,
                    "weight_decay": 0.0 if no_decay else cfg.weight_decay, "head": is_head})
    return out


def _init_new_head(model: nn.Module, names: set[str]) -> None:
    """Small initial weights for a freshly created head: logits start near 0 and the loss near log(K).

    Library default inits (timm's EfficientNet: uniform ±1/sqrt(num_classes)) give logits of ±15 on pretrained
    features; the first steps then push large, noisy gradients into the pretrained backbone (common fine-tuning
    practice, e.g. BEiT/MAE, initializes the new head with a tiny std for this reason).
    """
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in names:
                if p.ndim >= 2:
                    nn.init.normal_(p, std=0.01)
                else:
                    nn.init.zeros_(p)


def _cosine_warmup(warmup: int, total: int):  # noqa: ANN202
    def factor(step: int) -> float:
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _class_weight_tensor(split: DataSplit, mode: str, device: torch.device) -> torch.Tensor | None:
    if mode != "balanced":
        return None
    counts = split.class_counts("train")
    n, k = sum(counts), len(counts)
    # sklearn's "balanced": n_samples / (n_classes * count); absent classes get weight 0
    return torch.tensor([n / (k * c) if c else 0.0 for c in counts], dtype=torch.float32, device=device)


def _write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    _atomic_write_bytes(out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())
    buf = io.StringIO()
    if history:
        keys = list(dict.fromkeys(k for h in history for k in h))
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    _atomic_write_bytes(out / "metrics.csv", buf.getvalue().encode())


class _Progress:
    """The epoch bar (loss, accuracy, img/s) on the one progress helper, :class:`pthkit.engine.ProgressBar`; log
    lines print above it. Rank 0 only; a no-op when disabled."""

    FIELDS = ("loss", "acc", "img/s")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from pthkit.engine import ProgressBar

            self.bar = ProgressBar("fine-tune", None, fields=self.FIELDS, transient=False, elapsed=True)
        return self

    def start(self, description: str, total: int, completed: int) -> None:
        if self.bar is not None:
            self.bar.update(description=description, total=total, completed=completed,
                            **{name: "-" for name in self.FIELDS})

    def update(self, advance: int, stats: dict[str, str] | None = None) -> None:
        if self.bar is not None:
            self.bar.advance(advance)
            if stats:
                self.bar.update(**stats)

    def log(self, message: str) -> None:
        if self.enabled:
            print(safe_text(message), file=sys.stderr, flush=True)  # rich's live display prints it above the bar

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()


def _validate(model: nn.Module, loader: Any, device: torch.device, amp: str | None,
              info: distributed.DistInfo, num_classes: int) -> dict[str, float]:
    """Validation through the one inference engine (:func:`pthkit.engine.evaluate_batches`), as evaluate/predict
    run the model; the engine hands the model back with its train/eval flags unchanged."""
    from pthkit.engine import evaluate_batches

    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    correct5 = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    k = min(5, num_classes)
    for logits, y in evaluate_batches(model, loader, amp=amp, device=device,  # type: ignore[arg-type]
                                      channels_last=device.type == "cuda"):
        logits, y = logits.to(device), y.to(device)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        correct5 += (logits.topk(k, dim=1).indices == y[:, None]).any(1).sum()
        count += y.numel()
    s = distributed.all_reduce_sum([loss_sum.item(), correct.item(), correct5.item(), float(count)], info)
    n = max(1.0, s[3])
    out = {"val_loss": s[0] / n, "val_acc": s[1] / n, "val_images": int(s[3])}
    if num_classes > 5:
        out["val_top5"] = s[2] / n
    return out


# Options a resumed run may change: the rest decide what the checkpoint's optimizer state and data order mean.
RESUMABLE = ("epochs", "patience", "save_every_steps")


def _resumed_config(stored: FinetuneConfig, given: dict[str, Any], *, epochs_done: int) -> FinetuneConfig:
    """The stored configuration with the options a resume may change applied; refuse any other difference."""
    changed = {k: v for k, v in given.items() if getattr(stored, k) != v}
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:
        shown = ", ".join(f"--{k.replace('_', '-')} {changed[k]!r} (run: {getattr(stored, k)!r})" for k in refused)
        raise TrainingError.build(
            "resume", received=shown, expected="the run's own values (stored in its checkpoint); a resume may "
            "change only " + ", ".join(f"--{k.replace('_', '-')}" for k in RESUMABLE),
            hint="Drop those options, or start a new run (--overwrite or another --out) to change them.")
    new_epochs = changed.get("epochs")
    if new_epochs is not None and new_epochs < epochs_done:
        raise TrainingError.build("resume --epochs", received=f"{new_epochs}",
                                  expected=f"at least the {epochs_done} epochs the run already trained",
                                  hint="Pass a larger --epochs, or drop it to finish the run as planned.")
    values = asdict(stored)
    values.update(changed)
    return FinetuneConfig(**values)


# --- the loop --------------------------------------------------------------------------------------------------------


def finetune(
    weights: str | os.PathLike | nn.Module,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    backbone_lr_scale: float | None = None,
    weight_decay: float | None = None,
    warmup_epochs: float | None = None,
    freeze_epochs: int | None = None,
    val_split: float | None = None,
    seed: int | None = None,
    size: int | tuple[int, int] | list[int] | None = None,
    amp: AmpMode | None = None,
    accum_steps: int | None = None,
    class_weights: ClassWeightsMode | None = None,
    label_smoothing: float | None = None,
    hflip: float | None = None,
    crop_scale_min: float | None = None,
    color_jitter: float | None = None,
    patience: int | None = None,
    monitor: Monitor | None = None,
    save_every_steps: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    keep_checkpoint: bool = False,
    workers: int | None = None,
    device: str = "auto",
    trust: bool = False,
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune ``weights`` on ``data`` and write the best model as a bundle in ``out_dir``.

    ``weights`` is a weights file (architecture identified unless ``arch`` is given; ``arch_kwargs`` such as
    ``{"drop_rate": 0.2}`` go to the constructor) or an ``nn.Module`` (trained in place). The file is loaded
    strictly and the head replaced for the data's classes (:mod:`pthkit.loading.head`): a wrong ``arch`` is a
    :class:`~pthkit.errors.LoadError` before any training.
    Every training option left ``None`` takes its default (:class:`FinetuneConfig`).
    ``batch_size`` is the global batch per optimizer micro-step (split across ``torchrun`` processes);
    the effective batch is ``batch_size * accum_steps``.

    ``resume=True`` continues ``out_dir``'s last checkpoint with the configuration stored there. Of the options,
    only ``epochs`` (to extend the run; the cosine schedule is stretched to the new length), ``patience`` and
    ``save_every_steps`` may change; any other option given with a value unlike the stored one is refused
    (TrainingError), never ignored.

    The folder ends with one copy of the weights (``model.safetensors``) next to ``config.json`` and the metrics
    logs; the training checkpoint (``checkpoints/``) is removed once the bundle is written, unless
    ``keep_checkpoint`` (needed to extend the run later with ``resume``).
    """
    t_start = time.perf_counter()
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    best_path = out / BEST_NAME
    weights_name = weights if not isinstance(weights, nn.Module) else f"<{type(weights).__name__} object>"
    given = {k: v for k, v in dict(
        epochs=epochs, batch_size=batch_size, lr=lr, backbone_lr_scale=backbone_lr_scale,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, freeze_epochs=freeze_epochs, val_split=val_split,
        seed=seed, size=_size_value(size), amp=amp, accum_steps=accum_steps, class_weights=class_weights,
        label_smoothing=label_smoothing, hflip=hflip, crop_scale_min=crop_scale_min, color_jitter=color_jitter,
        patience=patience, monitor=monitor, save_every_steps=save_every_steps, arch=arch,
        arch_kwargs=dict(arch_kwargs) if arch_kwargs else None,
    ).items() if v is not None}
    state: dict[str, Any] | None = None
    if resume:
        if not ckpt_path.is_file():
            done = (out / "model.safetensors").is_file()
            raise TrainingError.build(
                "resume", received=f"no checkpoint at {ckpt_path}" + (" (that run finished and its checkpoint was "
                                                                      "removed)" if done else ""),
                expected="the out folder of an earlier pthkit finetune run",
                hint=("Pass --keep-checkpoint to keep a finished run resumable; start a new run with --overwrite "
                      "or another --out." if done else
                      "Run without --resume to start, or point --out at the run's folder."))
        state = load_training_checkpoint(ckpt_path)
        stored = {k: v for k, v in state["config"].items() if k in FinetuneConfig.__dataclass_fields__}
        stored["weights"], stored["data"] = str(weights_name), str(data)  # paths may move; the rest must not
        cfg = _resumed_config(FinetuneConfig(**stored), given, epochs_done=len(state.get("history") or []))
    else:
        if ckpt_path.exists() and not overwrite:
            raise TrainingError.build("out folder", received=f"{out} (holds an earlier run's checkpoint)",
                                      expected="a new folder",
                                      hint="Pass --resume to continue that run, --overwrite to replace it, "
                                      "or another --out.")
        cfg = FinetuneConfig(weights=str(weights_name), data=str(data), **given)  # type: ignore[arg-type]
    cfg.check()
    if out.exists() and not out.is_dir():
        raise TrainingError.build("out folder", received=f"{out} (a file)", expected="a folder path",
                                  hint="Choose another --out.")
    if workers is not None and workers < 0:
        raise TrainingError.build("workers", received=repr(workers),
                                  expected="0 or more (0: load data in this process)", hint="Fix the option.")

    info = distributed.setup(device)
    try:
        return _run(weights, cfg, out, ckpt_path, best_path, state, info, workers, trust, progress, t_start,
                    keep_checkpoint)
    finally:
        distributed.cleanup(info)


def _run(weights: Any, cfg: FinetuneConfig, out: Path, ckpt_path: Path, best_path: Path,
         state: dict[str, Any] | None, info: distributed.DistInfo, workers: int | None, trust: bool,
         progress: bool, t_start: float, keep_checkpoint: bool) -> FinetuneResult:
    from safetensors.torch import load_model as st_load_model
    from safetensors.torch import save_model as st_save_model

    from pthkit.bundle import save_bundle
    from pthkit.engine.progress import RunCounters
    from pthkit.engine.progress import publish as publish_progress
    from pthkit.loading.head import open_with_classes
    from pthkit.preprocess import resolve_preprocess

    dev = info.device
    main = info.is_main
    # Model first, strictly with the file's own head: a non-fitting --arch fails here, before the data is read.
    headed = open_with_classes(weights, None, arch=cfg.arch, arch_kwargs=cfg.arch_kwargs or None, trust=trust,
                               device=str(dev))
    handle = headed.model
    if main:
        out.mkdir(parents=True, exist_ok=True)
    # Data: discovered (and every image decoded once) on rank 0, shared with the others.
    split = load_training_data(cfg.data, val_split=cfg.val_split, seed=cfg.seed) if main else None
    split = cast(DataSplit, distributed.broadcast_object(split, info))
    if state is not None and list(state["classes"]) != split.classes:
        raise TrainingError.build("resume", received=f"classes {split.classes}",
                                  expected=f"the checkpoint's classes {state['classes']}",
                                  hint="Resume with the same data the run started with.")
    num_classes = len(split.classes)

    # The head for the data's classes: same seed → same new head on every rank and in every run.
    _seed_all(cfg.seed)
    change = headed.set_classes(num_classes)
    model = headed.module.to(dev)
    if headed.head is None:
        raise TrainingError.build("classifier head", received=f"{handle.architecture} without a head",
                                  expected="a classifier", hint="Pass --arch for a classification architecture.")
    head_names = set(headed.head.keys) & {n for n, _ in model.named_parameters()}
    if change is not None:
        _init_new_head(model, head_names)
    if info.rank:
        # Each rank draws its own dropout / drop-path masks (rank 0 keeps the single-process stream); the weights
        # are the same everywhere (DDP broadcasts rank 0's at construction anyway).
        _seed_all(cfg.seed + info.rank)
    overrides: dict[str, Any] = {"label_names": list(split.classes)}
    if cfg.size:
        overrides["size"] = cfg.size if isinstance(cfg.size, int) else tuple(cfg.size)
    pre = resolve_preprocess(model, arch=handle.architecture, checkpoint=handle.checkpoint, overrides=overrides)
    train_tf = pre.train_transform(hflip=cfg.hflip, scale=(cfg.crop_scale_min, 1.0), color_jitter=cfg.color_jitter)
    eval_tf = pre.transform()

    per_rank_bs = max(1, cfg.batch_size // info.world_size)
    n_workers = workers if workers is not None else min(4, max(0, (os.cpu_count() or 1) - 1))
    # A private generator: creating a DataLoader iterator draws a worker base seed from it, and drawing from the
    # global RNG instead would shift dropout/drop-path randomness between an uninterrupted and a resumed run.
    loader_kw: dict[str, Any] = {"num_workers": n_workers, "collate_fn": collate_skip_failed,
                                 "pin_memory": dev.type == "cuda", "persistent_workers": n_workers > 0,
                                 "generator": torch.Generator().manual_seed(cfg.seed)}
    train_sampler = SeededSampler(len(split.train), seed=cfg.seed, rank=info.rank, world_size=info.world_size,
                                  batch_size=per_rank_bs)
    train_loader = torch.utils.data.DataLoader(ImageItemsDataset(split.train, train_tf), batch_size=per_rank_bs,
                                               sampler=train_sampler, **loader_kw)
    val_loader = None
    if split.val:
        val_loader = torch.utils.data.DataLoader(
            ImageItemsDataset(split.val, eval_tf), batch_size=per_rank_bs,
            sampler=ShardSampler(len(split.val), rank=info.rank, world_size=info.world_size), **loader_kw)

    batches_per_epoch = math.ceil(train_sampler.per_rank / per_rank_bs)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accum_steps)
    total_steps = steps_per_epoch * cfg.epochs
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))

    optimizer = torch.optim.AdamW(_param_groups(model, head_names, cfg), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine_warmup(warmup_steps, total_steps))
    scaler = torch.amp.GradScaler(dev.type, enabled=cfg.amp == "fp16")
    criterion = nn.CrossEntropyLoss(weight=_class_weight_tensor(split, cfg.class_weights, dev),
                                    label_smoothing=cfg.label_smoothing)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp or "")

    def amp_ctx() -> Any:
        if amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=dev.type, dtype=amp_dtype)

    # Counters (restored on resume).
    epoch, batch_in_epoch, global_step = 0, 0, 0
    sums = [0.0, 0.0, 0.0]  # train loss·n, correct, n (this rank, current epoch)
    history: list[dict[str, Any]] = []
    best_metric: float | None = None
    best_epoch: int | None = None
    bad_epochs = 0
    stopped_early = False
    epoch_time = 0.0  # training seconds spent in the current epoch so far
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        epoch, batch_in_epoch, global_step = state["epoch"], state["batch_in_epoch"], state["global_step"]
        sums = list(state["epoch_sums"]) if info.is_main else [0.0, 0.0, 0.0]
        history = list(state["history"])
        best_metric, best_epoch = state["best_metric"], state["best_epoch"]
        bad_epochs, stopped_early = state["bad_epochs"], state["stopped_early"]
        epoch_time = float(state.get("epoch_time", 0.0))
        _restore_rank_rng(state, info, bar_log=_stderr_line if main else None)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)

    def checkpoint() -> None:
        # Every rank's own random state (dropout / drop-path masks differ per rank), gathered on rank 0: a
        # collective, so every rank calls checkpoint() at the same steps.
        per_rank = distributed.gather_object(_rng_state(), info)
        if not main:
            return
        assert per_rank is not None
        payload = {
            "format": _CKPT_FORMAT, "config": asdict(cfg), "classes": split.classes,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "epoch": epoch, "batch_in_epoch": batch_in_epoch,
            "global_step": global_step, "epoch_sums": [float(v) for v in sums], "epoch_time": float(epoch_time),
            "history": history, "best_metric": best_metric, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
            "stopped_early": stopped_early, "rng": per_rank[0], "rng_per_rank": per_rank,
            "world_size": info.world_size,
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        _atomic_write_bytes(ckpt_path, buf.getvalue())

    if main and state is None and not history:
        checkpoint_dir = ckpt_path.parent
        checkpoint_dir.mkdir(parents=True, exist_ok=True)

    with _Progress(progress and main) as bar:
        for line in handle.evidence:  # how the weights were understood, before the first epoch
            bar.log(f"model: {line}")
        if split.skipped:
            bar.log(f"Skipped {len(split.skipped)} unreadable image(s):")
            for p, reason in split.skipped:
                bar.log(f"  {p}: {reason}")
        ddp_model: nn.Module = model
        phase: bool | None = None  # True while the backbone is frozen
        while epoch < cfg.epochs and not stopped_early:
            frozen = epoch < cfg.freeze_epochs
            if frozen != phase:
                for pname, param in model.named_parameters():
                    param.requires_grad_(not frozen or pname in head_names)
                if info.distributed:  # DDP fixes the set of trainable parameters when built: rebuild per phase
                    ddp_model = nn.parallel.DistributedDataParallel(
                        model, device_ids=[dev.index] if dev.type == "cuda" else None)
                phase = frozen
            ddp_model.train()
            train_sampler.set_epoch(epoch, skip=batch_in_epoch * per_rank_bs)
            bar.start(f"epoch {epoch + 1}/{cfg.epochs}" + (" (head only)" if frozen else ""),
                      total=batches_per_epoch, completed=batch_in_epoch)
            t0 = time.perf_counter()
            last_ui = 0.0
            loss_acc = torch.zeros((), dtype=torch.float64, device=dev)
            correct_acc = torch.zeros((), dtype=torch.float64, device=dev)
            count_acc = 0
            optimizer.zero_grad(set_to_none=True)
            # What Ctrl-C reports ("Interrupted after 7 of 12 batches of epoch 2/3"); --resume continues from the
            # last checkpoint.
            counters = RunCounters(batches_per_epoch, unit=f"batches of epoch {epoch + 1}/{cfg.epochs}")
            counters.add(batch_in_epoch)
            publish_progress(counters)
            for batch in train_loader:
                batch_in_epoch += 1
                counters.add(1)
                boundary = batch_in_epoch % cfg.accum_steps == 0 or batch_in_epoch == batches_per_epoch
                if batch is not None:
                    x, y = batch
                    x = x.to(dev, non_blocking=True)
                    y = y.to(dev, non_blocking=True)
                    if dev.type == "cuda":
                        x = x.contiguous(memory_format=torch.channels_last)
                    sync: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
                    if info.distributed and not boundary:  # accumulate locally; all-reduce at the boundary
                        sync = cast(nn.parallel.DistributedDataParallel, ddp_model).no_sync()
                    with sync:
                        with amp_ctx():
                            logits = ddp_model(x)
                            loss = criterion(logits.float(), y)
                        scaler.scale(loss / cfg.accum_steps).backward()
                    loss_acc += loss.detach() * y.numel()
                    correct_acc += (logits.detach().argmax(1) == y).sum()
                    count_acc += y.numel()
                if boundary:
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                    global_step += 1
                    if cfg.save_every_steps and global_step % cfg.save_every_steps == 0 \
                            and batch_in_epoch < batches_per_epoch:
                        sums = [sums[0] + loss_acc.item(), sums[1] + correct_acc.item(), sums[2] + count_acc]
                        loss_acc.zero_(), correct_acc.zero_()
                        count_acc = 0
                        epoch_time += time.perf_counter() - t0
                        checkpoint()
                        t0 = time.perf_counter()  # checkpoint writing is not training time
                now = time.perf_counter()
                if bar.enabled and (now - last_ui > 0.5 or batch_in_epoch == batches_per_epoch):
                    last_ui = now
                    n = sums[2] + count_acc
                    seen_t = epoch_time + now - t0
                    stats = {"loss": f"{(sums[0] + loss_acc.item()) / max(1, n):.4f}",
                             "acc": f"{(sums[1] + correct_acc.item()) / max(1, n):.3f}",
                             "img/s": f"{n * info.world_size / max(seen_t, 1e-9):.0f}"}
                    bar.update(1, stats)
                else:
                    bar.update(1)
            sums = [sums[0] + loss_acc.item(), sums[1] + correct_acc.item(), sums[2] + count_acc]
            epoch_time += time.perf_counter() - t0
            total = distributed.all_reduce_sum(sums, info)
            record: dict[str, Any] = {
                "epoch": epoch + 1, "step": global_step, "frozen": frozen,
                "train_loss": total[0] / max(1.0, total[2]), "train_acc": total[1] / max(1.0, total[2]),
                "train_images": int(total[2]),
                "train_img_per_s": total[2] / max(epoch_time, 1e-9),
                "lr": optimizer.param_groups[-1]["lr"],
            }
            if val_loader is not None:
                # the bare module: no DDP collectives, so ranks may see different numbers of val batches
                record.update(_validate(model, val_loader, dev, cfg.amp, info, num_classes))
            record["time_s"] = epoch_time
            history.append(record)
            metric = record.get(cfg.monitor)
            if metric is None:  # no validation images: the last epoch is the best we know
                improved = True
            elif cfg.monitor == "val_loss":
                improved = best_metric is None or metric < best_metric
            else:
                improved = best_metric is None or metric > best_metric
            if improved:
                best_metric, best_epoch, bad_epochs = metric, epoch + 1, 0
                if main:
                    best_path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = best_path.with_name(f".{best_path.name}.tmp")
                    st_save_model(model, str(tmp))
                    _normal_mode(tmp)
                    os.replace(tmp, best_path)
            else:
                bad_epochs += 1
                if cfg.patience is not None and bad_epochs >= cfg.patience:
                    stopped_early = True
            if main:
                bar.log(_epoch_line(record))
            epoch += 1
            batch_in_epoch = 0
            sums = [0.0, 0.0, 0.0]
            epoch_time = 0.0
            if main:
                _write_logs(out, history)
            checkpoint()

    publish_progress(None)  # training is over: Ctrl-C from here on interrupts no batch
    result_model = model
    if main:
        if best_path.is_file():
            st_load_model(result_model, str(best_path), device=str(dev))
        best_record = next((h for h in history if h["epoch"] == best_epoch), None)
        extra: dict[str, Any] = {
            "source_sha256": handle.source.sha256(), "source_path": str(handle.source.path or cfg.weights),
            "key_map": dict(handle.key_map), "arch_kwargs": dict(headed.arch_kwargs),
            "training": asdict(cfg), "metrics": best_record, "data": split.to_dict(),
            "load_report": handle.report.to_dict() if handle.report is not None else None,
            "world_size": info.world_size, "evidence": list(handle.evidence),
        }
        if change is not None:
            extra["head_change"] = str(change)
        if headed.head_record is not None:
            extra["head"] = headed.head_record
        save_bundle(result_model, out, architecture=handle.architecture, preprocess=pre,
                    label_names=split.classes, extra=extra)
        if not keep_checkpoint:
            _remove_training_state(ckpt_path, best_path)
    distributed.barrier(info)
    return FinetuneResult(
        out_dir=out, architecture=handle.architecture, classes=split.classes, best_epoch=best_epoch,
        best_metric=best_metric, monitor=cfg.monitor, history=history, epochs_run=len(history),
        stopped_early=stopped_early, resumed=state is not None, skipped=split.skipped,
        elapsed_s=time.perf_counter() - t_start, world_size=info.world_size,
        head_change=str(change) if change is not None else None, evidence=list(handle.evidence),
    )


def _remove_training_state(ckpt_path: Path, best_path: Path) -> None:
    """Drop the training checkpoint and the best-epoch copy once the bundle holds the weights (one copy kept)."""
    for path in (ckpt_path, best_path):
        path.unlink(missing_ok=True)
    for folder in {ckpt_path.parent, best_path.parent}:
        with contextlib.suppress(OSError):  # not empty (the user's own files): keep it
            folder.rmdir()


def _size_value(size: int | tuple[int, int] | list[int] | None) -> int | list[int] | None:
    """One stored form: an int for a square size, [H, W] otherwise (checkpoints and bundles compare it)."""
    if size is None or isinstance(size, int):
        return size
    sides = list(size)
    return sides[0] if len(sides) == 2 and sides[0] == sides[1] else sides


def _stderr_line(message: str) -> None:
    print(safe_text(message), file=sys.stderr)  # paths and reasons come from files


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _restore_rank_rng(state: dict[str, Any], info: distributed.DistInfo, bar_log: Any = None) -> None:
    """Restore this rank's own random state from a checkpoint (``rng_per_rank``); rank 0's for one process.

    A checkpoint written with another number of processes cannot give every rank its stream back: ranks it has no
    state for keep their fresh ``seed + rank`` stream (said once, on rank 0).
    """
    per_rank = state.get("rng_per_rank")
    if isinstance(per_rank, list) and info.rank < len(per_rank):
        _set_rng_state(per_rank[info.rank])
    elif info.rank == 0:
        _set_rng_state(state["rng"])
    saved_world = int(state.get("world_size", len(per_rank) if isinstance(per_rank, list) else 1))
    if saved_world != info.world_size and info.is_main and bar_log is not None:
        bar_log(f"note: checkpoint written by {saved_world} process(es), resumed with {info.world_size}: the data "
                "order and random streams differ from an uninterrupted run")


def _epoch_line(r: dict[str, Any]) -> str:
    parts = [f"epoch {r['epoch']}", f"train_loss {r['train_loss']:.4f}", f"train_acc {r['train_acc']:.4f}"]
    if "val_acc" in r:
        parts += [f"val_loss {r['val_loss']:.4f}", f"val_acc {r['val_acc']:.4f}"]
    parts.append(f"{r['train_img_per_s']:.0f} img/s")
    return "  ".join(parts)
