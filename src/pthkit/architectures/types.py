"""The data types of the architecture registry and of identification: Architecture, Candidate, IdentifyResult."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from torch import nn

ArchitectureSource = Literal["torchvision", "timm", "user", "entrypoint"]
Confidence = Literal["high", "medium", "low"]


@dataclass(frozen=True)
class Architecture:
    """A named way to build a model: ``builder(**default_kwargs, **kwargs)`` returns a randomly initialised module.

    ``timm_name`` is set for timm architectures (``pretrained_cfg`` lookup, bundles); ``torchvision_weights`` names the
    torchvision ``DEFAULT`` weights enum member (metadata only: nothing is downloaded).
    """

    name: str
    source: ArchitectureSource
    builder: Callable[..., "nn.Module"] = field(compare=False, repr=False)
    default_kwargs: dict[str, Any] = field(default_factory=dict, compare=False)
    timm_name: str | None = None
    torchvision_weights: str | None = None

    @property
    def short_name(self) -> str:
        """The name without its qualifier (``timm:resnet18`` -> ``resnet18``, ``mylib:net`` -> ``net``)."""
        prefix, sep, rest = self.name.partition(":")
        return rest if sep and prefix.isidentifier() and rest else self.name

    def build(self, **kwargs: Any) -> "nn.Module":
        """Build the model with random weights (``default_kwargs`` overridden by ``kwargs``)."""
        return self.builder(**{**self.default_kwargs, **kwargs})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "default_kwargs": dict(self.default_kwargs),
            "timm_name": self.timm_name,
            "torchvision_weights": self.torchvision_weights,
        }


@dataclass
class Candidate:
    """One architecture that may have produced a weights file, with the evidence.

    ``score`` (0..1) is the share of tensors, on the larger side, that match by name and shape or by a verified
    alignment (head resized by an inferred ``num_classes`` counts as matched). ``key_map`` maps file keys to model keys
    for the keys that differ. ``kwargs`` are the constructor arguments inferred from the file.
    """

    architecture: str
    score: float
    confidence: Confidence
    matched_by_name: int
    matched_by_shape: int
    file_tensors: int
    model_tensors: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    key_map: dict[str, str] = field(default_factory=dict)
    head: tuple[str, ...] = ()
    differences: list[str] = field(default_factory=list)
    equivalent: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["head"] = list(self.head)
        data["score"] = round(self.score, 4)
        return data

    def describe(self) -> str:
        evidence = f"{self.matched_by_name} by name"
        if self.matched_by_shape:
            evidence += f", {self.matched_by_shape} by aligned shape"
        text = (
            f"{self.architecture}  score {self.score:.3f} ({self.confidence}): {evidence} of "
            f"{self.file_tensors} file / {self.model_tensors} model tensors"
        )
        if self.kwargs:
            text += "; kwargs " + ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        if self.equivalent:
            text += "; identical signature: " + ", ".join(self.equivalent)
        return text

    def __str__(self) -> str:
        return self.describe()


@dataclass
class PartialMatch:
    """A known architecture whose tensors a file contains in part (a backbone inside a detector, say)."""

    architecture: str
    matched: int
    model_tensors: int
    file_tensors: int
    prefix: str = ""

    @property
    def message(self) -> str:
        return (
            f"contains {self.architecture} features ({self.matched} of {self.model_tensors} tensors"
            + (f" under '{self.prefix}'" if self.prefix else "")
            + ")"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


@dataclass
class IdentifyResult:
    """Ranked candidates for a weights file, whether the top one is trusted, and a one-line explanation."""

    candidates: list[Candidate]
    confident: bool
    message: str
    partial: list[PartialMatch] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "confident": self.confident,
            "message": self.message,
            "candidates": [c.to_dict() for c in self.candidates],
            "partial": [p.to_dict() for p in self.partial],
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def describe(self) -> str:
        lines = [self.message]
        lines += [f"{i}. {c.describe()}" for i, c in enumerate(self.candidates, 1)]
        lines += [f"partial: {p.message}" for p in self.partial]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()
