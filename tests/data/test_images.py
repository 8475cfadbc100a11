"""Datasets report a bad image per item and go on; failures travel back from worker processes in order."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from pthkit.errors import DatasetError
from pthkit.images import ImageFolderDataset, ImageListDataset, collate_samples, draft_size_for, worker_init


def _files(tmp_path: Path) -> list[Path]:
    good1, good2 = tmp_path / "g1.png", tmp_path / "g2.jpg"
    Image.new("RGB", (10, 8), (255, 0, 0)).save(good1)
    Image.new("RGB", (10, 8), (0, 0, 255)).save(good2)
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return [good1, bad, tmp_path / "missing.jpg", good2, empty]


@pytest.mark.parametrize("workers", [0, 2])
def test_failures_reported_per_item_and_run_goes_on(tmp_path: Path, workers: int):
    ds = ImageListDataset(_files(tmp_path))
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers, collate_fn=collate_samples,
                                         worker_init_fn=worker_init if workers else None)
    good: list[int] = []
    failed: dict[int, str] = {}
    for batch in loader:
        if batch.tensors is not None:
            assert batch.tensors.shape[1:] == (3, 8, 10)
            good += batch.indices
        failed.update(dict(batch.failed))
    assert good == [0, 3]
    assert sorted(failed) == [1, 2, 4]
    assert "not an image" in failed[1]
    assert "no such file" in failed[2]
    assert "empty file" in failed[4]


def test_transform_error_becomes_a_failure(tmp_path: Path):
    p = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(p)

    def boom(_img):
        raise ValueError("bad size")

    sample = ImageListDataset([p], boom)[0]
    assert sample.tensor is None and "preprocessing failed" in (sample.error or "")


def test_pixels_reach_the_tensor(tmp_path: Path):
    p = tmp_path / "a.png"
    Image.new("RGB", (3, 2), (255, 0, 0)).save(p)
    sample = ImageListDataset([p])[0]
    assert sample.tensor is not None
    assert torch.equal(sample.tensor[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))


def test_folder_dataset_classes(tmp_path: Path):
    for cls, n in (("cat", 2), ("dog", 1)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (4, 4)).save(tmp_path / cls / f"{i}.png")
    ds = ImageFolderDataset(tmp_path)
    assert ds.classes == ["cat", "dog"] and ds.targets == [0, 0, 1]
    assert ds[2].target == 1 and ds[2].tensor is not None


def test_folder_dataset_without_classes(tmp_path: Path):
    with pytest.raises(DatasetError, match="no sub-folders"):
        ImageFolderDataset(tmp_path)


def test_draft_size_for_preprocess_values():
    assert draft_size_for(SimpleNamespace(effective_resize_size=256)) == (384, 384)  # 1.5x margin
    assert draft_size_for(SimpleNamespace(effective_resize_size=256), margin=1.0) == (256, 256)
    assert draft_size_for(SimpleNamespace(resize_size=(240, 320)), margin=1.0) == (320, 240)
    assert draft_size_for(SimpleNamespace(input_size=(3, 224, 224)), margin=1.0) == (224, 224)
    assert draft_size_for(object()) is None


@pytest.mark.parametrize("bgr", [False, True])
def test_split_transform_gives_the_whole_pipelines_numbers(bgr: bool):
    import numpy as np

    from pthkit.images.dataset import split_transform
    from pthkit.preprocess.types import Preprocess

    pre = Preprocess(input_size=(3, 32, 32), crop_pct=0.875, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
                     channel_order="bgr" if bgr else "rgb")
    whole = pre.transform()
    per_image, tail = split_transform(whole)
    assert tail is not None
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 255, (40 + 9 * i, 50, 3), dtype=np.uint8)) for i in range(3)]
    parts = [per_image(im) for im in imgs]
    assert all(p.dtype == torch.uint8 for p in parts)
    got = tail(torch.stack(parts))
    expected = torch.stack([whole(im) for im in imgs])
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_split_transform_keeps_other_callables_whole():
    from pthkit.images.dataset import split_transform

    def fn(img: Image.Image) -> torch.Tensor:
        return torch.zeros(3, 2, 2)

    assert split_transform(fn) == (fn, None)


def test_image_source_threads_and_processes_give_the_same_batches(tmp_path: Path):
    import numpy as np

    from pthkit.data.images import ImageSource
    from pthkit.engine import InputSource
    from pthkit.preprocess.types import Preprocess

    rng = np.random.default_rng(0)
    paths = []
    for i in range(5):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (30 + i, 40, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    bad = tmp_path / "bad.png"
    bad.write_text("no")
    paths.insert(2, bad)
    pre = Preprocess(input_size=(3, 16, 16), crop_pct=1.0)
    whole = pre.transform()

    def run(**kw: object) -> tuple[list[int], list[int], torch.Tensor, list[int]]:
        src = ImageSource(paths, pre, targets=[0, 1, 2, 0, 1, 2], **kw)  # type: ignore[arg-type]
        assert isinstance(src, InputSource) and len(src) == 6 and src.name(2) == str(bad)
        idx, targets, xs, failed = [], [], [], []
        for b in src.batches(4):
            failed += [i for i, _ in b.failed]
            if b.tensors is None:
                continue
            assert b.tensors.dtype == torch.uint8 and b.finish is not None
            xs.append(b.finish(b.tensors))
            idx += b.indices
            targets += b.targets.tolist()
        return idx, targets, torch.cat(xs), failed

    threaded = run()
    assert ImageSource(paths, pre).plan(4)[0] == "threads"
    assert ImageSource(paths, pre, workers=2).plan(4) == ("processes", 2)
    inline = run(workers=0)
    pooled = run(workers=2)
    assert threaded[0] == inline[0] == pooled[0] == [0, 1, 3, 4, 5]
    assert threaded[1] == [0, 1, 0, 1, 2] and threaded[3] == [2]
    assert torch.equal(threaded[2], inline[2]) and torch.equal(threaded[2], pooled[2])
    expected = torch.stack([whole(Image.open(paths[i]).convert("RGB")) for i in threaded[0]])
    assert torch.equal(threaded[2], expected)
