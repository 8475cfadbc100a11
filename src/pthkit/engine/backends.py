"""The torch backend: a module run in eval mode, inference mode, channels_last inputs, optional ``torch.compile``.

It never changes the caller's module:

- **eval mode** is applied for the duration of each call and the modules' ``training`` flags are restored after (a
  model in training mode, e.g. fine-tuning's, is evaluated as in ``model.eval()`` and handed back as it was);
- **channels_last** is applied to the *input* batch: PyTorch's convolutions then run in channels_last whatever the
  weights' layout (the weights are not converted, so their storage and ``data_ptr`` stay the caller's);
- **device**: the module runs where its weights are. Asking for another device either moves the module (only with
  ``owned=True``: a module pthkit's handle owns, e.g. ``pthkit.open(...).module``) or runs a copy (``copy.deepcopy``,
  said in :meth:`TorchBackend.describe`).
- ``features=True`` registers a forward hook on the last ``nn.Linear`` for the duration of each call (removed after).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pthkit.engine.types import Backend, Outputs
from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from pthkit.model import Runner

__all__ = ["FeatureExtractor", "TorchBackend", "as_backend", "cpu_supports_bf16"]


class FeatureExtractor:
    """Run a classifier and also return its pooled embedding (the classifier's input).

    timm models: ``forward_features`` then ``forward_head(pre_logits=True)`` (timm's documented API). Other models
    (torchvision …): a forward hook captures the input of the last ``nn.Linear`` — the classifier in every
    torchvision classification model; hand-written because torchvision has no pre-logits API. The hook is
    registered for one call at a time, so the caller's module carries no hook between calls.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._timm = callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))
        self._linear: nn.Linear | None = None
        if not self._timm:
            linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise PreprocessError.build(
                    "features", received=f"a {type(model).__name__} without an nn.Linear classifier",
                    expected="a timm model or a classifier ending in nn.Linear",
                    hint="Drop --features or load a classification model.",
                )
            self._linear = linears[-1]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._timm:
            feats = self.model.forward_features(x)  # type: ignore[operator]
            pooled = self.model.forward_head(feats, pre_logits=True)  # type: ignore[operator]
            return self.model.forward_head(feats), pooled.flatten(1)  # type: ignore[operator]
        captured: list[torch.Tensor] = []
        assert self._linear is not None
        hook = self._linear.register_forward_hook(lambda _m, args, _o: captured.append(args[0]))
        try:
            logits = self.model(x)
        finally:
            hook.remove()
        if not captured:
            raise PreprocessError.build(
                "features", received="a model whose last nn.Linear did not run", expected="a classifier head",
                hint="Drop --features.",
            )
        return logits, captured[-1].flatten(1)

    def close(self) -> None:
        """Nothing to release (kept for callers of the former API)."""


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 autocast is slow."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if callable(check))


def _weights_device(module: nn.Module) -> torch.device | None:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return None


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _resolve(device: str | torch.device) -> torch.device:
    from pthkit.loading.device import resolve_device

    return resolve_device(device)


class TorchBackend:
    """Run ``module`` on batches (see the module docstring for what it does and does not change).

    Args:
        module: any ``nn.Module`` (a classifier, a regression net, one returning a tuple or dict).
        device: where to run; ``None``: where the module's weights are (CPU for a module without weights).
        channels_last: make 4-D input batches channels_last (faster convolutions on CPU and GPU).
        compile: ``torch.compile`` the forward (slow start, faster long runs; needs a C++ compiler on CPU).
        features: return ``{"logits": …, "features": …}`` (the pooled embedding, see :class:`FeatureExtractor`).
        owned: the module belongs to the caller's pthkit handle and may be moved to ``device`` in place; otherwise a
            device change runs on a copy.
    """

    name = "torch"

    def __init__(
        self,
        module: nn.Module,
        *,
        device: str | torch.device | None = None,
        channels_last: bool = True,
        compile: bool = False,
        features: bool = False,
        owned: bool = False,
    ) -> None:
        if not isinstance(module, nn.Module):
            raise PreprocessError.build("model", received=type(module).__name__, expected="a torch.nn.Module")
        here = _weights_device(module)
        target = (here or torch.device("cpu")) if device is None else _resolve(device)
        if here is not None and _same_device(here, target):
            target = here  # "cuda" asked, weights on "cuda:0": nothing to move
        self.copied = False
        if here is not None and here != target:
            if not owned:
                module = copy.deepcopy(module)
                self.copied = True
            module = module.to(target)
        self.module = module
        self.device = target
        self.channels_last = channels_last
        self.features = features
        self.compiled = compile
        self._modules = list(module.modules())
        param = next(module.parameters(), None)
        self._dtype = param.dtype if param is not None and param.is_floating_point() else None
        self._extractor = FeatureExtractor(module) if features else None
        forward: Callable[[torch.Tensor], Any] = self._extractor if self._extractor is not None else module
        self._forward = torch.compile(forward) if compile else forward

    def __call__(self, batch: torch.Tensor) -> Outputs:
        x = batch
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self._dtype is not None and x.is_floating_point() and x.dtype != self._dtype and not torch.is_autocast_enabled(
            self.device.type
        ):
            x = x.to(self._dtype)
        training = [m.training for m in self._modules]
        if any(training):
            for m in self._modules:
                m.training = False
        try:
            out = self._forward(x)
        finally:
            if any(training):
                for m, flag in zip(self._modules, training):
                    m.training = flag
        if self._extractor is not None:
            logits, pooled = out
            return {"logits": logits, "features": pooled}
        return out  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": str(self.device),
            "precision": str(self._dtype).replace("torch.", "") if self._dtype is not None else None,
            "threads": torch.get_num_threads(),
            "channels_last": self.channels_last,
            "compiled": self.compiled,
            "copied": self.copied,
            "module": type(self.module).__name__,
        }


def as_backend(
    model: nn.Module | Backend | Runner,
    *,
    device: str | torch.device | None = None,
    channels_last: bool = True,
    compile: bool = False,
    features: bool = False,
    owned: bool = False,
) -> Backend:
    """A :class:`Backend` for ``model``: a module gets a :class:`TorchBackend`; a backend/runner is used as it is.

    Raises:
        PreprocessError: ``model`` is neither, or ``features``/``compile`` were asked of a non-torch backend.
    """
    if isinstance(model, nn.Module):
        return TorchBackend(model, device=device, channels_last=channels_last, compile=compile, features=features,
                            owned=owned)
    if callable(model) and isinstance(getattr(model, "name", None), str) and callable(getattr(model, "describe", None)):
        if features or compile:
            raise PreprocessError.build(
                "features/compile", received=f"a {model.name} backend",
                expected="a torch module (features and torch.compile need torch)",
                hint="Drop --features/--compile or use --backend torch.",
            )
        if isinstance(model, Backend) and isinstance(model.device, torch.device):
            return model
        return _DeviceDefault(model)
    raise PreprocessError.build(
        "model", received=type(model).__name__,
        expected="a torch.nn.Module or a backend (callable with .name and .describe(), e.g. an ONNX Runtime runner)",
    )


class _DeviceDefault:
    """A runner without a ``device`` attribute (``pthkit.model.Runner``): it takes CPU batches."""

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        self.name: str = runner.name
        self.device = torch.device("cpu")

    def __call__(self, batch: torch.Tensor) -> Outputs:
        return self._runner(batch)  # type: ignore[no-any-return]

    def describe(self) -> dict[str, Any]:
        return dict(self._runner.describe())
