"""Training and evaluation splits from an image folder or a CSV, with unreadable images found up front.

Images are found as everywhere in pthkit (:func:`pthkit.data.inputs.folder_images`: image extensions, dotfiles and
dot-folders skipped) and decoded with :func:`pthkit.images.open_image`.

Accepted layouts for ``DATA``:

- ``DATA/train/<class>/*.png`` + ``DATA/val/<class>/*.png`` (``valid``/``validation`` also accepted);
- ``DATA/<class>/*.png``: split automatically, stratified by class, by ``val_split`` and ``seed``;
- ``DATA.csv`` with rows ``path,label`` (header optional; relative paths are relative to the CSV's folder; an
  optional third column ``split`` with ``train``/``val`` fixes the split).

Every image is decoded once before training (in threads) so unreadable files are reported once, listed, and left
out; the batches then stay a deterministic function of (seed, epoch), which exact resume relies on.

The per-sample augmentation randomness is seeded from (seed, epoch, index): see :class:`SeededSampler` and
:class:`ImageItemsDataset`. Hand-written because torch's samplers do not expose "skip the first N batches of this
epoch" nor per-sample seeding that is independent of worker count — both needed to resume mid-epoch exactly.
"""

from __future__ import annotations

import csv
import math
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pthkit.data.inputs import IMAGE_EXTENSIONS, folder_images
from pthkit.errors import DatasetError, ImageError, InputNotFoundError, PthkitError
from pthkit.images.decode import open_image

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataSplit",
    "ImageItemsDataset",
    "SeededSampler",
    "ShardSampler",
    "load_training_data",
    "load_eval_data",
    "find_unreadable",
    "collate_skip_failed",
]

_VAL_NAMES = ("val", "valid", "validation")

Item = tuple[str, int]  # (image path, class index)


@dataclass
class DataSplit:
    """Items of one dataset, split into train and val, with class names and the files that could not be read."""

    classes: list[str]
    train: list[Item]
    val: list[Item]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    layout: str = ""

    def class_counts(self, which: str = "train") -> list[int]:
        counts = Counter(lbl for _, lbl in getattr(self, which))
        return [counts.get(i, 0) for i in range(len(self.classes))]

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes, "layout": self.layout, "train": len(self.train), "val": len(self.val),
                "skipped": [{"path": p, "reason": r} for p, r in self.skipped]}


def _images_in(folder: Path) -> list[Path]:
    """The folder's images: the same discovery as ``pthkit predict FOLDER`` (extensions, dotfiles skipped)."""
    return folder_images(folder, recursive=True)


def _class_folders(root: Path) -> dict[str, list[Path]]:
    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = _images_in(sub)
        if files:
            out[sub.name] = files
    return out


def _no_classes(root: Path) -> PthkitError:
    return DatasetError.build(
        "dataset", received=f"{root} with no class sub-folders holding images",
        expected="one sub-folder per class (DATA/<class>/*.png), DATA/train + DATA/val, or a CSV of path,label",
        hint="Put each class's images in its own folder.",
    )


def _stratified_split(items: list[Item], val_split: float, seed: int) -> tuple[list[Item], list[Item]]:
    """Per class, shuffle with ``seed`` and move round(n·val_split) items (≥1 when the class has ≥2) to val."""
    if not 0.0 < val_split < 1.0:
        raise DatasetError.build("val_split", received=str(val_split), expected="a fraction between 0 and 1",
                                 hint="Use e.g. --val-split 0.2.")
    rng = random.Random(seed)
    by_class: dict[int, list[Item]] = {}
    for it in items:
        by_class.setdefault(it[1], []).append(it)
    train: list[Item] = []
    val: list[Item] = []
    for lbl in sorted(by_class):
        group = sorted(by_class[lbl])
        rng.shuffle(group)
        n_val = int(round(len(group) * val_split))
        if len(group) >= 2:
            n_val = min(max(n_val, 1), len(group) - 1)
        else:
            n_val = 0
        val.extend(group[:n_val])
        train.extend(group[n_val:])
    return sorted(train), sorted(val)


