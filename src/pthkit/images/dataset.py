"""Torch datasets over image files that report a bad image instead of stopping the run.

A failed image (missing, corrupt, truncated, not an image, decompression bomb) becomes a :class:`Sample` with
``tensor=None`` and the one-line error; :func:`collate_samples` stacks the good tensors of a batch and keeps the
failures beside them, so a DataLoader with worker processes carries errors back to the main process in order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from pthkit.data.inputs import folder_images as _folder_images
from pthkit.errors import DatasetError, PthkitError
from pthkit.images.decode import open_image

__all__ = [
    "DRAFT_MARGIN",
    "Batch",
    "BatchNormalize",
    "ImageFolderDataset",
    "ImageListDataset",
    "Sample",
    "collate_samples",
    "draft_size_for",
    "split_transform",
    "worker_init",
]

Transform = Callable[[Image.Image], torch.Tensor]


class Sample(NamedTuple):
    """One dataset item: ``tensor`` is ``None`` when the image failed, and ``error`` says why."""

    tensor: torch.Tensor | None
    index: int
    target: int
    error: str | None


class Batch(NamedTuple):
    """A collated batch: ``tensors`` stacks the good images, whose dataset indices are ``indices``."""

    tensors: torch.Tensor | None
    indices: list[int]
    targets: torch.Tensor
    failed: list[tuple[int, str]]  # (dataset index, error message)


def collate_samples(samples: Sequence[Sample]) -> Batch:
    """DataLoader ``collate_fn`` for :class:`Sample` items (keeps failures out of the stacked tensor)."""
    good = [s for s in samples if s.tensor is not None]
    tensors = torch.stack([s.tensor for s in good]) if good else None  # type: ignore[misc]
    return Batch(
        tensors=tensors,
        indices=[s.index for s in good],
        targets=torch.tensor([s.target for s in good], dtype=torch.long),
        failed=[(s.index, s.error or "failed") for s in samples if s.tensor is None],
    )


def worker_init(_worker_id: int) -> None:
    """One intra-op thread per DataLoader worker: the workers run side by side with the model's threads."""
    torch.set_num_threads(1)


def split_transform(transform: Any) -> tuple[Any, Callable[[torch.Tensor], torch.Tensor] | None]:
    """Split an eval pipeline into a per-image part (PIL ops → uint8 ``(C, H, W)`` tensor) and a batch part.

    A ``transforms.v2.Compose`` ending in ``ToImage, ToDtype(float32, scale=True), Normalize`` (optionally followed
    by pthkit's ``ReverseChannels``) — what :meth:`Preprocess.transform` builds — is split after ``ToImage``: the
    decoding threads/workers then only run PIL code (which releases the GIL) and hand over uint8 tensors (4× less
    data), and the float conversion and normalization run once per batch on the main thread. The batch part
    (:class:`BatchNormalize`) does the same arithmetic element-wise, so the numbers are identical. Any other
    transform is returned whole, with ``None`` for the batch part. Hand-written because torchvision has no
    "split a Compose" helper.
    """
    from torchvision.transforms import v2

    steps = list(getattr(transform, "transforms", None) or []) if isinstance(transform, v2.Compose) else []
    tail: list[Any] = []
    if steps and type(steps[-1]).__name__ == "ReverseChannels":
        tail.insert(0, steps.pop())
    if (
        len(steps) >= 3
        and type(steps[-3]) is v2.ToImage
        and type(steps[-2]) is v2.ToDtype
        and type(steps[-1]) is v2.Normalize
        and steps[-2].dtype == torch.float32
        and steps[-2].scale
    ):
        norm = steps[-1]
        return v2.Compose(steps[:-2]), BatchNormalize(norm.mean, norm.std, reverse_channels=bool(tail))
    return transform, None


