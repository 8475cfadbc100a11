"""Image datasets and the engine's image input source: decode each file robustly, report a bad image instead of
stopping the run, and deliver batches in input order.

A failed image (missing, corrupt, truncated, not an image, decompression bomb) becomes a :class:`Sample` with
``tensor=None`` and the one-line error; :func:`collate_samples` stacks the good tensors of a batch and keeps the
failures beside them, so a DataLoader with worker processes carries errors back to the main process in order.

:class:`ImageSource` is what :class:`pthkit.engine.Engine` reads for predict and evaluate (the same decoding for
both: reduced-size JPEG decoding, per-image PIL work ending at a uint8 tensor, float conversion + normalization once
per batch). On CPU it decodes in a pool of lower-priority threads of this process, a batch ahead of the model; on an
accelerator (or with ``workers=N``) in DataLoader worker processes.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from pthkit.data.inputs import folder_images
from pthkit.engine.types import Batch
from pthkit.errors import DatasetError, PreprocessError, PthkitError
from pthkit.images.decode import open_image

__all__ = [
    "DECODE_NICENESS",
    "DRAFT_MARGIN",
    "Batch",
    "BatchNormalize",
    "ImageFolderDataset",
    "ImageListDataset",
    "ImageSource",
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
    index: int  # type: ignore[assignment]  # shadows tuple.index, as the name every caller uses
    target: int
    error: str | None


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

    tensor: torch.Tensor = F.to_dtype(F.pil_to_tensor(img), torch.float32, scale=True)
    return tensor


class ImageListDataset(_FilesDataset):
    """Images from a list of paths (or PIL images), in that order; items are :class:`Sample` (target: ``targets[i]``,
    or -1 when unlabelled)."""

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str] | Image.Image],
        transform: Transform | None = None,
        *,
        draft_size: tuple[int, int] | None = None,
        targets: Sequence[int] | None = None,
    ) -> None:
        if targets is not None and len(targets) != len(paths):
            raise DatasetError.build("targets", received=f"{len(targets)} targets for {len(paths)} images",
                                     expected="one target per image")
        labels = list(targets) if targets is not None else [-1] * len(paths)
        items = [(p if isinstance(p, Image.Image) else Path(p), int(t)) for p, t in zip(paths, labels)]
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
                items.extend((p, self.class_to_idx[name]) for p in folder_images(folder, True))
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


# --- the engine's image source -------------------------------------------------------------------------------------

# Niceness added to each decoding thread (Linux). Measured (lite0, 80 images, 2 cores, img/s): idle machine, decoding
# alternating with a 2-thread model 50, niced-5 decoding beside it 56 (niced 19: 57); one core held by another
# process: 28.6 (niced 19: 27.0) vs 28.4.
DECODE_NICENESS = 5
# From this many inputs on, a CPU run decodes in threads beside the model (below: inline, in the main thread).
MIN_INPUTS_FOR_THREADS = 2


def lower_priority() -> None:
    """Make the calling decoding thread yield to the model's threads (Linux: a thread is a schedulable task).

    Decoding then fills the cores' idle moments (the model's serial parts and barriers) instead of preempting the
    model's OpenMP threads, which would stall every thread of the model at its next barrier. Hand-written: neither
    concurrent.futures nor torch sets thread priorities. Best effort: skipped where it is not supported.
    """
    if not sys.platform.startswith("linux"):
        return  # elsewhere setpriority(PRIO_PROCESS, thread id) is not per-thread
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + DECODE_NICENESS)
    except (OSError, AttributeError):
        pass


def thread_batches(dataset: Dataset[Sample], n: int, batch_size: int, threads: int) -> Iterator[Batch]:
    """Batches of ``dataset`` decoded by a pool of (lower-priority) threads, in order, a batch ahead of the consumer.

    Why threads and not DataLoader worker processes on CPU: no worker process to start (a fixed cost that is a large
    part of a short run), no pickling of tensors between processes, and the first batch can start as soon as its own
    images are decoded. The per-image work is PIL code (JPEG decode, resize, crop) that releases the GIL, so the
    threads run beside the model's intra-op threads.
    """
    from concurrent.futures import Future, ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pthkit-decode", initializer=lower_priority)
    futures: dict[int, Future[Sample]] = {}
    submitted = 0
    ahead = batch_size + threads  # images decoded beyond the batch being assembled
    try:
        for start in range(0, n, batch_size):
            end = min(n, start + batch_size)
            while submitted < min(n, end + ahead):
                futures[submitted] = pool.submit(dataset.__getitem__, submitted)
                submitted += 1
            samples = []
            for i in range(start, end):
                samples.append(futures.pop(i).result())
                if submitted < min(n, end + ahead):
                    futures[submitted] = pool.submit(dataset.__getitem__, submitted)
                    submitted += 1
            yield collate_samples(samples)
    finally:  # also when the caller stops early or on Ctrl-C: drop what is queued, wait only for what is running
        pool.shutdown(wait=True, cancel_futures=True)


def transform_of(preprocess: object) -> Transform:
    """The PIL → tensor transform of a :class:`pthkit.preprocess.Preprocess` (its ``transform()``) or a callable."""
    method = getattr(preprocess, "transform", None)
    if callable(method):
        return method()  # type: ignore[no-any-return]
    if callable(preprocess):
        return preprocess
    raise PreprocessError.build(
        "preprocess", received=type(preprocess).__name__,
        expected="a pthkit Preprocess (resolve_preprocess) or a callable PIL image -> tensor",
        hint="Build it with pthkit.resolve_preprocess(model).",
    )


def input_name(item: object, index: int) -> str:
    """Display name of an input: its path, a PIL image's file name, or ``<image i>``."""
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<image {index}>"
    return str(item)


