"""The seams between training/evaluation/bundles and the rest of pthkit, in one place.

Fine-tuning, evaluation and bundles need four things other modules own: loading a weights file into an
architecture (``pthkit.loading.load_model``), resolving preprocessing (``pthkit.preprocess.resolve_preprocess``),
building an architecture by name (``pthkit.architectures``) and decoding an image (``pthkit.images.open_image``).
They are called here, through the contracts in ``docs/architecture.md``, and nowhere else in this package.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pthkit.errors import ArchitectureError, InputNotFoundError, TrainingError

__all__ = [
    "LoadedModel",
    "load_for_training",
    "resolve_for_model",
    "preprocess_from_config",
    "pretrained_cfg_of",
    "train_transform_of",
    "build_architecture",
    "arch_names",
    "open_rgb",
    "sha256_of",
    "timm_name_of",
]


@dataclass
class LoadedModel:
    """A model ready for training plus what the bundle needs to describe where it came from."""

    model: nn.Module
    arch: str  # pthkit name, with source prefix when known ("timm:resnet18")
    timm_name: str | None  # name timm.create_model understands, or None (torchvision-only …)
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    key_map: dict[str, str] = field(default_factory=dict)
    reinitialized: list[str] = field(default_factory=list)
    source_sha256: str | None = None
    source_path: str | None = None
    report: Any = None  # the LoadReport
    checkpoint: Any = None  # the Checkpoint, for preprocessing resolution

    def report_dict(self) -> dict[str, Any]:
        if self.report is not None and hasattr(self.report, "to_dict"):
            return self.report.to_dict()
        return {"architecture": self.arch, "reinitialized": self.reinitialized}


def sha256_of(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def timm_name_of(model: nn.Module) -> str | None:
    """The timm architecture name a model was built from, when it is a timm model."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("architecture"):
        return str(cfg["architecture"])
    return None


def arch_names(arch: str, model: nn.Module | None = None) -> tuple[str, str | None]:
    """(pthkit name, timm name or None) of an architecture name; a name the registry does not know is kept as is."""
    from pthkit.architectures import get_architecture

    try:
        a = get_architecture(arch)
    except ArchitectureError:
        return arch, (timm_name_of(model) if model is not None else None)
    timm_name = a.timm_name
    if timm_name is None and a.source != "torchvision" and model is not None:
        timm_name = timm_name_of(model)
    return a.name, timm_name


def build_architecture(arch: str, **kwargs: Any) -> nn.Module:
    """Build an architecture by pthkit name (registry: timm, torchvision, user code, entry points)."""
    from pthkit.architectures import build_model

    return build_model(arch, **kwargs)


def load_for_training(
    weights: str | os.PathLike | nn.Module,
    *,
    arch: str | None,
    num_classes: int,
    device: torch.device | str = "cpu",
    trust: bool = False,
    arch_kwargs: dict[str, Any] | None = None,
) -> LoadedModel:
    """Load ``weights`` with a fresh ``num_classes`` head: everything that fits is loaded, the head re-initialized.

    ``weights`` may be a file (identified when ``arch`` is None) or an already-built ``nn.Module``, whose head is
    reset in place to ``num_classes`` (timm models) — useful from Python and in tests.
    """
    if isinstance(weights, nn.Module):
        model = weights
        timm_name = timm_name_of(model)
        name = arch or (f"timm:{timm_name}" if timm_name else type(model).__name__)
        reinit: list[str] = []
        if hasattr(model, "reset_classifier") and getattr(model, "num_classes", None) != num_classes:
            model.reset_classifier(num_classes)
            clf = model.get_classifier()
            reinit = [f"{n}.{k}" for n, m in model.named_modules() if m is clf for k in m.state_dict()]
        return LoadedModel(model=model.to(device), arch=name, timm_name=timm_name, reinitialized=reinit,
                           arch_kwargs={**(arch_kwargs or {}), "num_classes": num_classes})
    from pthkit.loading import load_model

    path = Path(weights)
    if not path.exists():
        raise InputNotFoundError.build("weights file", received=str(path), expected="an existing weights file",
                                       hint="Check the path.")
    model, report = load_model(path, arch, arch_kwargs=arch_kwargs, num_classes=num_classes, partial=True,
                               device=str(device), trust=trust)
    # partial=True re-initializes the head; anything else that did not fit (a wrong --arch) would silently turn
    # fine-tuning into training from scratch, so refuse it.
    blocking = list(getattr(report, "blocking", None) or [])
    if blocking:
        raise TrainingError.build(
            f"weights {path.name}", received=f"{len(blocking)} tensors that do not fit {report.architecture}: "
            f"{report.problem_summary()}", expected="every tensor but the classifier head to load",
            hint="Check --arch (pthkit identify FILE ranks the architectures that fit).")
    name, timm_name = arch_names(getattr(report, "architecture", None) or arch or type(model).__name__, model)
    cand = getattr(report, "candidate", None)
    key_map = dict(getattr(cand, "key_map", None) or {}) or dict(getattr(report, "remapped", None) or {})
    kwargs = dict(getattr(report, "kwargs", None) or {})
    kwargs.update(arch_kwargs or {})
    kwargs["num_classes"] = num_classes
    return LoadedModel(
        model=model, arch=name, timm_name=timm_name, arch_kwargs=kwargs, key_map=key_map,
        reinitialized=list(getattr(report, "reinitialized", []) or []),
        source_sha256=sha256_of(path) if path.is_file() else None, source_path=str(path), report=report,
        checkpoint=getattr(report, "checkpoint", None),
    )


# --- preprocessing ---------------------------------------------------------------------------------------------------


def resolve_for_model(
    model: nn.Module, *, arch: str | None = None, checkpoint: Any = None, size: int | None = None,
    label_names: list[str] | None = None,
) -> Any:
    """Preprocessing for a freshly loaded model; ``size`` and ``label_names`` act like the ``--size``/``--labels`` flags."""
    from pthkit.preprocess import resolve_preprocess

    flags = {"size": int(size) if size else None, "label_names": list(label_names) if label_names else None}
    return resolve_preprocess(model, arch=arch, checkpoint=checkpoint, overrides=flags)


def preprocess_from_config(model: nn.Module | None, config: dict[str, Any]) -> Any:
    """Preprocessing stored in a bundle's ``config.json``."""
    from pthkit.preprocess import resolve_preprocess

    return resolve_preprocess(model, bundle_config=config)


def pretrained_cfg_of(preprocess: Any) -> dict[str, Any]:
    """timm ``pretrained_cfg`` fields (input_size, interpolation, crop_pct, crop_mode, mean, std) of a preprocess."""
    if isinstance(preprocess, dict):
        cfg = dict(preprocess)
    else:
        cfg = dict(preprocess.to_timm_pretrained_cfg())
    for k in ("input_size", "mean", "std"):
        if cfg.get(k) is not None:
            cfg[k] = list(cfg[k])
    return cfg


def train_transform_of(preprocess: Any, **aug: Any):  # noqa: ANN201 - a timm/torchvision transform
    """Training augmentation: timm ``create_transform(is_training=True, **aug)`` with the resolved preprocessing."""
    return preprocess.train_transform(**aug)


# --- images ----------------------------------------------------------------------------------------------------------


def open_rgb(path: str | os.PathLike):  # noqa: ANN201 - PIL.Image.Image
    """Decode one image to RGB (EXIF applied, every mode); raises ImageError."""
    from pthkit.images import open_image

    return open_image(path)
