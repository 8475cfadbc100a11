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


@dataclass
class ScanReport:
    """What :func:`pthkit.checkpoint.scan_file` found, without executing anything from the file.

    ``verdict`` is ``"safe"`` only when every pickle ``torch.load`` could unpickle (nested payloads and tar members
    included) was run to its end by the inert machine and references only allowlisted data rebuilders (torch tensor
    and storage rebuild helpers, ``collections.OrderedDict``, NumPy array/scalar/dtype rebuilders), no bytes are left
    that no loader reads, and the container is intact. Other classes, TorchScript code, unparseable pickles, budgets
    hit and damaged archives give ``"needs-trust"``; globals that can call, import or fetch attributes (``os.system``,
    ``pydoc.locate``, ``operator.attrgetter``, ``functools.partial`` …) and structural tricks (FRAME mismatches,
    duplicate or path-traversal zip members, unresolvable ``STACK_GLOBAL``) give ``"malicious-looking"``.
    """

    path: Path
    format: str
    verdict: Verdict
    globals: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the verdict is ``"safe"`` (what a CI gate wants)."""
        return self.verdict == "safe"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "format": self.format,
            "verdict": self.verdict,
            "ok": self.ok,
            "globals": list(self.globals),
            "findings": [f.to_dict() for f in self.findings],
        }

    def __str__(self) -> str:
        from pthkit.cli._safe_text import safe_text  # details quote the file: never send its control characters raw

        lines = [f"{self.path}: {self.verdict} ({self.format})"]
        lines += [f"  [{f.severity}] {f.kind}: {f.detail}" for f in self.findings if f.severity != "info"]
        return "\n".join(safe_text(line, newlines=False) for line in lines)
