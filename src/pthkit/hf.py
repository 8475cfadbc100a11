"""Hugging Face ``transformers`` folders (``config.json`` + weights + ``preprocessor_config.json``) as pthkit models.

The model is built by ``transformers`` from the config — never with remote code (``trust_remote_code`` is never
passed, and a config whose ``model_type`` transformers does not know is refused). The class named in the config's
``architectures`` is never imported by name: it only selects among transformers' own Auto mappings for that
``model_type``. Weights are read with pthkit's safe reader and loaded strictly, so every key is explained like any
other file's. Preprocessing comes from ``preprocessor_config.json``, each value with that file as its source.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pthkit.errors import ArchitectureBuildError, BundleError, LoadError

if TYPE_CHECKING:
    from pthkit.model import Model, OpenOptions
    from pthkit.preprocess.types import Preprocess

__all__ = ["HFOutputs", "is_hf_folder", "open_hf", "preprocess_from_hf"]

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
# PIL resample codes as transformers stores them.
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
# Auto classes tried for the class the config names, most specific first (their mappings hold only library classes).
_AUTO = ("MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
         "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES", "MODEL_MAPPING_NAMES")
_AUTO_CLASS = {"MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES": "AutoModelForImageClassification",
               "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES": "AutoModelForSequenceClassification",
               "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES": "AutoModelForTokenClassification",
               "MODEL_MAPPING_NAMES": "AutoModel"}


def is_hf_folder(path: Path) -> bool:
    """A folder with a transformers ``config.json`` (it has ``model_type``) and a weights file beside it."""
    if not path.is_dir() or not (path / "config.json").is_file():
        return False
    if not any((path / name).is_file() for name in _WEIGHT_FILES):
        return False
    from pthkit.api import read_json_config

    try:
        cfg = read_json_config(path / "config.json")
    except BundleError:
        return False
    return isinstance(cfg.get("model_type"), str) and "pthkit" not in cfg


class HFOutputs(nn.Module):
    """A transformers model called with one positional tensor, returning a plain tensor (``logits`` when the model
    has a head, else the pooled output or the last hidden state): what pthkit's engine, export and serve expect."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x, return_dict=True)
        for name in ("logits", "pooler_output", "last_hidden_state"):
            value = getattr(out, name, None)
            if isinstance(value, torch.Tensor):
                if name == "pooler_output" and value.ndim > 2:
                    value = value.flatten(1)
                return value
        raise LoadError.build("transformers output", received=type(out).__name__,
                              expected="an output with logits, pooler_output or last_hidden_state")


def _auto_model(config: Any, named: str | None) -> tuple[nn.Module, str]:
    import transformers
    from transformers.models.auto import modeling_auto

    model_type = config.model_type
    for mapping_name in _AUTO:
        mapping = getattr(modeling_auto, mapping_name, {})
        cls_name = mapping.get(model_type)
        if isinstance(cls_name, (list, tuple)):
            cls_name = cls_name[0] if cls_name else None
        if cls_name and (named is None or cls_name == named):
            auto = getattr(transformers, _AUTO_CLASS[mapping_name])
            return auto.from_config(config), cls_name
    if named is not None:  # the named class is not a transformers head for this model type: use the base model
        return _auto_model(config, None)
    raise ArchitectureBuildError.build("transformers model", received=f"model_type {model_type!r}",
                                       expected="a model type transformers builds without remote code")


