"""pthkit.data.labels: one parser for labels files; every bad file is a one-line typed error."""

from __future__ import annotations

from pathlib import Path

import pytest

from pthkit.data.labels import MAX_LABELS_BYTES, read_labels, resolve_label_names
from pthkit.errors import InputNotFoundError, PreprocessError


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return p


@pytest.mark.parametrize(("name", "text", "names"), [
    ("l.txt", "cat\n\n dog \nbird\n", ["cat", "dog", "bird"]),
    ("l.json", '["cat", "dog"]', ["cat", "dog"]),
    ("l.json", '{"1": "dog", "0": "cat"}', ["cat", "dog"]),
    ("l.txt", '["cat", 7]', ["cat", "7"]),  # JSON content in a .txt is read as JSON
    ("l.txt", "\ufeffcat\ndog\n", ["cat", "dog"]),  # BOM
])
def test_good_files(tmp_path: Path, name: str, text: str, names: list[str]):
    assert read_labels(_write(tmp_path, name, text)) == names


@pytest.mark.parametrize(("text", "why"), [
    ('["a", "b",', "invalid JSON"),
    ('{"0": "a", "2": "c"}', "without gaps"),
    ('{"x": "a"}', "non-integer keys"),
    ('"just a string"', "JSON str"),
    ('[["nested"], "b"]', "entry 0 is list"),
    ("[]", "no names"),
    ("  \n\n", "no names"),
])
def test_bad_files_are_one_line_preprocess_errors(tmp_path: Path, text: str, why: str):
    with pytest.raises(PreprocessError) as err:
        read_labels(_write(tmp_path, "labels.json", text))
    assert why in str(err.value) and "\n" not in str(err.value)


def test_not_utf8_missing_and_too_large(tmp_path: Path):
    with pytest.raises(PreprocessError, match="not UTF-8"):
        read_labels(_write(tmp_path, "l.txt", b"caf\xe9\n"))
    with pytest.raises(InputNotFoundError):
        read_labels(tmp_path / "nope.txt")
    with pytest.raises(InputNotFoundError, match="a folder"):
        read_labels(tmp_path)
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        fh.truncate(MAX_LABELS_BYTES + 1)
    with pytest.raises(PreprocessError, match="bytes"):
        read_labels(big)


def test_old_names_use_the_same_parser(tmp_path: Path):
    from pthkit.bundle import read_labels as bundle_read_labels
    from pthkit.labels import load_labels

    bad = _write(tmp_path, "labels.json", "{broken")
    for reader in (bundle_read_labels, load_labels):
        with pytest.raises(PreprocessError, match="invalid JSON"):
            reader(bad)


def test_resolve_label_names_order_and_mismatch(tmp_path: Path):
    f = _write(tmp_path, "l.txt", "a\nb\n")
    assert resolve_label_names(2, labels=f) == (["a", "b"], "file")
    assert resolve_label_names(2, labels=["x", "y"], known=["p", "q"]) == (["x", "y"], "given")
    assert resolve_label_names(2, known=["p", "q"]) == (["p", "q"], "bundle")
    assert resolve_label_names(3) == (None, "none")
    assert resolve_label_names(1000)[1] == "imagenet"
    with pytest.raises(PreprocessError, match="3 names"):
        resolve_label_names(2, labels=["a", "b", "c"])


def test_a_pipe_or_folder_is_named_for_what_it_is(tmp_path):
    """`--labels <(...)` is a pipe: refused at once (never read, never a hang), and the message says why."""
    import os

    fifo = tmp_path / "labels.fifo"
    os.mkfifo(fifo)
    for path, why in ((fifo, "not a regular file"), (tmp_path, "a folder"), (tmp_path / "nope.txt", "no such file")):
        with pytest.raises(InputNotFoundError) as caught:
            read_labels(path)
        assert why in str(caught.value) and "\n" not in str(caught.value)
