"""expand_inputs: files, folders, globs, list files, stdin; missing paths kept to be reported, order preserved."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pthkit.data.images import ImageFolderDataset
from pthkit.data.inputs import expand_inputs, missing_inputs
from pthkit.data.splits import load_eval_data, load_training_data
from pthkit.errors import InputNotFoundError


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel in ("b.jpg", "a.png", "sub/c.webp", "sub/deeper/d.JPG", "notes.txt.bak", "sub/readme.md", ".hidden.jpg"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.suffix.lower() in (".jpg", ".png", ".webp"):
            Image.new("RGB", (4, 4)).save(p, format="PNG")
        else:
            p.write_text("x")
    return tmp_path


def test_folder_recursive_sorted_images_only(tree: Path):
    got = [p.relative_to(tree).as_posix() for p in expand_inputs([str(tree)])]
    assert got == ["a.png", "b.jpg", "sub/c.webp", "sub/deeper/d.JPG"]


def test_folder_not_recursive(tree: Path):
    got = [p.name for p in expand_inputs([tree], recursive=False)]
    assert got == ["a.png", "b.jpg"]


def test_glob_and_dedup_in_order(tree: Path):
    got = expand_inputs([str(tree / "b.jpg"), str(tree / "*.png"), str(tree / "**" / "*.webp"), str(tree / "b.jpg")])
    assert [p.name for p in got] == ["b.jpg", "a.png", "c.webp"]


def test_list_file_with_at_and_txt(tree: Path):
    listing = tree / "list.txt"
    listing.write_text("# my images\nb.jpg\n\nsub\n" + str(tree / "a.png") + "\n")
    expected = ["b.jpg", "c.webp", "d.JPG", "a.png"]
    assert [p.name for p in expand_inputs(["@" + str(listing)])] == expected
    assert [p.name for p in expand_inputs([str(listing)])] == expected


def test_stdin_dash(tree: Path):
    stream = io.StringIO(f"{tree / 'a.png'}\n{tree / 'sub'}\n")
    assert [p.name for p in expand_inputs(["-"], stdin=stream)] == ["a.png", "c.webp", "d.JPG"]


def test_missing_paths_are_kept_for_reporting(tree: Path):
    got = expand_inputs([str(tree / "a.png"), str(tree / "missing.jpg"), str(tree / "none-*.jpg")])
    assert [p.name for p in got] == ["a.png", "missing.jpg", "none-*.jpg"]
    assert [p.name for p in missing_inputs(got)] == ["missing.jpg", "none-*.jpg"]


def test_explicit_file_kept_whatever_its_extension(tree: Path):
    assert [p.name for p in expand_inputs([str(tree / "sub" / "readme.md")])] == ["readme.md"]


def test_no_inputs_is_an_error():
    with pytest.raises(InputNotFoundError, match="no inputs"):
        expand_inputs([])


def test_missing_list_file(tmp_path: Path):
    with pytest.raises(InputNotFoundError, match="list of image paths"):
        expand_inputs(["@" + str(tmp_path / "nope.txt")])

def _png(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), 100, dtype=np.uint8)).save(path)
    return path


def test_dotfiles_and_dot_folders_are_dropped_everywhere(tmp_path: Path):
    root = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(3):
            _png(root / c / f"{i}.png")
        _png(root / c / f".hidden{c}.png")
        _png(root / c / ".thumbnails" / "t.png")
        _png(root / c / "sub" / "deep.webp")
    _png(root / ".git" / "x.png")  # a dot-folder at the top is not a class either
    visible = {p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)}
    assert set(expand_inputs([root])) == visible
    assert {Path(p) for p, _ in ImageFolderDataset(root).items} == visible  # type: ignore[misc]
    assert ImageFolderDataset(root).classes == ["a", "b"]
    split = load_eval_data(root)
    assert {Path(p) for p, _ in split.val} == visible and split.classes == ["a", "b"]
    train = load_training_data(root, val_split=0.25, check_images=False)
    assert {Path(p) for p, _ in train.train + train.val} == visible


def test_folder_order_is_by_relative_path(tmp_path: Path):
    for name in ("b.png", "a/z.png", "a.png", "C.png"):
        _png(tmp_path / name)
    assert [p.relative_to(tmp_path).as_posix() for p in expand_inputs([tmp_path])] == ["C.png", "a.png", "a/z.png",
                                                                                      "b.png"]
