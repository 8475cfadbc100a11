"""Parity between a torch model and its export: per-output differences and top-k agreement, with a verdict.

- **Differences**, per output, at batch sizes 1, 2 and 7 (the dynamic batch axis is exercised, including an odd
  size): max absolute difference, and max relative difference ``|a - b| / (|b| + 1e-3 · scale)`` where ``scale`` is
  the largest magnitude of the torch output (the floor keeps near-zero entries from dominating).
- **Agreement** on real inputs (the packaged calibration images, and any images the user gives): top-1 agreement and
  mean top-5 overlap of the first 2-D output (the class scores). A top-1 disagreement where torch's own top-2 margin is
  within the difference tolerance is a *near tie*: counted and shown, not a failure (random-init models often have
  logits equal to 1e-7).
- **Tolerance** by precision (:data:`TOLERANCES`); fp32: max abs ≤ 1e-4 × scale and 100 % top-1 agreement.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from pthkit.model import Model

__all__ = [
    "PARITY_BATCH_SIZES",
    "TOLERANCES",
    "Agreement",
    "OutputDiff",
    "ParityReport",
    "Tolerance",
    "calibration_images",
    "check_parity",
    "flatten_outputs",
    "parity_inputs",
]

PARITY_BATCH_SIZES: tuple[int, ...] = (1, 2, 7)
_AGREEMENT_BATCH = 8
# At most this many user images are read for the agreement check.
MAX_IMAGES = 2000

Runnable = Callable[[torch.Tensor], Any]


@dataclass(frozen=True)
class Tolerance:
    """``max_abs``: allowed max absolute difference as a multiple of the output's scale (``None``: reported only);
    ``top1``: the least top-1 agreement (near ties excluded)."""

    max_abs: float | None
    top1: float


TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(1e-4, 1.0),
    "fp16": Tolerance(1e-2, 0.95),
    "bf16": Tolerance(5e-2, 0.9),
    "int8": Tolerance(None, 0.8),
}


@dataclass
class OutputDiff:
    output: str
    batch_size: int
    max_abs: float
    max_rel: float
    scale: float

    @property
    def ratio(self) -> float:
        """max_abs / scale: what the tolerance is compared with."""
        return self.max_abs / self.scale if self.scale > 0 else (0.0 if self.max_abs == 0 else math.inf)


@dataclass
class Agreement:
    inputs: str
    count: int
    top1: float
    top5_overlap: float
    near_ties: int = 0
    disagreements: list[str] = field(default_factory=list)


@dataclass
class ParityReport:
    """The parity numbers of one export, the tolerance applied and the verdict (``passed``, ``failures``)."""

    format: str
    precision: str
    tolerance: Tolerance
    diffs: list[OutputDiff] = field(default_factory=list)
    agreements: list[Agreement] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def worst_ratio(self) -> float:
        return max((d.ratio for d in self.diffs), default=0.0)

    def summary(self) -> str:
        """One line: ``parity passed: max abs 3.1e-06 (2.4e-07 × scale), top-1 44/44, top-5 overlap 100%``."""
        worst = max(self.diffs, key=lambda d: d.ratio, default=None)
        parts = []
        if worst is not None:
            parts.append(f"max abs {worst.max_abs:.2g} ({worst.ratio:.2g} × scale)")
        for a in self.agreements:
            ties = f", {a.near_ties} near tie(s)" if a.near_ties else ""
            parts.append(f"top-1 {round(a.top1 * a.count)}/{a.count} on {a.inputs}{ties}, "
                         f"top-5 overlap {a.top5_overlap:.0%}")
        verdict = "passed" if self.passed else "FAILED (" + "; ".join(self.failures) + ")"
        return f"parity {verdict}: " + ", ".join(parts)

    def describe(self) -> str:
        """The full table, one line per output and batch size, then the agreement lines."""
        lines = [f"parity of the {self.format} export ({self.precision}) against torch:"]
        for d in self.diffs:
            lines.append(f"  {d.output} batch {d.batch_size}: max abs {d.max_abs:.3g}, max rel {d.max_rel:.3g} "
                         f"(scale {d.scale:.3g})")
        for a in self.agreements:
            lines.append(f"  {a.inputs}: top-1 agreement {a.top1:.1%} ({a.count} inputs, {a.near_ties} near ties), "
                         f"top-5 overlap {a.top5_overlap:.1%}")
        tol = self.tolerance
        lines.append("  tolerance: " + (f"max abs ≤ {tol.max_abs:g} × scale, " if tol.max_abs is not None else "")
                     + f"top-1 ≥ {tol.top1:.0%}")
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("  " + ("passed" if self.passed else "FAILED: " + "; ".join(self.failures)))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "precision": self.precision, "passed": self.passed,
            "tolerance": asdict(self.tolerance),
            "diffs": [asdict(d) | {"ratio": d.ratio} for d in self.diffs],
            "agreements": [asdict(a) for a in self.agreements],
            "failures": list(self.failures), "notes": list(self.notes),
        }

    def write(self, path: str | os.PathLike[str]) -> Path:
        target = Path(path)
        target.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")
        return target


def flatten_outputs(outputs: Any) -> list[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` per output: one tensor → ``output``; tuple/list → ``output0``…; dict → its keys."""
    if isinstance(outputs, torch.Tensor):
        return [("output", outputs)]
    if isinstance(outputs, dict):
        return [(str(k), v) for k, v in outputs.items() if isinstance(v, torch.Tensor)]
    if isinstance(outputs, (tuple, list)):
        flat: list[tuple[str, torch.Tensor]] = []
        for i, v in enumerate(outputs):
            flat += [(f"output{i}" if n == "output" else f"output{i}.{n}", t) for n, t in flatten_outputs(v)]
        return flat
    return []


