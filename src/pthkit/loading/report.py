"""What a load did, key by key: :class:`KeyIssue` and :class:`LoadReport`.

Every key that was not simply copied by name is explained by a *cause*, so "Missing key(s)" never needs guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pthkit.loading.keymap import KEY_MAP_FORMAT, write_key_map

if TYPE_CHECKING:
    from pthkit.architectures.types import Candidate
    from pthkit.checkpoint.types import Checkpoint

__all__ = ["KeyIssue", "LoadReport", "Cause", "CAUSES"]

Cause = Literal[
    "prefix",  # a wrapper prefix (module., model., _orig_mod.) was removed or added
    "classifier-head",  # the classifier differs (another num_classes, or no head on one side)
    "ema-copy",  # weights taken from / duplicated by an exponential-moving-average copy
    "num_batches_tracked",  # BatchNorm step counters: not weights, harmless either way
    "auxiliary-head",  # training-only heads (inception AuxLogits, segmentation aux_classifier)
    "renamed-by-alignment",  # another naming convention, matched by ordered shapes / topology
    "user-key-map",  # renamed by a key map the caller gave
    "tied-weights",  # the model shares this tensor with another key that was loaded
    "shape",  # same name, another shape (another variant or width)
    "not-in-file",  # the model has it, the file does not
    "not-in-model",  # the file has it, the model does not
    "equivalent",  # (note) other architectures have an identical signature; the file cannot tell them apart
    "dtype",  # (note) the file's precision differs from the model's; values are cast on copy
]
CAUSES: tuple[str, ...] = Cause.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class KeyIssue:
    """One key that did not load plainly by name, and why.

    ``harmless`` issues (missing BN counters, training-only auxiliary heads, a head replaced on purpose by
    ``num_classes``) never make a strict load fail; the rest do, unless ``partial`` re-initializes them.
    """

    key: str
    cause: str
    detail: str = ""
    harmless: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "cause": self.cause, "detail": self.detail, "harmless": self.harmless}

    def __str__(self) -> str:
        text = f"{self.key} ({self.cause}"
        if self.detail:
            text += f": {self.detail}"
        return text + ")"


def _first(items: list[str], n: int = 3) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" … (+{len(items) - n})" if len(items) > n else "")


def _group(issues: list[KeyIssue]) -> dict[str, list[KeyIssue]]:
    groups: dict[str, list[KeyIssue]] = {}
    for issue in issues:
        groups.setdefault(issue.cause, []).append(issue)
    return groups


@dataclass
class LoadReport:
    """The result of :func:`pthkit.loading.load_model` (or :func:`load_state_into`), key by key.

    - ``loaded``: model keys that received a tensor from the file.
    - ``remapped``: checkpoint key → model key for every key renamed on the way (a reusable key map; see
      :meth:`save_key_map`); ``remap_causes`` says why each was renamed.
    - ``missing`` / ``unexpected`` / ``mismatched``: what did not load, each with its cause.
    - ``reinitialized``: model keys that kept the fresh initialization of the built model (``partial`` or a new head).
    - ``notes``: informational facts about the file (prefixes removed, EMA copy chosen, counters filled).
    """

    architecture: str
    candidate: "Candidate | None" = None
    checkpoint: "Checkpoint | None" = None
    loaded: list[str] = field(default_factory=list)
    remapped: dict[str, str] = field(default_factory=dict)
    remap_causes: dict[str, str] = field(default_factory=dict)
    missing: list[KeyIssue] = field(default_factory=list)
    unexpected: list[KeyIssue] = field(default_factory=list)
    mismatched: list[KeyIssue] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    notes: list[KeyIssue] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    dtype: str = "float32"
    partial: bool = False
    file_tensors: int = 0
    model_tensors: int = 0
    alignment: str = ""  # e.g. "lukemelas → timm" when keys were renamed by alignment
    file_kwargs: dict[str, Any] = field(default_factory=dict)  # kwargs that fit the file itself (saved key maps)
    dry_run: bool = False  # True for check_fit: matched, nothing copied

    # --- verdict ---------------------------------------------------------------------------------------------------

    @property
    def blocking(self) -> list[KeyIssue]:
        """Issues that make a strict load fail (not harmless)."""
        return [i for i in (*self.missing, *self.unexpected, *self.mismatched) if not i.harmless]

    @property
    def ok(self) -> bool:
        """True when the model holds the file's weights as asked: nothing blocking, or ``partial`` re-initialized it."""
        if not self.loaded and self.model_tensors:
            return False
        return self.partial or not self.blocking

    @property
    def complete(self) -> bool:
        """True when every model tensor came from the file (nothing re-initialized)."""
        return not self.reinitialized

    def problem_summary(self) -> str:
        """One line: counts and the first keys of the blocking issues (used in the strict-load error)."""
        parts = []
        blocking = self.blocking
        for label, issues in (("missing", self.missing), ("unexpected", self.unexpected),
                              ("shape-mismatched", self.mismatched)):
            bad = [i for i in issues if not i.harmless]
            if not bad:
                continue
            causes = sorted({i.cause for i in bad})
            keys = [i.key + (f" {i.detail}" if label == "shape-mismatched" and i.detail else "") for i in bad]
            parts.append(f"{len(bad)} {label} [{', '.join(causes)}] ({_first(keys)})")
        return "; ".join(parts) if blocking else "nothing blocking"

    # --- key map ---------------------------------------------------------------------------------------------------

    def key_map_dict(self) -> dict[str, Any]:
        """The JSON document :meth:`save_key_map` writes."""
        source = str(self.checkpoint.path) if self.checkpoint is not None else None
        return {
            "format": KEY_MAP_FORMAT,
            "architecture": self.architecture,
            "kwargs": dict(self.file_kwargs or self.kwargs),
            "source_file": source,
            "key_map": dict(self.remapped),
        }

    def save_key_map(self, path: str | Path) -> Path:
        """Write the checkpoint-key → model-key map (with architecture and kwargs) as JSON; reuse with ``key_map=path``."""
        return write_key_map(path, self.key_map_dict())

    # --- output ----------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        ckpt = self.checkpoint
        checkpoint: dict[str, Any] | None = None
        if ckpt is not None:
            checkpoint = {
                "path": str(ckpt.path), "format": ckpt.format, "source": list(ckpt.source),
                "prefixes_removed": list(ckpt.prefixes_removed), "tensors": len(ckpt.tensors),
            }
        return {
            "ok": self.ok,
            "complete": self.complete,
            "architecture": self.architecture,
            "kwargs": dict(self.kwargs),
            "device": self.device,
            "dtype": self.dtype,
            "partial": self.partial,
            "file_tensors": self.file_tensors,
            "model_tensors": self.model_tensors,
            "loaded": len(self.loaded),
            "loaded_keys": list(self.loaded),
            "remapped": dict(self.remapped),
            "remap_causes": dict(self.remap_causes),
            "alignment": self.alignment,
            "missing": [i.to_dict() for i in self.missing],
            "unexpected": [i.to_dict() for i in self.unexpected],
            "mismatched": [i.to_dict() for i in self.mismatched],
            "reinitialized": list(self.reinitialized),
            "notes": [i.to_dict() for i in self.notes],
            "candidate": self.candidate.to_dict() if self.candidate is not None else None,
            "checkpoint": checkpoint,
        }

    def headline(self) -> str:
        kw = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        text = f"loaded {len(self.loaded)}/{self.model_tensors} tensors into {self.architecture}"
        if kw:
            text += f" ({kw})"
        return text + f" on {self.device} as {self.dtype}"

    def __str__(self) -> str:
        lines = [self.headline()]
        if self.remapped:
            by_cause: dict[str, int] = {}
            for key in self.remapped:
                cause = self.remap_causes.get(key, "renamed")
                by_cause[cause] = by_cause.get(cause, 0) + 1
            for cause, n in by_cause.items():
                what = "by alignment" if cause == "renamed-by-alignment" else f"by {cause}"
                extra = f" ({self.alignment})" if cause == "renamed-by-alignment" and self.alignment else ""
                lines.append(f"remapped {n} keys {what}{extra}")
        for note in self.notes:
            lines.append(f"note: {note.cause}: {note.detail}" if note.detail else f"note: {note.key} ({note.cause})")
        for label, issues in (("missing", self.missing), ("unexpected", self.unexpected),
                              ("shape-mismatched", self.mismatched)):
            for cause, group in _group(issues).items():
                if all(i.harmless for i in group):
                    tag = "new head, as asked" if cause == "classifier-head" else "harmless"
                else:
                    tag = "re-initialized" if self.partial else "blocking"
                detail = group[0].detail
                keys = _first([i.key for i in group])
                lines.append(f"{label}: {len(group)} {cause} [{tag}]: {keys}" + (f" — {detail}" if detail else ""))
        if self.reinitialized:
            label = ("re-initialized (fresh init of the built model)" if self.ok and not self.dry_run
                     else "would be re-initialized with partial")
            lines.append(f"{label}: {len(self.reinitialized)} ({_first(self.reinitialized)})")
        if self.dry_run:
            lines[0] = "fit: " + lines[0].replace("loaded", "would load", 1).split(" on ")[0]
            lines.append("fit: strict load would succeed" if self.ok else
                         "fit: strict load would be refused — " + self.problem_summary())
        elif self.ok:
            lines.append("status: ok" + ("" if self.complete else f" ({len(self.reinitialized)} re-initialized)"))
        else:
            lines.append("status: refused — " + self.problem_summary())
        return "\n".join(lines)
