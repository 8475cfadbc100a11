"""The data types of the architecture registry and of identification: Architecture, Candidate, IdentifyResult."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

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
class TwinFit:
    """How well one twin, run under one input normalization, fits a file's batch-norm running statistics.

    ``distance``: symmetric KL between the Gaussian of each batch-norm layer's input (per channel, on the calibration
    crops) and the Gaussian of its stored running statistics, averaged over channels and then over ``layers``.
    """

    twin: str
    normalization: str
    distance: float
    layers: int
    size: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"twin": self.twin, "normalization": self.normalization, "distance": round(self.distance, 4),
                "layers": self.layers, "size": self.size}


@dataclass
class TwinDecision:
    """The choice between twins (architectures the file's tensors fit equally well) and its evidence.

    - ``twins``: every twin considered; ``differences``: per twin after the first, how its function differs from the
      first's (empty: same function) - padding, pooling, activation, batch-norm eps.
    - ``exact``: the twins compute the same function (only their default preprocessing differs); then ``rule`` says
      how ``chosen`` was picked.
    - ``fits``: the batch-norm fit test, one :class:`TwinFit` per (twin, normalization) run, best first; ``ratio`` is
      the best other twin's distance over the chosen one's, ``layers_closer`` of ``layers`` where it fits better.
    - ``normalization`` / ``normalization_label``: the normalization family of the best fit (a
      :data:`pthkit.preprocess.DEFAULT_CANDIDATES` name), for preprocessing to reuse.
    - ``confident``: ``chosen`` may be loaded without asking; ``reason`` says why or why not.
    - ``recipes``: per twin, its library's default preprocessing (mean, std, interpolation, crop_pct …).
    """

    twins: list[str]
    differences: dict[str, list[str]] = field(default_factory=dict)
    exact: bool = False
    chosen: str | None = None
    confident: bool = False
    rule: str = ""
    reason: str = ""
    fits: list[TwinFit] = field(default_factory=list)
    ratio: float | None = None
    layers_closer: int = 0
    layers: int = 0
    normalization: str | None = None
    normalization_label: str | None = None
    families_tested: list[str] = field(default_factory=list)
    recipes: dict[str, dict[str, Any]] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def how_they_differ(self) -> str:
        """One phrase: what differs in function between the twins (or that nothing does)."""
        parts = list(dict.fromkeys(d for diffs in self.differences.values() for d in diffs))
        return "; ".join(parts) if parts else "nothing in function (only default preprocessing)"

    def arch_flags(self) -> str:
        """The exact ``--arch`` choices to pass, one per twin."""
        return " or ".join(f"--arch {n}" for n in self.twins)

    def fit_table(self) -> str:
        """``twin/normalization distance`` for every run, best first."""
        return ", ".join(f"{f.twin} + {f.normalization}" + (f" @{f.size}px" if f.size else "") + f": {f.distance:.3f}"
                         for f in self.fits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "twins": list(self.twins), "differences": {k: list(v) for k, v in self.differences.items()},
            "exact": self.exact, "chosen": self.chosen, "confident": self.confident, "rule": self.rule,
            "reason": self.reason, "fits": [f.to_dict() for f in self.fits],
            "ratio": None if self.ratio is None else round(self.ratio, 3), "layers_closer": self.layers_closer,
            "layers": self.layers, "normalization": self.normalization,
            "normalization_label": self.normalization_label, "families_tested": list(self.families_tested),
            "recipes": {k: dict(v) for k, v in self.recipes.items()}, "evidence": list(self.evidence),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def describe(self) -> str:
        lines = [f"twins: {', '.join(self.twins)}; they differ in {self.how_they_differ}"]
        if self.exact:
            lines.append(f"exact twins: chose {self.chosen} because {self.rule}")
        else:
            lines.append(("decided by function: " if self.confident else "not decided: ") + self.reason)
        if self.fits:
            lines.append("batch-norm fit (mean symmetric KL over layers, lower fits better): " + self.fit_table())
        for name, recipe in self.recipes.items():
            if recipe:
                lines.append(f"  {name} default preprocessing: "
                             + ", ".join(f"{k}={v}" for k, v in recipe.items()))
        lines += [f"  {e}" for e in self.evidence]
        if not self.confident:
            lines.append(f"pass {self.arch_flags()}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


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
    twin_decision: TwinDecision | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["twin_decision"] = self.twin_decision.to_dict() if self.twin_decision is not None else None
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
        if self.twin_decision is not None:
            text += "\n   " + self.twin_decision.describe().replace("\n", "\n   ")
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

    @property
    def twin_decision(self) -> TwinDecision | None:
        """How the best candidate was chosen among its twins (None when it has none)."""
        best = self.best
        return best.twin_decision if best is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "confident": self.confident,
            "message": self.message,
            "twin_decision": self.twin_decision.to_dict() if self.twin_decision is not None else None,
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
