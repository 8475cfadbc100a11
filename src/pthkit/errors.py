"""Every error pthkit raises, in one hierarchy.

Each error also subclasses the matching built-in (``FileNotFoundError``, ``ValueError``, ``LookupError`` …) so
callers that already catch those keep working (huggingface_hub ``errors.py`` does the same).

Messages are one line and say three things: what was received, what was expected, and what to do. Build them with
:func:`PthkitError.build` so the wording stays uniform; tests assert the wording.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "PthkitError",
    "InputNotFoundError",
    "CheckpointError",
    "UnsupportedFormatError",
    "CorruptCheckpointError",
    "NoTensorDataError",
    "BudgetExceededError",
    "UnsafeCheckpointError",
    "ArchitectureError",
    "UnknownArchitectureError",
    "AmbiguousArchitectureError",
    "ArchitectureBuildError",
    "IdentificationError",
    "LoadError",
    "PreprocessError",
    "ImageError",
    "DatasetError",
    "BundleError",
    "TrainingError",
    "ExportError",
    "ParityError",
]


class PthkitError(Exception):
    """Base of every pthkit error. ``str(err)`` is the one-line message the CLI prints."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        # One line, always: the CLI prints exactly this.
        super().__init__(" ".join(str(message).split()))

    @classmethod
    def build(cls, what: str, *, received: str, expected: str, hint: str | None = None) -> Self:
        """``<what>: received <received>; expected <expected>. <hint>``"""
        message = f"{what}: received {received}; expected {expected}."
        if hint:
            message += f" {hint}"
        return cls(message)


class InputNotFoundError(PthkitError, FileNotFoundError):
    """A path the user named does not exist (or is not the kind of path expected)."""

    exit_code = 3


# --- reading weights files -------------------------------------------------------------------------------------------


class CheckpointError(PthkitError, ValueError):
    """A weights file could not be read."""

    exit_code = 5


class UnsupportedFormatError(CheckpointError):
    """The file is not a weights file pthkit reads (a PNG, a git-lfs pointer, text …)."""


class CorruptCheckpointError(CheckpointError):
    """The file has a known format but is empty, truncated, malformed or internally inconsistent."""


class BudgetExceededError(CheckpointError):
    """Reading the file would cost far more memory or time than its size justifies (zip bomb, lying sizes, nesting)."""


class UnsafeCheckpointError(CheckpointError, PermissionError):
    """Doing what was asked would run code from the file, and the user did not pass the trust flag."""

    exit_code = 4


# --- architectures ---------------------------------------------------------------------------------------------------


class ArchitectureError(PthkitError, LookupError):
    """Base for problems naming, building or finding an architecture."""

    exit_code = 6


class UnknownArchitectureError(ArchitectureError):
    """No registered architecture has that name."""


class AmbiguousArchitectureError(ArchitectureError):
    """A name matches several architectures (e.g. torchvision and timm both have ``resnet18``)."""


class ArchitectureBuildError(ArchitectureError):
    """The architecture exists but could not be built with the given arguments, or user code failed to import."""


class IdentificationError(ArchitectureError):
    """No architecture fits the file well enough to load it without ``--arch``."""


class LoadError(PthkitError, RuntimeError):
    """The weights do not fit the architecture (strict load refused, shapes differ …)."""

    exit_code = 7


# --- data, preprocessing, tasks --------------------------------------------------------------------------------------


class PreprocessError(PthkitError, ValueError):
    """A preprocessing value is invalid or could not be resolved."""

    exit_code = 8


class ImageError(PthkitError, OSError):
    """One image could not be decoded (corrupt, truncated, not an image, decompression bomb)."""

    exit_code = 8


class DatasetError(PthkitError, ValueError):
    """A dataset folder or CSV is not usable (no classes, no images, unknown labels …)."""

    exit_code = 8


class BundleError(PthkitError, ValueError):
    """A bundle folder is missing files or its config is invalid."""

    exit_code = 5


class TrainingError(PthkitError, RuntimeError):
    """Fine-tuning could not start or continue (bad resume state, diverged …)."""

    exit_code = 11


class ExportError(PthkitError, RuntimeError):
    """A model could not be exported."""

    exit_code = 9


class NoTensorDataError(CheckpointError):
    """The file holds tensor shapes but no data (tensors saved on the ``meta`` device): nothing to load."""


class ParityError(ExportError):
    """An export (or a faster backend) gives different outputs than the torch model beyond the tolerance."""
