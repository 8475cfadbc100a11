"""The data types of reading a weights file: :class:`Checkpoint` and :class:`Finding`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch

CheckpointFormat = Literal["zip", "legacy", "safetensors", "torchscript", "pickle", "sharded"]
Severity = Literal["info", "warning", "danger"]
Verdict = Literal["safe", "needs-trust", "malicious-looking"]


@dataclass(frozen=True)
class Finding:
    """One thing worth knowing about a file: a global it names, a construct refused, a budget hit, an integrity issue.

    ``kind`` is a short slug ("global", "refused-global", "reduce", "integrity", "budget", "torchscript", …).
    """

    kind: str
    detail: str
    severity: Severity = "info"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail, "severity": self.severity}


@dataclass
class Checkpoint:
    """What a weights file holds, read without running any of its code."""

    path: Path
    format: CheckpointFormat
    file_size: int
    tensors: dict[str, "torch.Tensor"]
    source: list[str] = field(default_factory=list)
    prefixes_removed: list[str] = field(default_factory=list)
    alternatives: dict[str, dict[str, "torch.Tensor"]] = field(default_factory=dict)
    entries: dict[str, Any] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    shared: list[list[str]] = field(default_factory=list)
    verdict: Verdict = "safe"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (tensors as shape/dtype only)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "file_size": self.file_size,
            "verdict": self.verdict,
            "source": list(self.source),
            "prefixes_removed": list(self.prefixes_removed),
            "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in self.tensors.items()},
            "alternatives": {k: len(v) for k, v in self.alternatives.items()},
            "entries": self.entries,
            "classes": list(self.classes),
            "findings": [f.to_dict() for f in self.findings],
            "metadata": dict(self.metadata),
            "shared": [list(g) for g in self.shared],
        }