class BatchNormalize:
    """uint8 ``(N, C, H, W)`` batch → float32 ``(x / 255 - mean) / std`` (then channels reversed for BGR models).

    The same arithmetic, in the same order, as torchvision's ``ToDtype(float32, scale=True)`` + ``Normalize`` (so
    the numbers are bit-identical), done in place on one new float tensor: half the time of the two v2 transforms
    on a channels_last batch (0.45 vs 0.86 ms per 224 px image, 1 thread). Hand-written for that reason.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, reverse_channels: bool = False) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        self.reverse_channels = reverse_channels

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(torch.float32).mul_(1.0 / 255.0)
        x = x.sub_(self.mean.to(x.device)).div_(self.std.to(x.device))
        return x.flip(-3) if self.reverse_channels else x


# Reduced-size decoding keeps at least this multiple of the resize size. Measured on the real efficientnet-lite0
# weights (benchmarks/predict.py): asking for exactly the resize size flipped 2 of 80 top-1 answers (near-ties;
# e.g. a 512 px image decoded at 256 px); 1.5x flipped none and costs ~7% throughput.
DRAFT_MARGIN = 1.5


def draft_size_for(preprocess: Any, *, margin: float = DRAFT_MARGIN) -> tuple[int, int] | None:
    """The decoded size ``(w, h)`` to ask reduced-size JPEG decoding for, or ``None`` (decode in full).

    Read from ``effective_resize_size`` / ``resize_size`` (int: the shorter side, so both directions must stay ≥ it;
    ``(h, w)``: that size), else ``input_size``. Asking for both directions ≥ the resize size is right for every crop
    mode (center, squash, border) and never makes the pipeline upscale what full decoding would have downscaled.
    The size is multiplied by ``margin`` (see ``DRAFT_MARGIN``) so the final antialiased resize still does real work.
    """
    size = getattr(preprocess, "effective_resize_size", None)
    if size is None:
        size = getattr(preprocess, "resize_size", None)
    if size is None:
        input_size = getattr(preprocess, "input_size", None)
        if input_size is None:
            return None
        size = tuple(input_size[-2:])
    if isinstance(size, (int, float)):
        size = (size, size)
    size = tuple(math.ceil(float(v) * margin) for v in size)
    if len(size) == 1:
        return size[0], size[0]
    return size[1], size[0]  # (h, w) -> (w, h)


class _FilesDataset(Dataset[Sample]):
    def __init__(
        self,
        items: Sequence[tuple[Path | Image.Image, int]],
        transform: Transform | None,
        *,
        draft_size: tuple[int, int] | None = None,
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.draft_size = draft_size

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Image.Image:
        """The RGB image at ``index`` (raises the pthkit error)."""
        source, _ = self.items[index]
        return open_image(source, draft_size=self.draft_size)

    def __getitem__(self, index: int) -> Sample:
        target = self.items[index][1]
        try:
            img = self.load(index)
            tensor = self.transform(img) if self.transform is not None else _to_tensor(img)
        except PthkitError as err:
            return Sample(None, index, target, str(err))
        except Exception as err:  # noqa: BLE001 - a transform failing on one odd image must not end the run
            return Sample(None, index, target, f"preprocessing failed: {type(err).__name__}: {' '.join(str(err).split())}")
        return Sample(tensor, index, target, None)


def _to_tensor(img: Image.Image) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as F

    return F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)


class ImageListDataset(_FilesDataset):
    """Images from a list of paths (or PIL images), in that order; items are :class:`Sample` (target is -1)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str] | Image.Image],
        transform: Transform | None = None,
        *,
        draft_size: tuple[int, int] | None = None,
    ) -> None:
        items = [(p if isinstance(p, Image.Image) else Path(p), -1) for p in paths]
        super().__init__(items, transform, draft_size=draft_size)

    @property
    def paths(self) -> list[Path | Image.Image]:
        return [p for p, _ in self.items]


class ImageFolderDataset(_FilesDataset):
    """``root/<class>/**/<image>`` (torchvision ImageFolder layout); items are :class:`Sample` with the class index.

    Classes are the sub-folder names, sorted; unreadable images are reported per item, not raised.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: Transform | None = None,
        *,
        classes: Sequence[str] | None = None,
        draft_size: tuple[int, int] | None = None,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DatasetError.build(
                "image folder", received=f"{str(root)!r} (not a folder)", expected="a folder with one sub-folder per class",
                hint="Check the path.",
            )
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        self.classes = list(classes) if classes is not None else found
        if not self.classes:
            raise DatasetError.build(
                "image folder", received=f"{str(root)!r} with no sub-folders", expected="one sub-folder per class",
                hint="Put each class's images in root/<class name>/.",
            )
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        items: list[tuple[Path | Image.Image, int]] = []
        for name in self.classes:
            folder = root / name
            if folder.is_dir():
                items.extend((p, self.class_to_idx[name]) for p in _folder_images(folder, True))
        if not items:
            raise DatasetError.build(
                "image folder", received=f"{str(root)!r} with no images", expected="image files in the class folders",
                hint="Image extensions: .jpg, .png, .webp, …",
            )
        self.root = root
        super().__init__(items, transform, draft_size=draft_size)

    @property
    def targets(self) -> list[int]:
        return [t for _, t in self.items]
