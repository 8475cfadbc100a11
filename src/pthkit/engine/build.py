"""The engine for a :class:`pthkit.model.Model` handle (``Model.engine(**opts)``, serve, Ray workers, evaluate).

The handle owns its module, so the torch backend may move it to another device in place (``owned=True``); a handle
with a ``runner`` (ONNX Runtime, OpenVINO, from ``--backend`` or an exported file) runs that instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pthkit.engine.backends import TorchBackend, as_backend
from pthkit.engine.core import Engine
from pthkit.engine.progress import ProgressBar
from pthkit.engine.types import AmpMode, Backend
from pthkit.errors import LoadError

if TYPE_CHECKING:
    from pthkit.model import Model

__all__ = ["backend_for", "engine_for"]


def backend_for(handle: Model, *, device: str | torch.device | None = None, channels_last: bool = True,
                compile: bool = False, features: bool = False) -> Backend:
    """``handle.runner`` when set (non-torch runtime), else a :class:`TorchBackend` over ``handle.module``."""
    if handle.runner is not None and not (features or compile):
        return as_backend(handle.runner)
    if handle.module is None:
        raise LoadError.build("model", received=f"{handle.architecture} (no PyTorch module)",
                              expected="a torch module for features/compile", hint="Drop --features/--compile.")
    return TorchBackend(handle.module, device=device, channels_last=channels_last, compile=compile,
                        features=features, owned=True)


def engine_for(handle: Model, *, batch_size: int = 32, amp: AmpMode | None = None,
               progress: bool | ProgressBar | None = None, device: str | torch.device | None = None,
               channels_last: bool = True, compile: bool = False, features: bool = False,
               unit: str = "inputs") -> Engine:
    """An :class:`Engine` over :func:`backend_for` ``(handle)`` (arguments checked now)."""
    backend = backend_for(handle, device=device, channels_last=channels_last, compile=compile, features=features)
    return Engine(backend, batch_size=batch_size, amp=amp, progress=progress, unit=unit)
