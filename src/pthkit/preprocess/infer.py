"""Infer the input normalization a model was trained with, from its batch-norm running statistics.

Why this works: a batch-norm layer's ``running_mean`` / ``running_var`` are the average statistics of *its input*
over the training data. For the first batch-norm after the stem, that input is (nearly) a linear function of the
pixels, so its statistics fingerprint the pixel pipeline: feeding natural photos under ImageNet mean/std gives a
variance about 4.7x that under 0.5/0.5 (std 0.226 vs 0.5 → ratio² ≈ 4.9), raw 0–255 inputs 65,000x larger, and a
missing mean subtraction shifts the channel means. We run sample photos, under each candidate pipeline, up to that
layer, and compare the statistics they produce with the stored ones. No library does this, hence the hand-written
code.

The distance, per channel ``c`` of the first batch-norm (predicted mean/var ``m, v`` vs stored ``μ, σ²``)::

    d_c = ½·|log(v / σ²)|  +  |m − μ| / sqrt((v + σ²) / 2)

is scale-aware: the log ratio is the same whether the model's activations are large or small, and the mean term is
in units of the channel's own spread. ``d`` is the mean over channels whose stored variance is not ~0 (dead channels
say nothing). Scale and offset families (ImageNet vs 0.5/0.5 vs [0,1] vs 0–255) separate well; RGB vs BGR usually
does not (natural photos' channels are highly correlated), so near-ties between a pipeline and its channel-reversed
twin are reported as such and resolved to RGB, the common default.

Confidence: ``margin`` = distance of the best candidate of *another* family / best distance. ``high`` when margin
≥ 1.5 and the best fit is good (d ≤ 1.0); ``medium`` when margin ≥ 1.2 and d ≤ 2.0; ``low`` otherwise. These
thresholds were set on models whose statistics were produced under known pipelines (see tests/preprocess) and on
the real efficientnet-lite0 file (0.5/0.5; margin ≈ 2).
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from pthkit.errors import PreprocessError, PthkitError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "NormCandidate",
    "NormalizationGuess",
    "DEFAULT_CANDIDATES",
    "infer_normalization",
    "describe_normalization",
    "sample_batch",
    "default_sample_paths",
    "calibration_batch",
]

Confidence = Literal["high", "medium", "low"]

HIGH_MARGIN = 1.5
MEDIUM_MARGIN = 1.2
HIGH_MAX_DISTANCE = 1.0
MEDIUM_MAX_DISTANCE = 2.0
# Relative gap under which a pipeline and its channel-reversed twin are called a tie.
CHANNEL_TIE = 0.15


@dataclass(frozen=True)
class NormCandidate:
    """One pixel pipeline to test: ``(x·scale → channel order → (x − mean) / std)`` with ``x`` in [0, 1] RGB."""

    name: str
    label: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: float = 1.0
    channel_order: Literal["rgb", "bgr"] = "rgb"
    family: str = ""

    def apply(self, batch: torch.Tensor) -> torch.Tensor:
        """Apply to a ``(N, 3, H, W)`` float batch in [0, 1], RGB."""
        x = batch * self.scale
        if self.channel_order == "bgr":
            x = x.flip(1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "label": self.label, "mean": list(self.mean), "std": list(self.std),
            "scale": self.scale, "channel_order": self.channel_order, "family": self.family,
        }


_IM_MEAN = (0.485, 0.456, 0.406)
_IM_STD = (0.229, 0.224, 0.225)
_CAFFE_BGR = (103.94, 116.78, 123.68)

DEFAULT_CANDIDATES: tuple[NormCandidate, ...] = (
    NormCandidate("imagenet", "ImageNet mean/std, RGB in [0,1]", _IM_MEAN, _IM_STD, 1.0, "rgb", "imagenet"),
    NormCandidate("imagenet-bgr", "ImageNet mean/std, BGR in [0,1]", _IM_MEAN[::-1], _IM_STD[::-1], 1.0, "bgr",
                  "imagenet"),
    NormCandidate("half", "0.5/0.5 (inputs in [-1,1]), RGB", (0.5,) * 3, (0.5,) * 3, 1.0, "rgb", "half"),
    NormCandidate("half-bgr", "0.5/0.5 (inputs in [-1,1]), BGR", (0.5,) * 3, (0.5,) * 3, 1.0, "bgr", "half"),
    NormCandidate("unit", "no normalization, RGB in [0,1]", (0.0,) * 3, (1.0,) * 3, 1.0, "rgb", "unit"),
    NormCandidate("raw255", "no normalization, raw RGB 0-255", (0.0,) * 3, (1.0,) * 3, 255.0, "rgb", "raw255"),
    NormCandidate("caffe", "caffe style: BGR 0-255 minus mean (103.94, 116.78, 123.68), std 1", _CAFFE_BGR,
                  (1.0,) * 3, 255.0, "bgr", "caffe"),
    NormCandidate("caffe-rgb", "RGB 0-255 minus mean (123.68, 116.78, 103.94), std 1", _CAFFE_BGR[::-1], (1.0,) * 3,
                  255.0, "rgb", "caffe"),
)


def describe_normalization(
    mean: Sequence[float], std: Sequence[float], scale: float = 1.0, channel_order: str = "rgb"
) -> str:
    """A short name for a normalization: a known candidate's label, or the raw numbers."""
    for cand in DEFAULT_CANDIDATES:
        if (
            cand.channel_order == channel_order
            and math.isclose(cand.scale, scale, rel_tol=1e-6)
            and len(mean) == len(cand.mean)
            and all(math.isclose(a, b, rel_tol=2e-3, abs_tol=1e-3 * scale) for a, b in zip(mean, cand.mean))
            and all(math.isclose(a, b, rel_tol=2e-3, abs_tol=1e-3 * scale) for a, b in zip(std, cand.std))
        ):
            return cand.label
    values = ", ".join(f"{v:g}" for v in mean), ", ".join(f"{v:g}" for v in std)
    return f"mean ({values[0]}), std ({values[1]}), scale {scale:g}, {channel_order.upper()}"


