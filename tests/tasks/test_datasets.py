"""Training/eval datasets: layouts, stratified split, CSV, unreadable images, deterministic seeded order."""

from __future__ import annotations

import sys
from pathlib import Path
import random

import pytest
import torch

from pthkit.errors import DatasetError, InputNotFoundError
from pthkit.tasks.datasets import (
    ImageItemsDataset,
    SeededSampler,
    ShardSampler,
    load_eval_data,
    load_training_data,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared tiny-data helpers
from _train_data import CLASSES, make_image_folder


def test_class_folders_get_a_stratified_seeded_split(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=10, size=8)
    a = load_training_data(data, val_split=0.2, seed=1)
    assert a.classes == list(CLASSES)
    assert a.class_counts("train") == [8, 8, 8] and a.class_counts("val") == [2, 2, 2]
    assert not {p for p, _ in a.train} & {p for p, _ in a.val}
    assert load_training_data(data, val_split=0.2, seed=1).val == a.val  # same seed, same split
    assert load_training_data(data, val_split=0.2, seed=2).val != a.val
    assert "stratified" in a.layout


def test_train_and_val_folders_are_used_as_given(tmp_path):
    make_image_folder(tmp_path / "d" / "train", per_class=3, size=8)
    make_image_folder(tmp_path / "d" / "val", per_class=1, size=8, seed=5)
    s = load_training_data(tmp_path / "d")
    assert len(s.train) == 9 and len(s.val) == 3 and s.layout == "train/ + val/"
    assert all("/val/" in p for p, _ in s.val)
    # evaluation uses DATA/val when present
    assert [p for p, _ in load_eval_data(tmp_path / "d").val] == sorted(p for p, _ in s.val)


def test_csv_with_relative_paths_header_and_split_column(tmp_path):
    data = make_image_folder(tmp_path / "imgs", per_class=2, size=8)
    rows = [f"imgs/{c}/{i:03d}.png,{c}" for c in CLASSES for i in range(2)]
    (tmp_path / "all.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    s = load_training_data(tmp_path / "all.csv", val_split=0.5, seed=0)
    assert s.classes == list(CLASSES) and len(s.train) == 3 and len(s.val) == 3
    split_rows = [r + (",val" if r.endswith("c_blue") else ",train") for r in rows]
    (tmp_path / "split.csv").write_text("\n".join(split_rows) + "\n")
    s2 = load_training_data(tmp_path / "split.csv")
    assert {lbl for _, lbl in s2.val} == {2} and len(s2.train) == 4
    assert str(data / "a_red" / "000.png") in {p for p, _ in s2.train}


def test_unreadable_images_are_listed_once_and_left_out(tmp_path):
    data = make_image_folder(tmp_path / "d", per_class=4, size=8)
    bad = data / "b_green" / "zz_truncated.png"
    bad.write_bytes((data / "b_green" / "000.png").read_bytes()[:60])
    (data / "a_red" / "notes.jpg").write_text("this is not an image")
    s = load_training_data(data, val_split=0.25, seed=0)
    assert sorted(p for p, _ in s.skipped) == sorted([str(bad), str(data / "a_red" / "notes.jpg")])
    assert len(s.train) + len(s.val) == 12
    assert {"path", "reason"} <= set(s.to_dict()["skipped"][0])


def test_bad_layouts_raise_typed_errors_with_the_expected_wording(tmp_path):
    with pytest.raises(InputNotFoundError, match="expected an image folder or a CSV file"):
        load_training_data(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no class sub-folders holding images"):
        load_training_data(tmp_path / "empty")
    make_image_folder(tmp_path / "one", per_class=2, size=8, classes=("only",))
    with pytest.raises(DatasetError, match="expected at least 2 classes"):
        load_training_data(tmp_path / "one")
    (tmp_path / "bad.csv").write_text("just-one-column\n")
    with pytest.raises(DatasetError, match="expected path,label"):
        load_training_data(tmp_path / "bad.csv")
    with pytest.raises(DatasetError, match="between 0 and 1"):
        load_training_data(make_image_folder(tmp_path / "ok", per_class=2, size=8), val_split=1.5)


def test_seeded_sampler_order_is_a_function_of_seed_and_epoch_and_can_skip():
    s = SeededSampler(10, seed=3)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(i for i, _ in e0) == list(range(10)) and e0 != e1
    s.set_epoch(0, skip=4)
    assert list(s) == e0[4:] and len(s) == 6
    again = SeededSampler(10, seed=3)
    again.set_epoch(1)
    assert list(again) == e1
    # two ranks: equal shares, together every index (padded to a multiple of 2)
    r0, r1 = SeededSampler(9, seed=0, rank=0, world_size=2), SeededSampler(9, seed=0, rank=1, world_size=2)
    idx = [i for i, _ in r0] + [i for i, _ in r1]
    assert len(r0) == len(r1) == 5 and set(idx) == set(range(9))
    assert list(ShardSampler(5, rank=1, world_size=2)) == [1, 3]
    # a last batch of one sample is dropped (BatchNorm cannot train on it)
    assert len(SeededSampler(9, seed=0, batch_size=4)) == 8 and len(SeededSampler(10, seed=0, batch_size=4)) == 10


def test_seeded_augmentation_is_reproducible_and_leaves_the_global_rng_alone(tmp_path):
    from pthkit.preprocess import Preprocess

    data = make_image_folder(tmp_path / "d", per_class=1, size=16)
    items = [(str(data / "a_red" / "000.png"), 0)]
    ds = ImageItemsDataset(items, Preprocess(input_size=(3, 16, 16)).train_transform())
    torch.manual_seed(0)
    random.seed(0)
    before = (torch.get_rng_state(), random.getstate())
    x1, _ = ds[(0, 1234)]
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    x2, _ = ds[(0, 1234)]
    x3, _ = ds[(0, 999)]
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)
