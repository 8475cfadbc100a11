"""Post-load sanity checks: do the model's predictions on different photos look like a working classifier?

Wrongly loaded weights (a head left random, BN statistics missing) or a wrong normalization usually show up as
outputs that ignore the input: the same top-1 class for every photo, identical logits, or a near-uniform softmax.
These checks cannot prove a model right; they catch the common ways it is silently wrong.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from pthkit.errors import PreprocessError

if TYPE_CHECKING:
    from PIL import Image

    from pthkit.preprocess.types import Preprocess

__all__ = ["check_predictions_sane", "check_model_sane"]

UNIFORM_ENTROPY = 0.95  # mean normalized entropy above which softmax outputs count as near-uniform
_HINT = "the weights may be loaded wrong, or the preprocessing (normalization) may not match the weights"


def check_predictions_sane(
    logits: Any, *, mode: Literal["softmax", "sigmoid", "logits"] = "softmax",
    label_names: Sequence[str] | None = None,
) -> list[str]:
    """Warnings (empty when all looks fine) about outputs for *different* images: ``(N, C)`` logits.

    Flags non-finite outputs, outputs identical across images (N ≥ 2), the same top-1 class for every image (N ≥ 3),
    and near-uniform probabilities (softmax: mean normalized entropy > 0.95 with C ≥ 3; sigmoid: every probability
    within 0.45–0.55).
    """
    x = torch.as_tensor(logits).detach().float().cpu()
    if x.ndim == 1:
        x = x.unsqueeze(0)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise PreprocessError.build("prediction check", received=f"outputs of shape {tuple(x.shape)}",
                                    expected="(images, classes) logits", hint="Pass the model's classifier outputs.")
    n, c = x.shape
    warnings: list[str] = []
    finite = torch.isfinite(x).all(dim=1)
    if not finite.all():
        bad = int((~finite).sum())
        warnings.append(f"{bad} of {n} outputs contain NaN or infinite values: {_HINT}")
        x = x[finite]
        n = x.shape[0]
        if n == 0:
            return warnings
    if n >= 2:
        spread = (x - x.mean(dim=0, keepdim=True)).abs().max()
        if float(spread) <= 1e-5 * max(1.0, float(x.abs().max())):
            warnings.append(f"the outputs are identical for all {n} different images - the model ignores its input: "
                            f"{_HINT}")
            return warnings
    if n >= 3 and c >= 2:
        top = x.argmax(dim=1)
        if bool((top == top[0]).all()):
            k = int(top[0])
            name = f" ({label_names[k]})" if label_names is not None and k < len(label_names) else ""
            warnings.append(f"all {n} different sample images get the same top-1 class {k}{name}: {_HINT}")
    if mode == "softmax" and c >= 3:
        p = x.softmax(dim=1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1) / math.log(c)
        if float(entropy.mean()) > UNIFORM_ENTROPY:
            warnings.append(
                f"predictions are nearly uniform (mean top-1 probability {float(p.max(dim=1).values.mean()):.2%} "
                f"over {c} classes, normalized entropy {float(entropy.mean()):.2f}): {_HINT}"
            )
    elif mode == "sigmoid":
        p = x.sigmoid()
        if bool(((p > 0.45) & (p < 0.55)).all()):
            warnings.append(f"every sigmoid probability is within 0.45-0.55: {_HINT}")
    return warnings


def check_model_sane(
    model: torch.nn.Module, preprocess: "Preprocess", *,
    images: Sequence[str | os.PathLike | "Image.Image"] | None = None,
    mode: Literal["softmax", "sigmoid", "logits"] = "softmax",
) -> list[str]:
    """Run ``model`` on sample photos and return warnings.

    Default photos: the ones packaged with pthkit (:func:`pthkit.samples.calibration_photos`: coffee, cat, rocket,
    astronaut), so the check runs the same on every install and is never skipped for want of an optional package.

    :func:`check_predictions_sane` first; then, for a 1000-output (ImageNet-1k) head on the default photos, the photos
    of known content (coffee → espresso, cat, rocket → missile) must mostly get their class in the top 5 — this
    catches a wrong normalization that still gives confident, varied (but meaningless) predictions. The model is run
    in eval mode without gradients and left as it was.
    """
    from PIL import Image

    known: dict[int, str] = {}
    if images is None:
        from pthkit.samples import CALIBRATION_PHOTOS, calibration_photos

        images = calibration_photos()
        known = {i: CALIBRATION_PHOTOS.get(Path(p).name, "") for i, p in enumerate(images)}
    tf = preprocess.transform()
    batch = []
    for item in images:
        if isinstance(item, Image.Image):
            batch.append(tf(item.convert("RGB")))
        else:
            with Image.open(item) as im:
                batch.append(tf(im.convert("RGB")))
    param = next(iter(model.parameters()), None)
    x = torch.stack(batch)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype if param.dtype.is_floating_point else torch.float32)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[0]
    warnings = check_predictions_sane(out, mode=mode, label_names=preprocess.label_names)
    if known and not warnings and mode == "softmax":
        warnings += _known_content_check(out, preprocess.label_names, known, [Path(p).name for p in images if not isinstance(p, Image.Image)])
    return warnings


# ImageNet-1k classes that count as "cat" for the sample photo of a cat.
_CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def _known_content_check(out: torch.Tensor, names: Sequence[str] | None, known: dict[int, str],
                         files: list[str]) -> list[str]:
    """For an ImageNet-1k head: the sample photos with known content should get their class in the top 5."""
    from pthkit.preprocess.sources import imagenet_label_names

    imagenet = imagenet_label_names()
    if out.ndim != 2 or out.shape[1] != 1000 or (names is not None and list(names) != imagenet):
        return []
    names = imagenet  # a 1000-output head without names is taken to be ImageNet-1k
    top5 = out.float().topk(5, dim=1).indices.cpu()
    checked, hits, misses = 0, 0, []
    for i, expected in known.items():
        if not expected:
            continue
        wanted = _CAT_CLASSES if expected == "cat" else {expected}
        got = [names[k] for k in top5[i].tolist()]
        checked += 1
        if wanted & set(got):
            hits += 1
        else:
            misses.append(f"{files[i]} -> {got[0]} (expected {expected})")
    if checked >= 2 and hits < checked / 2:
        return [f"only {hits} of {checked} sample photos with known content get their class in the top 5 "
                f"({'; '.join(misses)}): {_HINT}"]
    return []
