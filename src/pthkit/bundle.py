"""Bundles: a folder that carries the weights, the architecture, the preprocessing and the labels together.

Layout (timm's Hugging Face hub layout, so ``timm.create_model("local-dir:DIR", pretrained=True)`` loads it)::

    DIR/model.safetensors   weights (safetensors.torch.save_model: shared/tied tensors handled)
    DIR/config.json         {"architecture": <timm name>, "num_classes", "num_features", "label_names",
                             "model_args", "pretrained_cfg": {input_size, interpolation, crop_pct, crop_mode, mean,
                             std, num_classes, ...}, "pthkit": {...}}

The ``pthkit`` section records what timm's layout has no place for: the pthkit architecture name (with its source
prefix) and constructor arguments, the sha256 of the file the weights came from, the key map used to load it, the
full preprocessing (channel order, scale, provenance), training arguments and metrics, the pthkit version, and
whether timm can load the bundle at all (torchvision-only architectures cannot).

Bundles are written atomically: into a temporary folder next to the target, then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pthkit.errors import BundleError, InputNotFoundError

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "is_bundle", "load_bundle", "read_bundle_config", "save_bundle"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
_BUNDLE_FILES = (WEIGHTS_NAME, CONFIG_NAME)


def is_bundle(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding ``model.safetensors`` and a ``config.json`` with an ``architecture``."""
    p = Path(path)
    if not (p.is_dir() and (p / WEIGHTS_NAME).is_file() and (p / CONFIG_NAME).is_file()):
        return False
    from pthkit.api import read_json_config

    try:
        cfg = read_json_config(p / CONFIG_NAME)
    except BundleError:
        return False
    section = cfg.get("pthkit")
    return "architecture" in cfg or (isinstance(section, dict) and "arch" in section)