def open_hf(path: Path, opts: OpenOptions) -> Model:
    """Build the transformers model from ``config.json``, load its weights safely, resolve its preprocessing."""
    try:
        import transformers  # noqa: F401
        from transformers import AutoConfig
    except ImportError as err:
        raise ArchitectureBuildError.build("Hugging Face folder", received=str(path),
                                           expected="the transformers package",
                                           hint="pip install 'pthkit[hf]'") from err
    from pthkit.api import read_json_config
    from pthkit.checkpoint import read_checkpoint
    from pthkit.input_spec import infer_input_spec
    from pthkit.loading import resolve_device
    from pthkit.loading.match import load_state_into
    from pthkit.model import Model, ModelSource

    raw = read_json_config(path / "config.json")
    evidence = []
    if "auto_map" in raw:
        evidence.append("config.json names remote code (auto_map); ignored: built from transformers' own classes")
    try:
        config = AutoConfig.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except Exception as err:
        raise ArchitectureBuildError.build("Hugging Face config", received=f"{path / 'config.json'} "
                                           f"({' '.join(str(err).split())[:160]})",
                                           expected="a config transformers knows (no remote code)") from err
    names = raw.get("architectures")
    named = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else None
    inner, cls_name = _auto_model(config, named)
    weights = next(path / n for n in _WEIGHT_FILES if (path / n).is_file())
    ckpt = read_checkpoint(path if weights.name.endswith(".index.json") else weights, trust=opts.trust,
                           select=opts.select)  # type: ignore[arg-type]
    report = load_state_into(inner, ckpt.tensors, architecture=f"transformers:{cls_name}", strict=True,
                             checkpoint=ckpt)
    module = HFOutputs(inner).eval().to(resolve_device(opts.device))
    id2label = getattr(config, "id2label", None) or {}
    labels = opts.labels
    if labels is None and id2label and not all(str(v).startswith("LABEL_") for v in id2label.values()):
        labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    pre = None
    pre_path = path / "preprocessor_config.json"
    if pre_path.is_file():
        pre = preprocess_from_hf(read_json_config(pre_path), channels=int(getattr(config, "num_channels", 3) or 3),
                                 labels=labels)
        if opts.overrides:
            from pthkit.preprocess.sources import override_layers

            for layer in override_layers(opts.overrides, channels=pre.input_size[0]):
                pre = pre.with_values(layer.source, **layer.values)
    spec = infer_input_spec(module, preprocess=pre)
    evidence.insert(0, f"Hugging Face folder: {cls_name} (model_type {config.model_type}), built from config.json")
    if pre is not None:
        evidence.append("preprocessing from preprocessor_config.json")
    model = Model(module=module, architecture=f"transformers:{cls_name}", task="classify" if labels else "raw",
                  input_spec=spec, preprocess=pre if spec.kind == "image" else None, labels=labels,
                  source=ModelSource("hf", path), report=report, evidence=evidence, config=raw,
                  device=resolve_device(opts.device), checkpoint=ckpt)
    return model


def preprocess_from_hf(cfg: dict[str, Any], *, channels: int = 3, labels: list[str] | None = None) -> Preprocess:
    """A :class:`Preprocess` from a transformers ``preprocessor_config.json``; every value's source is that file."""
    from pthkit.preprocess.types import Preprocess

    src = "preprocessor_config.json"
    size = cfg.get("size")
    crop = cfg.get("crop_size") if cfg.get("do_center_crop", True) else None
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def hw(value: Any) -> tuple[int, int] | int | None:
        if isinstance(value, int):
            return value
        if isinstance(value, dict):
            if "height" in value and "width" in value:
                return int(value["height"]), int(value["width"])
            if "shortest_edge" in value:
                return int(value["shortest_edge"])
        return None

    resize = hw(size)
    target = hw(crop) if crop is not None else None
    if isinstance(target, int):
        target = (target, target)
    crop_pct = cfg.get("crop_pct")
    if target is not None:
        values["input_size"] = (channels, *target)
        if isinstance(resize, (int, tuple)):
            values["resize_size"] = resize
        values["crop_mode"] = "center"
    elif isinstance(resize, tuple):
        values["input_size"] = (channels, *resize)
        values["crop_mode"] = "squash"
        values["crop_pct"] = 1.0
    elif isinstance(resize, int):
        values["input_size"] = (channels, resize, resize)
        if isinstance(crop_pct, (int, float)) and crop_pct > 0:  # ConvNext: resize shortest edge to size/crop_pct
            values["crop_pct"] = float(crop_pct)
        else:
            values["resize_size"] = resize
    resample = cfg.get("resample")
    if isinstance(resample, int) and resample in _RESAMPLE:
        values["interpolation"] = _RESAMPLE[resample]
    rescale = cfg.get("rescale_factor", 1 / 255) if cfg.get("do_rescale", True) else 1.0
    values["scale"] = 1.0 if math.isclose(float(rescale), 1 / 255, rel_tol=1e-3) else 1.0 / (255.0 * float(rescale))
    if cfg.get("do_normalize", True) and cfg.get("image_mean") is not None:
        values["mean"] = tuple(float(v) for v in cfg["image_mean"])
        values["std"] = tuple(float(v) for v in cfg["image_std"])
    else:
        values["mean"], values["std"] = (0.0,) * channels, (1.0,) * channels
    for name in values:
        sources[name] = src
    if labels is not None:
        values["label_names"] = list(labels)
        sources["label_names"] = "config.json id2label"
    return Preprocess(**values, sources=sources)