@dataclass
class NormalizationGuess:
    """The inferred normalization, the evidence for it, and how sure it is.

    ``candidate`` is ``None`` when nothing could be inferred (no batch-norm, untrained statistics, the model did not
    run on RGB images …); ``message`` then says why. ``distances`` maps each candidate name to its distance (lower
    fits better), best first; ``margin`` is the runner-up family's distance over the best one's.
    """

    candidate: NormCandidate | None
    confidence: Confidence
    message: str
    distances: dict[str, float] = field(default_factory=dict)
    margin: float | None = None
    channel_order_tie: bool = False
    layer: str | None = None
    images: int = 0
    crops: int = 0
    evidence: list[str] = field(default_factory=list)

    @property
    def available(self) -> bool:
        return self.candidate is not None

    @property
    def confident(self) -> bool:
        """Whether the guess is strong enough to act on (``high`` or ``medium``)."""
        return self.candidate is not None and self.confidence in ("high", "medium")

    @property
    def mean(self) -> tuple[float, ...] | None:
        return self.candidate.mean if self.candidate else None

    @property
    def std(self) -> tuple[float, ...] | None:
        return self.candidate.std if self.candidate else None

    @property
    def scale(self) -> float | None:
        return self.candidate.scale if self.candidate else None

    @property
    def channel_order(self) -> str | None:
        return self.candidate.channel_order if self.candidate else None

    @property
    def source(self) -> str:
        """The provenance string :class:`Preprocess.sources` records for values taken from this guess."""
        return f"inferred from batch-norm statistics (confidence {self.confidence})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "candidate": self.candidate.to_dict() if self.candidate else None,
            "confidence": self.confidence,
            "message": self.message,
            "distances": dict(self.distances),
            "margin": self.margin,
            "channel_order_tie": self.channel_order_tie,
            "layer": self.layer,
            "images": self.images,
            "crops": self.crops,
            "evidence": list(self.evidence),
        }

    def __str__(self) -> str:
        lines = [self.message]
        if self.distances:
            lines.append("distance per candidate (lower fits better): " + ", ".join(
                f"{name} {d:.3f}" for name, d in self.distances.items()))
        lines += self.evidence
        return "\n".join(lines)