def _read_csv(path: Path) -> tuple[list[tuple[str, str, str | None]], str]:
    rows: list[tuple[str, str, str | None]] = []
    with open(path, newline="", encoding="utf-8") as fh:
        for n, row in enumerate(csv.reader(fh)):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if n == 0 and row[0].strip().lower() in ("path", "file", "filename", "image"):
                continue
            if len(row) < 2:
                raise DatasetError.build("CSV row", received=f"{path}:{n + 1}: {row!r}", expected="path,label",
                                         hint="Write one image path and its label per line.")
            p = Path(row[0].strip())
            if not p.is_absolute():
                p = path.parent / p
            rows.append((str(p), row[1].strip(), row[2].strip().lower() if len(row) > 2 and row[2].strip() else None))
    if not rows:
        raise DatasetError.build("CSV", received=f"{path} with no rows", expected="rows of path,label",
                                 hint="Add one line per image.")
    return rows, "csv"


def _check_exists(root: Path) -> None:
    if not root.exists():
        raise InputNotFoundError.build("dataset", received=str(root), expected="an image folder or a CSV file",
                                       hint="Check the path.")


def find_unreadable(paths: Sequence[str], *, workers: int | None = None) -> list[tuple[str, str]]:
    """Decode every image (in threads; PIL releases the GIL) and return ``(path, reason)`` for those that fail."""
    def check(p: str) -> tuple[str, str] | None:
        try:
            open_image(p)
        except ImageError as err:
            return p, str(err)
        except ImportError:
            raise  # a broken install is a bug to surface, not an unreadable image
        except Exception as err:  # noqa: BLE001 - anything a decoder raises means unreadable
            return p, f"{type(err).__name__}: {' '.join(str(err).split())}"
        return None

    n = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=n) as pool:
        return [r for r in pool.map(check, paths) if r is not None]


def _without_unreadable(split: DataSplit, *item_lists: list) -> tuple[list, ...]:
    """Each list of ``(path, label)`` without the images that fail to decode; those go to ``split.skipped``."""
    bad = find_unreadable([p for items in item_lists for p, _ in items])
    split.skipped.extend(bad)
    bad_set = {p for p, _ in bad}
    return tuple([it for it in items if it[0] not in bad_set] for items in item_lists)


def _drop_unreadable(split: DataSplit, check: bool) -> DataSplit:
    if not check:
        return split
    split.train, split.val = _without_unreadable(split, split.train, split.val)
    if not split.train:
        raise DatasetError.build("dataset", received="no readable training images", expected="at least one",
                                 hint="Check the image files.")
    return split


