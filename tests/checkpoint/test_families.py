"""Issue 8's attack families, each built as a family (several instances), never as one file.

Every hostile builder's payload is shown to be real (loading it unsafely runs it), then pthkit is shown never to run
it and never to call the file "safe". Budgets: bombs, odd paths, amplification and huge headers finish fast.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import struct
import time
import tracemalloc
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pthkit.checkpoint import detect_format, read_checkpoint, scan_file
from pthkit.checkpoint._policy import classify
from pthkit.checkpoint.unwrap import entries_besides, find_candidates, to_plain
from pthkit.errors import (
    BudgetExceededError,
    CheckpointError,
    InputNotFoundError,
    NoTensorDataError,
    PthkitError,
    UnsupportedFormatError,
)

from .forge import safetensors_file
from .hostile import DECOYS, DENYLIST_GAPS, NESTED, TAR, Call, legacy_bytes

FAMILIES = NESTED + DECOYS + TAR + DENYLIST_GAPS


def _load_unsafely(path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.load(path, weights_only=False)
        except Exception:  # noqa: BLE001 - the payload runs before torch fails
            pass
        try:
            pickle.loads(path.read_bytes())
        except Exception:  # noqa: BLE001
            pass


@pytest.mark.parametrize("make", FAMILIES, ids=lambda f: f.__name__)
def test_family_payload_is_real_and_never_runs_in_pthkit(make, tmp_path):
    path, marker = make(tmp_path)
    report = scan_file(path)
    try:
        ckpt = read_checkpoint(path)
    except CheckpointError as err:
        assert "\n" not in str(err)
    else:
        assert ckpt.verdict == "malicious-looking"
    assert not marker.exists(), "pthkit ran the payload"
    assert report.verdict == "malicious-looking", report
    _load_unsafely(path)  # control: the payload is live, so the verdict above means something
    assert marker.exists(), f"{make.__name__} builds no live payload"


def test_tar_polyglot_is_read_as_tar_first(tmp_path):
    path, _ = TAR[0](tmp_path)
    assert pickle.loads(path.read_bytes()) == {}  # a pickle reader sees an empty dict ...
    report = scan_file(path)  # ... torch.load sees a tar archive and unpickles its members
    assert report.format == "tar" and any(f.kind == "legacy-tar" for f in report.findings)
    assert "posix.system" in report.globals
    with pytest.raises(UnsupportedFormatError, match="tar archive"):
        detect_format(path)


def test_bytes_after_the_last_record_are_never_safe(tmp_path):
    sd = {"w": torch.ones(3)}
    clean = tmp_path / "clean.pth"
    clean.write_bytes(legacy_bytes(sd))
    assert scan_file(clean).verdict == "safe"
    hidden = tmp_path / "hidden.pth"
    hidden.write_bytes(legacy_bytes(sd) + pickle.dumps(Call(os.system, "true"), protocol=2))
    report = scan_file(hidden)
    assert report.verdict == "malicious-looking" and "posix.system" in report.globals
    assert any(f.kind == "trailing-data" for f in report.findings)
    ckpt = read_checkpoint(hidden)
    assert ckpt.verdict != "safe" and any(f.kind == "trailing-data" for f in ckpt.findings)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(legacy_bytes(sd) + b"\x00garbage")
    assert scan_file(junk).verdict == "needs-trust"


# --- family 4: shared-container bombs ----------------------------------------------------------------------------------


def _dict_bomb(fan: int, depth: int) -> dict:
    node: dict = {"leaf": 1.0}
    for _ in range(depth):
        node = {f"k{i}": node for i in range(fan)}
    return node


def _list_bomb(fan: int, depth: int) -> list:
    node: list = [1]
    for _ in range(depth):
        node = [node] * fan
    return node


@pytest.mark.parametrize(
    "bomb", [lambda: _dict_bomb(100, 6), lambda: _list_bomb(10, 20), lambda: {"a": _list_bomb(10, 20), "b": _dict_bomb(30, 8)}],
    ids=["dicts-100x6", "lists-10x20", "mixed"],
)
@pytest.mark.parametrize("container", ["zip", "raw"])
def test_shared_container_bombs_finish_fast(bomb, container, tmp_path):
    path = tmp_path / f"bomb_{container}.pth"
    obj = {"state_dict": {"fc.weight": torch.ones(2, 2)}, "cfg": bomb(), "more": {"x": bomb()}}
    if container == "zip":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps({"cfg": bomb(), "other": [bomb()]}, protocol=4))
    assert path.stat().st_size < 64_000
    start = time.perf_counter()
    try:
        ckpt = read_checkpoint(path)
        data = ckpt.to_dict()
        json.dumps(data, default=str)
        from pthkit.summary import summarize

        summarize(ckpt).to_dict()
    except BudgetExceededError as err:
        assert "\n" not in str(err)
    scan_file(path)
    assert time.perf_counter() - start < 8


def test_walks_are_memoized_and_budgeted():
    bomb = _dict_bomb(100, 6)  # 10**12 paths, 601 containers
    start = time.perf_counter()
    assert find_candidates({"a": bomb}) == []
    assert entries_besides({"a": bomb, "b": _list_bomb(10, 20)}, set())
    plain = to_plain(bomb)
    text = json.dumps(plain, ensure_ascii=False)
    assert "…" in text and len(text) < 2_000_000  # output is bounded, not 10**12 entries
    assert time.perf_counter() - start < 3


# --- family 5: folder and path inputs ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_fifo_dev_zero_huge_and_long_paths_are_typed_errors(tmp_path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "model.safetensors"))
    cases: list[Path] = []
    fifo_dir = tmp_path / "fifo"
    fifo_dir.mkdir()
    os.mkfifo(fifo_dir / "model.safetensors.index.json")
    cases.append(fifo_dir)
    cases.append(fifo_dir / "model.safetensors.index.json")
    zero_dir = tmp_path / "zero"
    zero_dir.mkdir()
    (zero_dir / "model.safetensors.index.json").symlink_to("/dev/zero")
    cases.append(zero_dir)
    huge_dir = tmp_path / "huge"
    huge_dir.mkdir()
    with open(huge_dir / "model.safetensors.index.json", "wb") as fh:
        fh.write(b'{"weight_map": {')
        fh.truncate(200 * 1024 * 1024)  # sparse: 200 MB declared, nothing written
    cases.append(huge_dir)
    fifo_shard = tmp_path / "fifo_shard"
    fifo_shard.mkdir()
    os.mkfifo(fifo_shard / "a.safetensors")
    (fifo_shard / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "a.safetensors"}}))
    cases.append(fifo_shard)
    cases.append(tmp_path / ("x" * 5000))
    cases.append(Path("/dev/zero"))
    for case in cases:
        start = time.perf_counter()
        calls = (read_checkpoint,) if os.path.isdir(case) else (read_checkpoint, detect_format)  # a folder *is* "sharded"
        for call in calls:
            with pytest.raises(PthkitError) as info:
                call(case)
            assert "\n" not in str(info.value) and "bug" not in str(info.value)
        try:
            report = scan_file(case)
        except PthkitError as err:
            assert "\n" not in str(err)
        else:
            assert report.verdict != "safe", case
        assert time.perf_counter() - start < 5, case


def test_too_long_name_is_input_not_found(tmp_path):
    with pytest.raises(InputNotFoundError, match="longer than the operating system allows"):
        read_checkpoint(tmp_path / ("y" * 5000))


# --- family 6: memory amplification ----------------------------------------------------------------------------------


def _long_name_calls(name_len: int, calls: int, stack_global: bool) -> bytes:
    name = "m" * name_len
    if stack_global:
        head = b"\x8d" + struct.pack("<Q", len(name)) + name.encode() + b"\x94" + b"\x8c\x01X\x94\x93\x94"
        # BINUNICODE8 module (memo 0), 'X' (memo 1), STACK_GLOBAL (memo 2); every call re-resolves the global
        body = b"".join(b"h\x00h\x01\x93)R)R0" for _ in range(calls))
    else:
        head = b"c" + name.encode() + b"\nX\n\x94"
        body = b"".join(b"h\x00)R)R)R0" for _ in range(calls))
    return b"\x80\x04" + head + body + b"N."


@pytest.mark.parametrize("stack_global", [False, True])
def test_long_class_names_do_not_amplify_memory(stack_global, tmp_path):
    path = tmp_path / "names.pkl"
    path.write_bytes(_long_name_calls(1_000_000, 1500, stack_global))
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        read_checkpoint(path)
        report = scan_file(path)
        peak = tracemalloc.get_traced_memory()[1] - base
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert report.verdict != "safe"
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    assert kept < 8 * 2**20, f"{kept / 2**20:.0f} MiB kept after the read returned"


# --- family 7: terminal escapes (CLI) ------------------------------------------------------------------------------------


def test_safe_text_escapes_every_control():
    from pthkit.cli._safe_text import safe_text

    nasty = "a\x1b]0;title\x07b\x1b[2Kc\x9b31md\u202eevil\u2066e\x00f\rg\x7f"
    out = safe_text(nasty)
    assert all(ch not in out for ch in "\x1b\x07\x9b\u202e\u2066\x00\r\x7f")
    assert "\\x1b" in out and "\\u202e" in out and out.startswith("a") and "title" in out
    assert safe_text("line1\nline2") == "line1\nline2" and safe_text("a\nb", newlines=False) == "a\\nb"
    assert safe_text("naïve 模型 ✓") == "naïve 模型 ✓"


# --- family 8: allowlist-first policy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,expected",
    [
        ("uuid._get_command_stdout", "dangerous"), ("pydoc.locate", "dangerous"), ("operator.attrgetter", "dangerous"),
        ("operator.methodcaller", "dangerous"), ("builtins.getattr", "dangerous"), ("importlib.import_module", "dangerous"),
        ("functools.partial", "dangerous"), ("builtins.print", "dangerous"), ("copyreg.__newobj__", "dangerous"),
        ("somepkg.tools.run_command", "dangerous"), ("pkg.module.object.__subclasses__", "dangerous"),
        ("ctypes.CDLL", "dangerous"), ("torch.distributed.rpc.remote", "dangerous"), ("x" * 2000 + ".y", "dangerous"),
        ("argparse.Namespace", "unknown"), ("__main__.Net", "unknown"), ("pathlib.PosixPath", "unknown"),
        ("torch.nn.modules.conv.Conv2d", "unknown"), ("types.SimpleNamespace", "unknown"),
        ("collections.OrderedDict", "data"), ("torch._utils._rebuild_tensor_v2", "data"), ("torch.FloatStorage", "data"),
    ],
)
def test_policy_is_allowlist_first(name, expected):
    assert classify(name) == expected


# --- family 9: safetensors headers ------------------------------------------------------------------------------------------


def test_huge_safetensors_headers_are_refused_fast(tmp_path):
    start = time.perf_counter()
    n = 1_000_000
    header = "{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(n)) + "}"
    big = safetensors_file(tmp_path / "big.safetensors", header, b"")
    assert big.stat().st_size > 50_000_000
    for call in (read_checkpoint, lambda p: scan_file(p)):
        try:
            out = call(big)
        except BudgetExceededError as err:
            assert "header" in str(err)
        else:
            assert out.verdict != "safe"
    many = "{" + ",".join(f'"t{i}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(100_001)) + "}"
    with pytest.raises(BudgetExceededError, match="tensors"):
        read_checkpoint(safetensors_file(tmp_path / "many.safetensors", many, b""))
    assert time.perf_counter() - start < 10


# --- family 10: meta tensors ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_meta_tensors_are_a_typed_error(legacy, tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"fc.weight": torch.empty(3, 4, device="meta"), "fc.bias": torch.empty(3, device="meta")}, path,
               _use_new_zipfile_serialization=not legacy)
    with pytest.raises(NoTensorDataError, match="shapes but no data"):
        read_checkpoint(path)
    ckpt = read_checkpoint(path, allow_meta=True)
    assert ckpt.tensors["fc.weight"].shape == (3, 4) and any(f.kind == "meta" for f in ckpt.findings)
    assert scan_file(path).verdict == "safe"  # shapes without data are harmless; loading them is what fails


# --- time budgets: opcode floods and repeated payloads ------------------------------------------------------------------


def test_opcode_floods_hit_the_opcode_budget(tmp_path, monkeypatch):
    import pthkit.checkpoint._inert as inert

    monkeypatch.setattr(inert, "MAX_OPS", 100_000)
    for name, body in {"nonepop": b"N0" * 100_000, "dup": b"N" + b"2" * 200_000, "memo": b"N" + b"\x94" * 200_000}.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(b"\x80\x04" + body + b"N.")
        report = scan_file(path)
        assert report.verdict != "safe" and any(f.kind == "budget" for f in report.findings), report
        with pytest.raises(BudgetExceededError, match="opcodes"):
            read_checkpoint(path)
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(b"\x80\x04" + b"N0" * 40_000 + b"N.")
    assert scan_file(ok).verdict == "safe"


def test_a_payload_called_again_is_walked_once(tmp_path):
    inner = pickle.dumps(list(range(20_000)), protocol=2)  # ~60k opcodes each time it would be walked
    body = (b"\x80\x02ctorch.storage\n_load_from_bytes\nq\x00B" + struct.pack("<I", len(inner)) + inner + b"q\x01"
            + b"(" + b"h\x00h\x01\x85R" * 3000 + b"l.")
    path = tmp_path / "repeat.pkl"
    path.write_bytes(body)
    start = time.perf_counter()
    report = scan_file(path)
    ckpt = read_checkpoint(path)
    assert time.perf_counter() - start < 8
    assert report.verdict == ckpt.verdict == "safe"  # plain data inside; torch would fail on it, not run code
    assert sum(f.kind == "nested" for f in report.findings) == 1