def _jsonable(obj: Any) -> Any:
    """Plain JSON data: tuples → lists, paths/dtypes/devices → strings, tensors → numbers or lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "to_dict"):
        return _jsonable(obj.to_dict())
    if hasattr(obj, "item"):
        try:
            return obj.item()
        except (TypeError, ValueError):
            pass
    return str(obj)


def _num_features(model: nn.Module) -> int | None:
    nf = getattr(model, "num_features", None)
    if isinstance(nf, int):
        return nf
    # torchvision-style heads: the input width of the last Linear layer
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last.in_features if last is not None else None


def _num_classes(model: nn.Module) -> int | None:
    nc = getattr(model, "num_classes", None)
    if isinstance(nc, int):
        return nc
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return last.out_features if last is not None else None


def _timm_can_build(name: str | None) -> bool:
    if not name:
        return False
    import timm

    return timm.is_model(name)


def save_bundle(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    architecture: str,
    preprocess: Any,
    label_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as a bundle folder (``model.safetensors`` + ``config.json``); return the folder.

    ``architecture`` is the pthkit name (``"timm:resnet18"``, ``"torchvision:resnet18"``) or a bare timm name.
    ``preprocess`` is a ``Preprocess`` (or a timm ``pretrained_cfg``-like dict). ``extra`` is merged into the
    ``pthkit`` section: ``source_sha256``, ``key_map``, ``arch_kwargs``, ``training``, ``metrics`` … Existing
    bundle files in ``out_dir`` are replaced; other files there (checkpoints, logs) are kept.
    """
    from safetensors.torch import save_model

    from pthkit import __version__

    out = Path(out_dir)
    extra = dict(extra or {})
    model = getattr(model, "module", model)  # DDP / DataParallel wrappers
    arch_name, timm_name = _names(architecture, model)
    timm_loadable = _timm_can_build(timm_name)
    num_classes = _num_classes(model)
    if label_names is None:
        label_names = getattr(preprocess, "label_names", None)
    if label_names is not None:
        label_names = [str(n) for n in label_names]
        if num_classes is not None and len(label_names) != num_classes:
            raise BundleError.build(
                "label names", received=f"{len(label_names)} names", expected=f"{num_classes} (the model's classes)",
                hint="Pass one label per output class.",
            )
    pcfg = _pretrained_cfg(preprocess)
    pcfg["num_classes"] = num_classes
    if label_names is not None:
        pcfg["label_names"] = label_names
    arch_kwargs = dict(extra.pop("arch_kwargs", {}) or {})
    model_args = {k: v for k, v in arch_kwargs.items() if k != "num_classes"}
    pthkit_section: dict[str, Any] = {
        "version": __version__,
        "arch": arch_name,
        "arch_kwargs": arch_kwargs,
        "timm_loadable": timm_loadable,
        "preprocess": _jsonable(preprocess.to_dict()) if hasattr(preprocess, "to_dict") else _jsonable(pcfg),
    }
    if not timm_loadable:
        pthkit_section["note"] = (
            f"timm cannot load this bundle ({arch_name} has no timm equivalent); load it with pthkit.load_bundle"
        )
    pthkit_section.update(_jsonable(extra))
    config: dict[str, Any] = {
        "architecture": timm_name if timm_loadable else arch_name,
        "num_classes": num_classes,
        "num_features": _num_features(model),
        "label_names": label_names,
        "pretrained_cfg": _jsonable(pcfg),
        "pthkit": pthkit_section,
    }
    if label_names is None:
        del config["label_names"]
    if model_args:
        config["model_args"] = _jsonable(model_args)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.bundle-", dir=out.parent))
    try:
        state_model = model
        save_model(state_model, str(tmp / WEIGHTS_NAME))
        (tmp / CONFIG_NAME).write_text(json.dumps(_jsonable(config), indent=2) + "\n", encoding="utf-8")
        _umask_modes(tmp, [tmp / name for name in _BUNDLE_FILES])  # mkdtemp: 0700, safetensors: 0600
        if not out.exists():
            os.replace(tmp, out)  # the whole folder appears at once
        else:
            if not out.is_dir():
                raise BundleError.build("bundle folder", received=f"{out} (a file)", expected="a folder path",
                                        hint="Choose another --out.")
            # Folder already exists (e.g. a training run's out_dir): replace each file atomically.
            for name in _BUNDLE_FILES:
                os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _umask_modes(folder: Path, files: list[Path]) -> None:
    """The modes a plain mkdir/open would give (0777/0666 minus the umask): bundles are meant to be shared."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for path in files:
        os.chmod(path, 0o666 & ~mask)


def _names(architecture: str, model: nn.Module) -> tuple[str, str | None]:
    """(pthkit name, timm name or None) for an architecture string; a name the registry does not know (user code)
    is kept as is."""
    from pthkit.architectures import get_architecture
    from pthkit.errors import ArchitectureError

    cfg = getattr(model, "pretrained_cfg", None)
    model_timm = str(cfg["architecture"]) if isinstance(cfg, dict) and cfg.get("architecture") else None
    try:
        arch = get_architecture(architecture)
    except ArchitectureError:
        return architecture, model_timm
    timm_name = arch.timm_name
    if timm_name is None and arch.source != "torchvision":
        timm_name = model_timm
    return arch.name, timm_name


def read_bundle_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a bundle folder, checked; BundleError names what is missing."""
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError.build("bundle", received=str(p), expected="an existing bundle folder",
                                       hint="Check the path.")
    missing = [n for n in _BUNDLE_FILES if not (p / n).is_file()]
    if missing:
        raise BundleError.build(
            "bundle", received=f"{p} without {', '.join(missing)}", expected="a folder with model.safetensors and "
            "config.json", hint="Create one with `pthkit bundle WEIGHTS --out DIR` or `pthkit finetune`.",
        )
    from pthkit.api import read_json_config

    cfg = read_json_config(p / CONFIG_NAME)
    section = cfg.get("pthkit")
    if section is not None and not isinstance(section, dict):
        raise BundleError.build("bundle config", received=f"{p / CONFIG_NAME} with a 'pthkit' {type(section).__name__}",
                                expected="a 'pthkit' object", hint="Recreate the bundle.")
    if not (cfg.get("architecture") or (section or {}).get("arch")):
        raise BundleError.build("bundle config", received=f"{p / CONFIG_NAME} without 'architecture'",
                                expected="a timm/pthkit config.json", hint="Recreate the bundle.")
    return cfg