def _unavailable(message: str, **kwargs: Any) -> NormalizationGuess:
    return NormalizationGuess(candidate=None, confidence="low", message=message, **kwargs)


# --- sample images ---------------------------------------------------------------------------------------------------


def default_sample_paths() -> list[Path]:
    """The calibration crops packaged with pthkit (never photos of optional packages: answers must not depend on
    which extras are installed)."""
    from pthkit import samples

    return samples.calibration_crops()


@functools.lru_cache(maxsize=8)
def _calibration_tensor(size: int) -> torch.Tensor:
    from PIL import Image
    from torchvision.transforms import v2

    crops = []
    for path in default_sample_paths():
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            crops.append(v2.functional.to_dtype(v2.functional.pil_to_tensor(im), torch.float32, scale=True))
    return torch.stack(crops)


def calibration_batch(size: int = 128, count: int | None = None) -> torch.Tensor:
    """The packaged calibration crops as a ``(N, 3, size, size)`` float batch in [0, 1], RGB (deterministic).

    ``count`` takes that many crops spread evenly over the sorted list (every source photo stays represented).
    """
    full = _calibration_tensor(int(size))
    if count is None or count >= full.shape[0]:
        return full.clone()
    idx = torch.linspace(0, full.shape[0] - 1, max(1, int(count))).round().long()
    return full[idx].clone()


@functools.lru_cache(maxsize=4)
def _decoded(paths: tuple[str, ...], short_side: int) -> tuple["Image.Image", ...]:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.draft("RGB", (short_side * 2, short_side * 2))
            scale = short_side / min(im.size)
            if scale < 1:
                im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                               Image.Resampling.BILINEAR, reducing_gap=None)
            out.append(im.copy())
    return tuple(out)


def sample_batch(
    images: Sequence[str | os.PathLike[str] | "Image.Image"] | None = None, *, crops_per_image: int = 4, size: int = 128,
    seed: int = 0,
) -> torch.Tensor:
    """A ``(N, 3, size, size)`` float batch in [0, 1], RGB: random crops (25–100% area) of natural photos.

    Photos are first resized so the shorter side is ``1.15 × size`` (object scale close to ImageNet training crops);
    the crops are seeded, so the batch is the same on every call. ``images`` defaults to
    :func:`default_sample_paths`.
    """
    from PIL import Image
    from torchvision.transforms import v2

    short = max(size, round(size * 1.15))
    if images is None:
        images = default_sample_paths()
    paths = tuple(str(p) for p in images if not isinstance(p, Image.Image))
    pil = list(_decoded(paths, short)) if paths else []
    for im in images:
        if isinstance(im, Image.Image):
            im = im.convert("RGB")
            pil.append(v2.functional.resize(im, short, antialias=True) if min(im.size) > short else im)
    if not pil:
        raise PreprocessError.build(
            "sample images", received="no images", expected="at least one natural colour photo",
            hint="Pass images=[...] or install the sample packages: pip install 'pthkit[samples]'.",
        )
    tf = v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
    ])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        crops = [tf(im) for im in pil for _ in range(max(1, crops_per_image))]
    return torch.stack(crops)


# --- the first batch-norm --------------------------------------------------------------------------------------------


class _Captured(Exception):
    """Raised from the hook to stop the forward pass once the first batch-norm's input is seen."""


def _is_batchnorm(module: torch.nn.Module) -> bool:
    rm = getattr(module, "running_mean", None)
    rv = getattr(module, "running_var", None)
    return isinstance(rm, torch.Tensor) and isinstance(rv, torch.Tensor) and rm.ndim == 1


def _first_bn_input_stats(
    model: torch.nn.Module, batch: torch.Tensor, bns: dict[torch.nn.Module, str]
) -> tuple[str, torch.nn.Module, torch.Tensor, torch.Tensor]:
    """Run ``batch`` until the first batch-norm is called; its name, module and input per-channel mean / var."""
    got: dict[str, Any] = {}

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0].detach().float()
        dims = [d for d in range(x.ndim) if d != 1]
        got.update(module=module, mean=x.mean(dims), var=x.var(dims))
        raise _Captured

    handles = [m.register_forward_pre_hook(hook) for m in bns]
    try:
        model(batch)
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
    if not got:
        raise RuntimeError("the forward pass finished without calling any batch-norm layer")
    return bns[got["module"]], got["module"], got["mean"], got["var"]


