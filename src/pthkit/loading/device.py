"""Where and in what precision a loaded model lives: ``resolve_device`` and ``resolve_dtype``."""

from __future__ import annotations

import torch

from pthkit.errors import LoadError

__all__ = ["resolve_device", "resolve_dtype", "DTYPE_NAMES"]

# Accepted spellings of the floating dtypes a model can be cast to (CLI --dtype and the API share them).
DTYPE_NAMES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}

_DEVICE_HELP = "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The device to use: ``"auto"`` picks cuda, then mps, then cpu; any other name must exist on this machine.

    Raises :class:`~pthkit.errors.LoadError` for an unknown name or a device this machine does not have, rather than
    falling back silently to another device.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise LoadError.build("device", received=repr(device), expected=_DEVICE_HELP) from exc
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = dev.index or 0
        if index >= count:
            raise LoadError.build(
                "device", received=f"{name!r} ({count} CUDA device(s) available)", expected=_DEVICE_HELP,
                hint="Use --device auto or --device cpu.",
            )
    elif dev.type == "mps" and not _mps_available():
        raise LoadError.build(
            "device", received="'mps' (not available here)", expected=_DEVICE_HELP, hint="Use --device auto or cpu.",
        )
    elif dev.type not in ("cpu", "cuda", "mps", "meta", "xpu"):
        raise LoadError.build("device", received=repr(device), expected=_DEVICE_HELP)
    return dev


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``None`` (keep the model's own dtype), a floating ``torch.dtype``, or one of :data:`DTYPE_NAMES`."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise LoadError.build("dtype", received=str(dtype), expected="a floating dtype (float32, float16, bfloat16)")
        return dtype
    key = str(dtype).strip().lower().removeprefix("torch.")
    if key not in DTYPE_NAMES:
        raise LoadError.build(
            "dtype", received=repr(dtype), expected="one of " + ", ".join(sorted(set(DTYPE_NAMES))),
        )
    return DTYPE_NAMES[key]