class ImageSource:
    """Image files (or PIL images) for :class:`pthkit.engine.Engine`: one decode path for predict and evaluate.

    Args:
        items: paths or PIL images, in output order (expand folders/globs first with
            :func:`pthkit.data.inputs.expand_inputs`).
        preprocess: a :class:`pthkit.preprocess.Preprocess` (its ``transform()`` is split into per-image PIL work and
            a batch-level float conversion + normalization; its resize size sets reduced-size JPEG decoding) or any
            callable PIL RGB image → CHW tensor.
        targets: class index per item (evaluation), else -1.
        draft: allow reduced-size JPEG decoding (``False`` decodes every image in full).
        workers: DataLoader worker processes (0: decode in the consuming thread). ``None``: on CPU a pool of
            :func:`pthkit.engine.threads.auto_decode_threads` lower-priority threads; on an accelerator
            :func:`pthkit.engine.threads.auto_workers` processes.
        device: where the model runs (``"cpu"``, ``"cuda"`` …): picks threads vs processes, and pinned memory.
        decode_threads: size of the thread pool (``None``: one per core, up to 8).
    """

    def __init__(
        self,
        items: Sequence[str | os.PathLike[str] | Image.Image],
        preprocess: object,
        *,
        targets: Sequence[int] | None = None,
        draft: bool = True,
        workers: int | None = None,
        device: str | torch.device = "cpu",
        decode_threads: int | None = None,
    ) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
            raise PreprocessError.build("workers", received=repr(workers), expected="an integer >= 0 or None")
        if decode_threads is not None and decode_threads < 1:
            raise PreprocessError.build("decode_threads", received=repr(decode_threads), expected="an integer >= 1")
        self.items = list(items)
        per_image, self.batch_step = split_transform(transform_of(preprocess))
        self.draft_size = draft_size_for(preprocess) if draft else None
        self.dataset = ImageListDataset(self.items, per_image, draft_size=self.draft_size, targets=targets)
        self.workers = workers
        self.device = torch.device(device)
        self.decode_threads = decode_threads

    def __len__(self) -> int:
        return len(self.items)

    def name(self, index: int) -> str:
        return input_name(self.items[index], index)

    def plan(self, batch_size: int) -> tuple[str, int]:
        """``("threads", n)`` or ``("processes", n)``: how :meth:`batches` will decode (for ``--explain``)."""
        from pthkit.engine.threads import auto_decode_threads, auto_workers

        n = len(self.items)
        if self.workers is None and self.device.type == "cpu" and n >= MIN_INPUTS_FOR_THREADS:
            return "threads", self.decode_threads or auto_decode_threads()
        workers = auto_workers(n, self.device.type) if self.workers is None else self.workers
        return "processes", min(workers, (n + batch_size - 1) // batch_size)  # an idle worker only costs start-up

    def batches(self, batch_size: int) -> Iterator[Batch]:
        kind, count = self.plan(batch_size)
        if kind == "threads":
            loader: Iterable[Batch] = thread_batches(self.dataset, len(self.items), batch_size, count)
        else:
            loader = torch.utils.data.DataLoader(
                self.dataset, batch_size=batch_size, shuffle=False, num_workers=count, collate_fn=collate_samples,
                pin_memory=self.device.type == "cuda", worker_init_fn=worker_init if count else None,
                prefetch_factor=4 if count else None,
            )
        step = self.batch_step
        for batch in loader:
            yield batch._replace(finish=step) if step is not None else batch