def _distance(pm: torch.Tensor, pv: torch.Tensor, rm: torch.Tensor, rv: torch.Tensor, eps: float) -> float:
    live = rv > rv.max() * 1e-6
    pm, pv, rm, rv = pm[live], pv[live], rm[live], rv[live]
    log_ratio = 0.5 * ((pv + eps) / (rv + eps)).log().abs()
    shift = (pm - rm).abs() / ((pv + rv) / 2 + eps).sqrt()
    return float((log_ratio + shift).mean())


def infer_normalization(
    model: torch.nn.Module, *, images: Sequence[str | os.PathLike[str] | "Image.Image"] | torch.Tensor | None = None,
    candidates: Sequence[NormCandidate] | None = None, crops_per_image: int = 4, crop_size: int = 128, seed: int = 0,
) -> NormalizationGuess:
    """Guess which pixel normalization ``model`` was trained with, from its first batch-norm's running statistics.

    ``images``: photos (paths or PIL images) or a ``(N, 3, H, W)`` float batch in [0, 1] RGB; by default the 40
    calibration crops packaged with pthkit (:func:`calibration_batch`, at ``crop_size``). ``candidates`` default to
    :data:`DEFAULT_CANDIDATES`. The model is run in eval mode without gradients and left as it was.

    Never raises because inference is impossible: the returned guess then has ``candidate=None`` and a ``message``
    saying why (no batch-norm layer, statistics at their initial values, the model does not take RGB images …).
    Raises :class:`PreprocessError` for invalid arguments.
    """
    cands = list(candidates) if candidates is not None else list(DEFAULT_CANDIDATES)
    if not cands:
        raise PreprocessError.build("normalization candidates", received="an empty list",
                                    expected="at least one NormCandidate", hint="Omit candidates= for the defaults.")
    bns = {m: name for name, m in model.named_modules() if _is_batchnorm(m)}
    if not bns:
        return _unavailable("cannot infer normalization: the model has no batch-norm layer with running statistics")

    packaged = images is None
    if images is None:
        images = calibration_batch(crop_size)
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise PreprocessError.build("sample images", received=f"a tensor of shape {tuple(images.shape)}",
                                        expected="a (N, 3, H, W) float batch in [0, 1], RGB",
                                        hint="Pass photos (paths or PIL images) instead.")
        batch = images.float()
    else:
        try:
            batch = sample_batch(images, crops_per_image=crops_per_image, size=crop_size, seed=seed)
        except (PthkitError, OSError) as err:
            return _unavailable(f"cannot infer normalization: no sample images ({err})")
    n_images = batch.shape[0] // max(1, crops_per_image) if not isinstance(images, torch.Tensor) else batch.shape[0]

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
    was_training = {m: m.training for m in model.modules()}
    model.eval()
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    retry = False
    layer: str | None = None
    bn: torch.nn.Module | None = None
    try:
        with torch.no_grad():
            for cand in cands:
                x = cand.apply(batch).to(device=device, dtype=dtype)
                try:
                    layer, bn, mean, var = _first_bn_input_stats(model, x, bns)
                except Exception as err:  # noqa: BLE001 - any failure of foreign model code means "cannot infer"
                    if crop_size < 224 and (packaged or not isinstance(images, torch.Tensor)):
                        retry = True  # models with a fixed input size (timm fixed_input_size): try 224 once
                        break
                    return _unavailable(
                        f"cannot infer normalization: running the model on {tuple(x.shape)} RGB images failed "
                        f"({type(err).__name__}: {' '.join(str(err).split())[:160]})"
                    )
                stats[cand.name] = (mean, var)
    finally:
        for m, flag in was_training.items():
            m.training = flag
    if retry:
        return infer_normalization(model, images=None if packaged else images, candidates=cands,
                                   crops_per_image=crops_per_image, crop_size=224, seed=seed)

    if bn is None or layer is None:  # unreachable: cands is not empty
        return _unavailable("cannot infer normalization: no candidate was run")
    running_mean, running_var = bn.running_mean, bn.running_var
    assert isinstance(running_mean, torch.Tensor) and isinstance(running_var, torch.Tensor)
    rm = running_mean.detach().float().cpu()
    rv = running_var.detach().float().cpu()
    common = {"layer": layer, "images": n_images, "crops": int(batch.shape[0])}
    if not (torch.isfinite(rm).all() and torch.isfinite(rv).all()) or float(rv.max()) <= 0:
        return _unavailable(f"cannot infer normalization: the running statistics of {layer} are not usable", **common)
    if torch.allclose(rm, torch.zeros_like(rm)) and torch.allclose(rv, torch.ones_like(rv)):
        return _unavailable(
            f"cannot infer normalization: the running statistics of {layer} are at their initial values (mean 0, "
            "var 1) - the model was never trained or its statistics were not loaded", **common)
    eps = float(getattr(bn, "eps", 1e-5))
    distances = {
        name: _distance(m.cpu(), v.cpu(), rm, rv, eps) for name, (m, v) in stats.items()
    }
    if not all(math.isfinite(d) for d in distances.values()):
        return _unavailable(f"cannot infer normalization: non-finite statistics at {layer}", **common)
    return _decide(cands, dict(sorted(distances.items(), key=lambda kv: kv[1])), common)