# --- inputs ----------------------------------------------------------------------------------------------------------


def calibration_images() -> list[Path]:
    """The packaged calibration images (crops and whole photos); scikit-image's photos where they are missing."""
    from pthkit import samples

    try:
        return [*samples.calibration_crops(), *samples.calibration_photos()]
    except Exception:  # noqa: BLE001 - the package data is missing; fall back to installed sample photos
        return samples.demo_photos()


_CALIBRATION_CACHE: dict[str, torch.Tensor | None] = {}


def _calibration_tensors(preprocess: Any) -> torch.Tensor | None:
    """The calibration images through ``preprocess`` (memoized per pipeline: parity runs several times per export)."""
    key = json.dumps(preprocess.to_dict(), sort_keys=True, default=str)
    if key not in _CALIBRATION_CACHE:
        if len(_CALIBRATION_CACHE) > 8:
            _CALIBRATION_CACHE.clear()
        _CALIBRATION_CACHE[key] = _load_images(calibration_images(), preprocess)[0]
    cached = _CALIBRATION_CACHE[key]
    return cached.clone() if cached is not None else None


def _load_images(paths: Sequence[str | Path], preprocess: Any) -> tuple[torch.Tensor | None, list[str]]:
    """The images as predict feeds them (same decoder, draft decoding and transform); names of those that failed."""
    from pthkit.data.images import ImageSource

    source = ImageSource([str(p) for p in paths], preprocess, workers=0)
    tensors: list[torch.Tensor] = []
    failed: list[str] = []
    for batch in source.batches(16):
        failed += [f"{source.name(i)}: {msg}" for i, msg in batch.failed]
        if batch.tensors is None:
            continue
        t = batch.tensors
        tensors.append(batch.finish(t) if batch.finish is not None else t.float())
    return (torch.cat(tensors) if tensors else None), failed


def random_inputs(model: Model, n: int, seed: int = 0) -> torch.Tensor:
    spec = model.input_spec
    shape = tuple(8 if v is None else int(v) for v in spec.shape)
    g = torch.Generator().manual_seed(seed)
    if spec.dtype == "int64":
        high = spec.num_embeddings or 2
        return torch.randint(0, high, (n, *shape), generator=g)
    return torch.randn((n, *shape), generator=g)


def parity_inputs(model: Model, images: Sequence[str | os.PathLike[str]] | None = None) -> list[tuple[str, torch.Tensor]]:
    """Named input sets for the agreement check: the calibration images (image models) or seeded random inputs, then
    the user's ``images``."""
    sets: list[tuple[str, torch.Tensor]] = []
    if model.is_image_model and model.preprocess is not None:
        cal = _calibration_tensors(model.preprocess)
        if cal is not None:
            sets.append((f"calibration images ({len(cal)})", cal))
        if images:
            from pthkit.data.inputs import expand_inputs

            paths = expand_inputs(list(images))[:MAX_IMAGES]
            mine, failed = _load_images(paths, model.preprocess)
            if mine is not None:
                sets.append((f"your images ({len(mine)})", mine))
            if failed:
                from pthkit.errors import ImageError

                raise ImageError.build("--images", received=f"{len(failed)} unreadable (first: {failed[0]})",
                                       expected="images pthkit can decode")
    else:
        sets.append(("random inputs (seeded, 32)", random_inputs(model, 32)))
    return sets


# --- the check -------------------------------------------------------------------------------------------------------


