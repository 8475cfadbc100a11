"""pthkit: make a pretrained PyTorch weights file usable.

The public API is re-exported here lazily, so ``import pthkit`` stays cheap (torch is imported on first use).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "open": "pthkit.api",
    "Model": "pthkit.model",
    "read_checkpoint": "pthkit.checkpoint",
    "scan_file": "pthkit.checkpoint",
    "Checkpoint": "pthkit.checkpoint",
    "summarize": "pthkit.summary",
    "list_architectures": "pthkit.architectures",
    "get_architecture": "pthkit.architectures",
    "register_architecture": "pthkit.architectures",
    "build_model": "pthkit.architectures",
    "identify": "pthkit.architectures",
    "load_model": "pthkit.loading",
    "LoadReport": "pthkit.loading",
    "resolve_preprocess": "pthkit.preprocess",
    "infer_normalization": "pthkit.preprocess",
    "Preprocess": "pthkit.preprocess",
    "predict": "pthkit.tasks.predict",
    "finetune": "pthkit.tasks.finetune",
    "evaluate": "pthkit.tasks.evaluate",
    "save_bundle": "pthkit.bundle",
    "load_bundle": "pthkit.bundle",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pthkit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from pthkit.api import open
    from pthkit.architectures import build_model, get_architecture, list_architectures, register_architecture
    from pthkit.architectures.identify import identify
    from pthkit.bundle import load_bundle, save_bundle
    from pthkit.checkpoint import Checkpoint, read_checkpoint, scan_file
    from pthkit.loading import LoadReport, load_model
    from pthkit.model import Model
    from pthkit.preprocess import Preprocess, infer_normalization, resolve_preprocess
    from pthkit.summary import summarize
    from pthkit.tasks.evaluate import evaluate
    from pthkit.tasks.finetune import finetune
    from pthkit.tasks.predict import predict