def _decide(cands: list[NormCandidate], distances: dict[str, float], common: dict[str, Any]) -> NormalizationGuess:
    by_name = {c.name: c for c in cands}
    distances = dict(sorted(distances.items(), key=lambda kv: kv[1]))
    best = by_name[next(iter(distances))]
    d_best = distances[best.name]
    evidence: list[str] = [f"first batch-norm layer: {common['layer']} ({common['crops']} crops of "
                           f"{common['images']} photos)"]

    twin = next((c for c in cands if c.family == best.family and c.name != best.name
                 and c.channel_order != best.channel_order), None)
    tie = False
    if twin is not None:
        gap = (distances[twin.name] - d_best) / max(d_best, 1e-9)
        if gap < CHANNEL_TIE:
            tie = True
            rgb, bgr = (best, twin) if best.channel_order == "rgb" else (twin, best)
            evidence.append(
                f"rgb and bgr fit equally well (distance rgb {distances[rgb.name]:.3f} vs bgr "
                f"{distances[bgr.name]:.3f}: {best.channel_order} {gap:.0%} closer, under the {CHANNEL_TIE:.0%} "
                "needed to tell them apart); choosing rgb, the common default - pass --channel-order bgr if the "
                "model was trained on BGR images"
            )
            best = rgb
            d_best = distances[rgb.name]
        else:
            evidence.append(
                f"{best.channel_order} fits better than {twin.channel_order} "
                f"(distance {d_best:.3f} vs {distances[twin.name]:.3f})"
            )
    others = [d for name, d in distances.items() if by_name[name].family != best.family]
    margin = (min(others) + 1e-9) / (d_best + 1e-9) if others else None
    if margin is None:
        confidence: Confidence = "low"
        evidence.append("only one family of candidates was tested: no margin to judge by")
    elif margin >= HIGH_MARGIN and d_best <= HIGH_MAX_DISTANCE:
        confidence = "high"
    elif margin >= MEDIUM_MARGIN and d_best <= MEDIUM_MAX_DISTANCE:
        confidence = "medium"
    else:
        confidence = "low"
    if d_best > MEDIUM_MAX_DISTANCE:
        evidence.append(f"no candidate fits well (best distance {d_best:.3f} > {MEDIUM_MAX_DISTANCE}): the model may "
                        "have been trained on other kinds of images or with another pipeline")
    runner = next((n for n in distances if by_name[n].family != best.family), None)
    margin_text = (f"{margin:.2f}x closer than the next family ({by_name[runner].label})"
                   if margin is not None and runner else "no other family tested")
    message = (f"inferred normalization: {best.label} - confidence {confidence}; distance {d_best:.3f}, "
               f"{margin_text}")
    return NormalizationGuess(
        candidate=best, confidence=confidence, message=message, distances=distances, margin=margin,
        channel_order_tie=tie, evidence=evidence, **common,
    )