def _run(fn: Runnable, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    with torch.inference_mode():
        return [(n, t.detach().float().cpu()) for n, t in flatten_outputs(fn(x))]


def _diff(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float, float]:
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    if ref.shape != got.shape:
        return math.inf, math.inf, scale
    delta = (ref - got).abs()
    if not torch.isfinite(got).all():
        return math.inf, math.inf, scale
    max_abs = float(delta.max()) if delta.numel() else 0.0
    rel = delta / (ref.abs() + 1e-3 * scale + 1e-12)
    return max_abs, float(rel.max()) if rel.numel() else 0.0, scale


def check_parity(
    reference: Runnable,
    candidate: Runnable,
    inputs: Sequence[tuple[str, torch.Tensor]],
    *,
    format: str,
    precision: str = "fp32",
    output_names: Sequence[str] | None = None,
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
) -> ParityReport:
    """Compare ``candidate`` (an export's runner) with ``reference`` (the torch model) on ``inputs``.

    The batch-size differences use the first input set (repeated when it has fewer examples than a batch size).
    Output names come from ``output_names`` (the export's) when given, else from the reference's structure.
    """
    tol = TOLERANCES.get(precision, TOLERANCES["fp32"])
    report = ParityReport(format=format, precision=precision, tolerance=tol)
    if not inputs:
        report.failures.append("no inputs to compare on")
        return report
    base = inputs[0][1]
    for bs in batch_sizes:
        reps = math.ceil(bs / len(base))
        x = base.repeat(reps, *([1] * (base.dim() - 1)))[:bs] if reps > 1 else base[:bs]
        ref = _run(reference, x)
        try:
            got = _run(candidate, x)
        except Exception as err:  # noqa: BLE001 - any runtime failure is a parity failure, reported
            report.failures.append(f"batch {bs}: the export failed to run ({' '.join(str(err).split())[:160]})")
            continue
        if len(got) != len(ref):
            report.failures.append(f"batch {bs}: {len(got)} outputs, torch gives {len(ref)}")
            continue
        for i, ((name, r), (_, g)) in enumerate(zip(ref, got)):
            label = output_names[i] if output_names is not None and i < len(output_names) else name
            max_abs, max_rel, scale = _diff(r, g)
            report.diffs.append(OutputDiff(label, bs, max_abs, max_rel, scale))
            if r.shape != g.shape:
                report.failures.append(f"{label} batch {bs}: shape {tuple(g.shape)}, torch {tuple(r.shape)}")
    if tol.max_abs is not None:
        bad = [d for d in report.diffs if not d.ratio <= tol.max_abs]
        if bad:
            worst = max(bad, key=lambda d: d.ratio)
            report.failures.append(f"max abs difference {worst.max_abs:.3g} on {worst.output} at batch "
                                   f"{worst.batch_size} is {worst.ratio:.3g} × the output scale (allowed "
                                   f"{tol.max_abs:g})")
    for name, x in inputs:
        agreement = _agreement(reference, candidate, name, x, tol)
        if agreement is None:
            continue
        report.agreements.append(agreement)
        if agreement.top1 + 1e-12 < tol.top1:
            report.failures.append(f"top-1 agreement {agreement.top1:.1%} on {name} (allowed ≥ {tol.top1:.0%})")
    if not report.agreements:
        report.notes.append("no 2-D class-score output: top-1/top-5 agreement not applicable")
    return report


def _agreement(reference: Runnable, candidate: Runnable, name: str, x: torch.Tensor, tol: Tolerance) -> Agreement | None:
    refs: list[torch.Tensor] = []
    gots: list[torch.Tensor] = []
    for start in range(0, len(x), _AGREEMENT_BATCH):
        chunk = x[start:start + _AGREEMENT_BATCH]
        r = _run(reference, chunk)
        try:
            g = _run(candidate, chunk)
        except Exception:  # noqa: BLE001 - reported as zero agreement for the chunk below
            g = []
        if not r or r[0][1].dim() != 2 or r[0][1].shape[1] < 2:
            return None
        refs.append(r[0][1])
        gots.append(g[0][1] if g and g[0][1].shape == r[0][1].shape else torch.full_like(r[0][1], math.nan))
    ref, got = torch.cat(refs), torch.cat(gots)
    k = min(5, ref.shape[1])
    top_ref, top_got = ref.topk(k, dim=1).indices, torch.nan_to_num(got, nan=-math.inf).topk(k, dim=1).indices
    agree = top_ref[:, 0] == top_got[:, 0]
    margin = ref.topk(2, dim=1).values
    gap = margin[:, 0] - margin[:, 1]
    scale = ref.abs().amax(dim=1)
    allowed = (tol.max_abs if tol.max_abs is not None else 1e-2) * 2 * scale
    ties = (~agree) & (gap <= allowed) & torch.isfinite(got).all(dim=1)
    ok = agree | ties
    overlap = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(top_ref, top_got)) / (k * len(ref))
    disagreements = [f"#{i}: torch {int(top_ref[i, 0])}, export {int(top_got[i, 0])}"
                     for i in torch.nonzero(~ok).flatten().tolist()[:5]]
    return Agreement(inputs=name, count=len(ref), top1=float(ok.float().mean()), top5_overlap=float(overlap),
                     near_ties=int(ties.sum()), disagreements=disagreements)
