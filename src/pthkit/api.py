"""``pthkit.open``: the one way in. Any source → a typed :class:`~pthkit.model.Model`.

Sources, resolved in this fixed order (timm's ``_resolve_pretrained_source`` habit: one place, one order):

1. an ``nn.Module`` instance (already built; pthkit only describes it);
2. an exported model (``.onnx`` …, :mod:`pthkit.export.openers`), or a path a plugin's opener claims
   (:func:`pthkit.model.register_opener`);
3. a pthkit bundle folder (``model.safetensors`` + ``config.json`` with a ``pthkit`` section or a timm architecture);
4. a Hugging Face ``transformers`` folder (``config.json`` with ``model_type`` + weights), built from the config,
   never with remote code;
5. a weights file or sharded folder (architecture identified from the tensors, or ``arch=``).

Nothing else in pthkit assembles a model, its preprocessing, its labels and its evidence.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pthkit.errors import BundleError, InputNotFoundError, PreprocessError
from pthkit.model import (
    TASKS,
    Model,
    ModelSource,
    OpenOptions,
    Task,
    registered_openers,
)

__all__ = ["open", "open_module"]

# A config.json larger than this is not a config (bundles' are a few KB; ImageNet label names ~30 KB).
_CONFIG_BUDGET = 8 * 1024 * 1024


def open(
    source: str | os.PathLike[str] | nn.Module,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    num_classes: int | None = None,
    trust: bool = False,
    device: str = "auto",
    select: str = "auto",
    key_map: dict[str, str] | str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    labels: list[str] | str | os.PathLike[str] | None = None,
    input_shape: tuple[int | None, ...] | str | None = None,
    task: Task | None = None,
    backend: str = "torch",
    check: bool = True,
) -> Model:
    """Open a model from any source pthkit reads and say how it was understood.

    - ``arch``: the architecture (registered name, ``file.py:Class``, ``package.module:factory``); identified from
      the weights when ``None`` (refused, naming the candidates, unless identification is confident).
    - ``arch_kwargs`` / ``num_classes``: constructor arguments (``num_classes`` different from the file's head
      builds a fresh head, reported as re-initialized).
    - ``trust``: allow code from the file to run (full unpickling, TorchScript, code specs named inside files).
    - ``overrides``: preprocessing values, as the CLI flags (``size``, ``mean``, ``std``, ``interpolation`` …).
    - ``labels``: class names (a list or a file: one per line, JSON list or {index: name}).
    - ``input_shape``: what one example looks like, overriding the inferred input spec (``"10"``, ``"3,32,32"``).
    - ``task``: ``"classify"``, ``"regress"`` or ``"raw"``; inferred when ``None``.
    - ``check``: run the post-load check on the packaged calibration photos for image classifiers identified by
      structure (its findings go to ``model.warnings``).
    """
    if task is not None and task not in TASKS:
        raise PreprocessError.build("task", received=repr(task), expected=" | ".join(TASKS))
    label_list = _read_labels(labels)
    shape = _parse_input_shape(input_shape)
    opts = OpenOptions(arch=arch, arch_kwargs=dict(arch_kwargs) if arch_kwargs else None, num_classes=num_classes,
                       trust=trust, device=device, select=select, key_map=key_map,
                       overrides=dict(overrides) if overrides else None, labels=label_list, input_shape=shape,
                       task=task, backend=backend, check=check)
    if isinstance(source, nn.Module):
        return open_module(source, opts)
    path = Path(source).expanduser()
    from pthkit.export.openers import is_exported, open_exported

    if is_exported(path):
        return _finish(open_exported(path, opts), opts)
    for predicate, opener in registered_openers():
        if predicate(path):
            return _finish(opener(path, opts), opts)  # task, labels and backend apply to plugin sources too
    if not path.exists():
        raise InputNotFoundError.build("model", received=f"{path} (not found)",
                                       expected="a weights file, a bundle folder, a Hugging Face folder or an export",
                                       hint="Check the path.")
    from pthkit.bundle import CONFIG_NAME, is_bundle

    if path.is_dir() and (path / CONFIG_NAME).exists():
        cfg = read_json_config(path / CONFIG_NAME)  # a broken config is an error here, never a reason to guess
        _refuse_half_bundle(path, cfg)
    if is_bundle(path):
        return _open_bundle(path, opts)
    from pthkit.hf import is_hf_folder, open_hf

    if is_hf_folder(path):
        return _finish(open_hf(path, opts), opts)
    return _open_weights(path, opts)


def _refuse_half_bundle(path: Path, cfg: dict[str, Any]) -> None:
    """A config that names a pthkit architecture but has no ``model.safetensors`` next to it is a broken bundle.

    Reading such a folder as loose weights would report "no weights files", which hides the real problem.
    """
    from pthkit.bundle import WEIGHTS_NAME

    # Another weights file (a timm hub folder's pytorch_model.bin, a shard index) makes it a weights folder instead.
    names_arch = "architecture" in cfg or isinstance(cfg.get("pthkit"), dict)
    weights = [p for p in itertools.islice(path.iterdir(), 10_000) if p.suffix in (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".json")
               and p.name != "config.json" and p.is_file()]
    if names_arch and "model_type" not in cfg and not (path / WEIGHTS_NAME).is_file() and not weights:
        raise BundleError.build("bundle", received=f"{path} (config.json without model.safetensors)",
                                expected="a bundle folder with model.safetensors and config.json",
                                hint="Re-create it with `pthkit bundle`, or point at the weights file itself.")


# --- sources ---------------------------------------------------------------------------------------------------------


def open_module(module: nn.Module, opts: OpenOptions | None = None) -> Model:
    """A handle for a module the caller built (not copied, not moved: the engine never mutates it)."""
    opts = opts or OpenOptions()
    from pthkit.loading import resolve_device

    name = opts.arch or _module_name(module)
    first = next(iter(module.parameters()), None)
    device = first.device if first is not None else resolve_device("cpu")
    model = Model(module=module, architecture=name, task="raw", input_spec=_input_spec(module, None, opts),
                  preprocess=None, labels=opts.labels, source=ModelSource("module"), device=device,
                  evidence=[f"module {type(module).__name__} given in memory"])
    return _finish(model, opts)


def _open_weights(path: Path, opts: OpenOptions) -> Model:
    from pthkit.loading import load_model

    module, report = load_model(path, opts.arch, arch_kwargs=opts.arch_kwargs, num_classes=opts.num_classes,
                                device=opts.device, key_map=opts.key_map, trust=opts.trust, select=opts.select)
    cand = report.candidate
    evidence: list[str] = []
    if opts.arch is None and cand is not None:
        evidence.append(f"identified as {report.architecture} (score {cand.score:.2f}, {cand.confidence} confidence)")
    else:
        evidence.append(f"architecture {report.architecture} (given)")
    for note in report.notes:
        if note.cause in ("equivalent", "prefix", "ema-copy", "classifier-head", "user-key-map"):
            evidence.append(f"{note.cause}: {note.detail}")
    if report.alignment:
        evidence.append(f"keys renamed by alignment ({report.alignment}): {len(report.remapped)} keys")
    kwargs = dict(report.kwargs)
    model = Model(module=module, architecture=report.architecture, task="raw",
                  input_spec=_input_spec(module, None, opts), preprocess=None, labels=opts.labels,
                  source=ModelSource("weights", path), report=report, evidence=evidence, arch_kwargs=kwargs,
                  key_map=dict(report.remapped), device=torch.device(report.device), checkpoint=report.checkpoint)
    if model.input_spec.kind == "image":
        from pthkit.preprocess import resolve_preprocess

        model.preprocess = resolve_preprocess(module, arch=report.architecture, checkpoint=report.checkpoint,
                                              overrides=_with_labels(opts))
        model.evidence.append(f"normalization: {_normalization_evidence(model)}")
        if opts.check and opts.arch is None:  # user overrides are checked too: a wrong --mean is what it catches
            _post_load_check(model)
    return _finish(model, opts)


def _open_bundle(path: Path, opts: OpenOptions) -> Model:
    from safetensors.torch import load_model as load_safetensors

    from pthkit.architectures import build_model
    from pthkit.architectures.from_file import architecture_from_file
    from pthkit.bundle import CONFIG_NAME, WEIGHTS_NAME, read_bundle_config
    from pthkit.loading import resolve_device

    cfg = read_bundle_config(path)
    section = cfg.get("pthkit") if isinstance(cfg.get("pthkit"), dict) else {}
    assert isinstance(section, dict)
    kwargs = dict(section.get("arch_kwargs") or cfg.get("model_args") or {})
    if not all(isinstance(k, str) for k in kwargs):
        raise BundleError.build("bundle arch_kwargs", received=repr(kwargs)[:80], expected="an object of named values")
    named = section.get("arch") or (f"timm:{cfg['architecture']}" if isinstance(cfg.get("architecture"), str)
                                    else cfg.get("architecture"))
    arch = architecture_from_file(named, where=str(path / CONFIG_NAME), explicit=opts.arch, trust=opts.trust)
    from pthkit.loading.head import accepts_num_classes

    if cfg.get("num_classes") is not None and accepts_num_classes(arch):  # user classes may take no num_classes
        kwargs["num_classes"] = int(cfg["num_classes"])
    if opts.arch_kwargs:
        kwargs.update(opts.arch_kwargs)
    module = build_model(arch, **kwargs)
    if isinstance(section.get("head"), dict):  # a head replaced for a class without num_classes (loading.head)
        from pthkit.loading.head import apply_head_record

        apply_head_record(module, section["head"])
    try:
        missing, unexpected = load_safetensors(module, str(path / WEIGHTS_NAME), strict=False)
    except Exception as err:
        raise BundleError.build("bundle weights", received=f"{path / WEIGHTS_NAME} ({' '.join(str(err).split())})",
                                expected=f"weights that fit {arch}", hint="Recreate the bundle.") from err
    if missing or unexpected:
        raise BundleError.build(
            "bundle weights", received=f"{len(missing)} missing / {len(unexpected)} unexpected keys "
            f"(e.g. {(list(missing) + list(unexpected))[:3]})", expected=f"exactly the keys of {arch}",
            hint="The bundle's config.json does not describe its weights; recreate the bundle.")
    device = resolve_device(opts.device)
    module = module.to(device).eval()
    labels = opts.labels or _labels_from_config(cfg)
    spec_data = section.get("input_spec")
    from pthkit.input_spec import InputSpec

    spec = InputSpec.from_dict(spec_data) if isinstance(spec_data, dict) and opts.input_shape is None \
        else _input_spec(module, None, opts)
    model = Model(module=module, architecture=arch, task="raw", input_spec=spec, preprocess=None, labels=labels,
                  source=ModelSource("bundle", path), config=cfg, arch_kwargs=kwargs, device=device,
                  evidence=[f"bundle {path.name}: {arch}"],
                  output_names=list(section["output_names"]) if isinstance(section.get("output_names"), list) else None)
    if isinstance(section.get("task"), str) and section["task"] in TASKS:
        model.task = section["task"]
    if spec.kind == "image":
        from pthkit.preprocess import resolve_preprocess

        model.preprocess = resolve_preprocess(module, bundle_config=cfg, overrides=_with_labels(opts, labels))
    return _finish(model, opts)


# --- shared finishing: input spec, task, labels ------------------------------------------------------------------------


def _finish(model: Model, opts: OpenOptions) -> Model:
    """Decide what the outputs mean (task) and attach the labels, the same way for every source."""
    if model.preprocess is not None and model.preprocess.label_names and model.labels is None:
        model.labels = list(model.preprocess.label_names)
    if opts.task is not None:
        model.task = opts.task
        model.evidence.append(f"task {opts.task} (given)")
    elif model.task == "raw" and (model.labels or (model.is_image_model and model.module is not None
                                                   and _has_classifier(model))):
        model.task = "classify"
    if opts.backend not in ("torch", None):
        from pthkit.engine.auto_backend import apply_backend

        apply_backend(model, opts.backend)
    return model


def _input_spec(module: nn.Module, preprocess: Any, opts: OpenOptions) -> Any:
    from pthkit.input_spec import infer_input_spec, spec_from_shape

    if opts.input_shape is not None:
        return spec_from_shape(opts.input_shape, source="input_shape argument")
    return infer_input_spec(module, preprocess=preprocess)


def _has_classifier(model: Model) -> bool:
    report = model.report
    if report is not None and isinstance(report.kwargs.get("num_classes"), int):
        return int(report.kwargs["num_classes"]) > 0
    n = model.config.get("num_classes")
    if isinstance(n, int):
        return n > 0
    n_module = getattr(model.module, "num_classes", None)
    return isinstance(n_module, int) and n_module > 0


def _normalization_evidence(model: Model) -> str:
    pre = model.preprocess
    if pre is None:
        return "none (not an image model)"
    return f"{pre.normalization_name} ({pre.sources.get('mean', 'default')})"


def _post_load_check(model: Model) -> None:
    """Run the model once on the packaged calibration photos; what looks wrong goes to ``model.warnings``."""
    from pthkit.preprocess import check_model_sane

    assert model.module is not None and model.preprocess is not None
    messages = check_model_sane(model.module, model.preprocess)
    model.warnings.extend(f"post-load check on sample photos: {m}" for m in messages)
    model.evidence.append("post-load check on sample photos: " + ("passed" if not messages else f"{len(messages)} warning(s)"))


def _with_labels(opts: OpenOptions, labels: list[str] | None = None) -> dict[str, Any] | None:
    values = dict(opts.overrides or {})
    names = opts.labels or labels
    if names is not None:
        values["label_names"] = list(names)
    return values or None


def _labels_from_config(cfg: dict[str, Any]) -> list[str] | None:
    names = cfg.get("label_names") or (cfg.get("pretrained_cfg") or {}).get("label_names")
    if isinstance(names, list) and all(isinstance(n, (str, int)) for n in names):
        return [str(n) for n in names]
    return None


def _module_name(module: nn.Module) -> str:
    cfg = getattr(module, "pretrained_cfg", None)
    if isinstance(cfg, dict) and isinstance(cfg.get("architecture"), str):
        return f"timm:{cfg['architecture']}"
    return type(module).__name__


def _read_labels(labels: list[str] | str | os.PathLike[str] | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, (list, tuple)):
        return [str(n) for n in labels]
    from pthkit.data.labels import read_labels

    return read_labels(labels)


def _parse_input_shape(shape: tuple[int | None, ...] | str | None) -> tuple[int | None, ...] | None:
    if shape is None:
        return None
    from pthkit.input_spec import parse_input_shape

    return parse_input_shape(shape)


def read_json_config(path: Path) -> dict[str, Any]:
    """A JSON object from ``path`` with a size budget; typed errors for every way it can be wrong."""
    try:
        if not path.is_file():
            raise BundleError.build("config", received=f"{path} (not a regular file)", expected="a JSON file")
        size = path.stat().st_size
        if size > _CONFIG_BUDGET:
            raise BundleError.build("config", received=f"{path} ({size} bytes)",
                                    expected=f"at most {_CONFIG_BUDGET} bytes", hint="This is not a model config.")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        if isinstance(err, BundleError):
            raise
        raise BundleError.build("config", received=f"{path} ({' '.join(str(err).split())[:120]})",
                                expected="a readable JSON object") from err
    if not isinstance(data, dict):
        raise BundleError.build("config", received=f"{path} (JSON {type(data).__name__})", expected="a JSON object")
    return data