def load_training_data(
    data: str | os.PathLike, *, val_split: float = 0.2, seed: int = 0, check_images: bool = True
) -> DataSplit:
    """Discover classes and images of ``data`` and split them into train/val (see the module docstring)."""
    root = Path(data)
    _check_exists(root)
    if root.is_file():
        rows, layout = _read_csv(root)
        classes = sorted({lbl for _, lbl, _ in rows})
        index = {c: i for i, c in enumerate(classes)}
        items = [(p, index[lbl]) for p, lbl, _ in rows]
        if any(s is not None for _, _, s in rows):
            train = [(p, index[lbl]) for p, lbl, s in rows if s != "val"]
            val = [(p, index[lbl]) for p, lbl, s in rows if s == "val"]
            layout = "csv (split column)"
        else:
            train, val = _stratified_split(items, val_split, seed)
            layout = f"csv (stratified split {val_split:g}, seed {seed})"
        return _drop_unreadable(DataSplit(classes, train, val, layout=layout), check_images)
    val_dir = next((root / n for n in _VAL_NAMES if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        tr = _class_folders(root / "train")
        va = _class_folders(val_dir)
        if not tr:
            raise _no_classes(root / "train")
        unknown = sorted(set(va) - set(tr))
        if unknown:
            raise DatasetError.build("validation classes", received=f"{unknown} not in train/",
                                     expected="the same class folders in train/ and val/",
                                     hint="Add those classes to train/ or remove them from val/.")
        classes = sorted(tr)
        index = {c: i for i, c in enumerate(classes)}
        train = [(str(p), index[c]) for c, ps in tr.items() for p in ps]
        val = [(str(p), index[c]) for c, ps in va.items() for p in ps]
        return _drop_unreadable(DataSplit(classes, sorted(train), sorted(val), layout=f"train/ + {val_dir.name}/"),
                                check_images)
    folders = _class_folders(root)
    if not folders:
        raise _no_classes(root)
    if len(folders) < 2:
        raise DatasetError.build("dataset", received=f"1 class ({next(iter(folders))})", expected="at least 2 classes",
                                 hint="Add a sub-folder per class.")
    classes = sorted(folders)
    items = [(str(p), i) for i, c in enumerate(classes) for p in folders[c]]
    train, val = _stratified_split(items, val_split, seed)
    return _drop_unreadable(
        DataSplit(classes, train, val, layout=f"class folders (stratified split {val_split:g}, seed {seed})"),
        check_images,
    )


def load_eval_data(data: str | os.PathLike, *, check_images: bool = True) -> DataSplit:
    """Items to evaluate on: ``DATA/val`` when present (else every image of ``DATA/<class>/``), or a CSV.

    The items are returned in ``DataSplit.val`` (``train`` is empty).
    """
    root = Path(data)
    _check_exists(root)
    if root.is_file():
        rows, _ = _read_csv(root)
        classes = sorted({lbl for _, lbl, _ in rows})
        index = {c: i for i, c in enumerate(classes)}
        has_split = any(s is not None for _, _, s in rows)
        items = [(p, index[lbl]) for p, lbl, s in rows if not has_split or s == "val"]
        split = DataSplit(classes, [], items, layout="csv")
    else:
        base = next((root / n for n in _VAL_NAMES if (root / n).is_dir()), root)
        folders = _class_folders(base)
        if not folders:
            raise _no_classes(base)
        classes = sorted(folders)
        items = [(str(p), i) for i, c in enumerate(classes) for p in folders[c]]
        split = DataSplit(classes, [], sorted(items), layout=f"class folders ({base.name}/)")
    if check_images:
        (split.val,) = _without_unreadable(split, split.val)
    if not split.val:
        raise DatasetError.build("dataset", received="no readable images", expected="at least one image",
                                 hint="Check the data path.")
    return split


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one sample's augmentation: a fixed function of (seed, epoch, index)."""
    x = (seed * 1_000_003 + epoch) * 2_147_483_647 + index
    # splitmix64 finalizer: neighbouring inputs give unrelated seeds
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (x ^ (x >> 31)) & 0x7FFFFFFFFFFFFFFF


class ImageItemsDataset(torch.utils.data.Dataset):
    """``(tensor, label)`` for ``(path, label)`` items; a failed decode yields ``None`` (skipped by the collate).

    Indices may be plain ints or ``(index, seed)`` pairs from :class:`SeededSampler`: with a seed, Python's and
    torch's RNGs are seeded from it before the transform, so augmentation does not depend on worker count or on
    where a resumed run started.
    """

    def __init__(self, items: Sequence[Item], transform: Callable[[Any], torch.Tensor]) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[torch.Tensor, int] | None:
        index, seed = key if isinstance(key, tuple) else (key, None)
        path, label = self.items[index]
        try:
            img = open_image(path)
        except (ImageError, OSError):
            return None
        if seed is None:
            return self.transform(img), label
        if torch.utils.data.get_worker_info() is not None:  # a worker process: its RNGs are ours to set
            random.seed(seed)
            torch.manual_seed(seed)
            return self.transform(img), label
        # In the main process: leave the training loop's RNG streams (dropout, drop-path) untouched.
        py_state = random.getstate()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            torch.manual_seed(seed)
            out = self.transform(img)
        random.setstate(py_state)
        return out, label


def collate_skip_failed(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Default collate without the samples that failed to decode; ``None`` when all failed."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return None
    return torch.utils.data.default_collate(kept)


class SeededSampler(torch.utils.data.Sampler):
    """Shuffled ``(index, sample_seed)`` pairs; the order is a function of (seed, epoch) only.

    With ``world_size > 1`` the permutation is padded to a multiple of the world size and sharded like
    ``DistributedSampler`` (rank r takes every world_size-th index). ``skip`` drops this rank's first ``skip``
    samples (the batches a resumed run already consumed). With ``batch_size``, a last batch of a single sample is
    dropped: BatchNorm cannot train on one value per channel.
    """

    def __init__(self, n: int, *, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 batch_size: int | None = None) -> None:
        self.n = n
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0
        self.per_rank = math.ceil(n / world_size) if n else 0
        self.padded = self.per_rank * world_size
        if batch_size and batch_size > 1 and self.per_rank > 1 and self.per_rank % batch_size == 1:
            self.per_rank -= 1

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.padded > len(order) and order:
            order += order[: self.padded - len(order)]
        return order[self.rank : self.padded : self.world_size][: self.per_rank]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for i in self.indices()[self.skip :]:
            yield i, sample_seed(self.seed, self.epoch, i)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.skip)


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation order, sharded across ranks without padding (so all-reduced sums count each image once)."""

    def __init__(self, n: int, *, rank: int = 0, world_size: int = 1) -> None:
        self.idx = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.idx)

    def __len__(self) -> int:
        return len(self.idx)