def load_bundle(path: str | os.PathLike, *, device: str = "auto", arch: str | None = None,
                trust: bool = False) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Load a bundle folder: ``(model in eval mode on device, Preprocess, config dict)``.

    A thin view of :func:`pthkit.open` (which returns the whole typed handle). The weights are loaded strictly: a
    bundle whose weights do not fit its own config is an error, never a partial load. The architecture named in the
    config must be a registered one; a code spec (``my_model.py:Net``) is built only when ``arch`` names the same
    spec, or with ``trust``.
    """
    from pthkit.api import open as open_model

    handle = open_model(path, device=device, arch=arch, trust=trust)
    assert handle.module is not None
    return handle.module, handle.preprocess, handle.config


def read_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line) or a JSON list / {index: name} object (see
    :func:`pthkit.data.labels.read_labels`)."""
    from pthkit.data.labels import read_labels as read

    return read(path)


def _pretrained_cfg(preprocess: Any) -> dict[str, Any]:
    """timm ``pretrained_cfg`` fields (input_size, interpolation, crop_pct, crop_mode, mean, std) of a preprocess."""
    cfg = dict(preprocess) if isinstance(preprocess, dict) else dict(preprocess.to_timm_pretrained_cfg())
    for k in ("input_size", "mean", "std"):
        if cfg.get(k) is not None:
            cfg[k] = list(cfg[k])
    return cfg


def _sha256(path: str | os.PathLike) -> str:
    from pthkit.model import ModelSource

    digest = ModelSource("weights", Path(path)).sha256()
    assert digest is not None
    return digest


def bundle_weights(
    weights: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    label_names: list[str] | None = None,
    num_classes: int | None = None,
    overrides: dict[str, Any] | None = None,
    trust: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Turn any loadable weights file into a bundle; return ``(folder, config)``.

    The file is loaded strictly (identified when ``arch`` is None): a non-fitting ``arch`` is refused
    (:class:`~pthkit.errors.LoadError`), never bundled half-random. ``num_classes`` (or a ``label_names`` count)
    different from the file's head replaces the head (:mod:`pthkit.loading.head`; recorded in ``pthkit.head_change``).
    """
    from pthkit.loading.head import open_with_classes
    from pthkit.preprocess import resolve_preprocess

    # Re-bundling a bundle keeps its preprocessing and labels (not the architecture defaults); its labels only
    # while the head keeps its size.
    src_cfg = read_bundle_config(weights) if is_bundle(weights) else None
    if src_cfg is not None and (num_classes is not None or label_names is not None):
        src_cfg = {k: v for k, v in src_cfg.items() if k != "label_names"}
        src_cfg["pretrained_cfg"] = {k: v for k, v in (src_cfg.get("pretrained_cfg") or {}).items()
                                     if k != "label_names"}
    if num_classes is None and label_names is not None:
        num_classes = len(label_names)
    headed = open_with_classes(weights, num_classes, arch=arch, arch_kwargs=arch_kwargs, trust=trust, device="cpu")
    handle, model = headed.model, headed.module
    flags = dict(overrides or {})
    if label_names is not None:
        flags["label_names"] = list(label_names)
    pre: Any = {}  # a non-image model gets no image preprocessing: its input spec says what it takes
    if handle.input_spec.kind == "image":
        pre = resolve_preprocess(model, arch=handle.architecture, checkpoint=handle.checkpoint,
                                 bundle_config=src_cfg, overrides=flags or None)
    extra: dict[str, Any] = {
        "input_spec": handle.input_spec.to_dict(),
        "source_sha256": _sha256(weights) if Path(weights).is_file() else None, "source_path": str(weights),
        "key_map": dict(handle.key_map), "arch_kwargs": dict(headed.arch_kwargs),
        "load_report": handle.report.to_dict() if handle.report is not None else None,
    }
    if headed.change is not None:
        extra["head_change"] = str(headed.change)
    if headed.head_record is not None:
        extra["head"] = headed.head_record
    arch_name = _names(handle.architecture, model)[0]
    out = save_bundle(model, out_dir, architecture=arch_name, preprocess=pre, label_names=label_names, extra=extra)
    return out, read_bundle_config(out)
