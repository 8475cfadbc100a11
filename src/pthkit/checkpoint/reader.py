"""``read_checkpoint``: any weights file to a :class:`Checkpoint`, without running code from the file.

Paths by format (chosen from the content by :func:`detect_format`):

- zip / legacy / raw pickle: the inert unpickler (:mod:`._inert`) with storages memory-mapped from the file and every
  declared size checked against the stored record before anything is mapped or copied. ``torch.load`` is called
  only when the inert reader meets a construct it does not rebuild (quantized storages …) — with
  ``weights_only=True`` passed explicitly (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot override an explicit value),
  and with ``weights_only=False`` only under ``trust=True``, with a warning. The inert path is the primary one
  because ``torch.load(mmap=True)`` maps a storage by its declared size without checking it against the record
  (a lying file reads its neighbours' bytes), and it would cost a second parse of the pickle.
- safetensors: header validated here, tensors memory-mapped by the safetensors library.
- TorchScript: tensors from the archive's ``data.pkl`` (``__torch__`` classes are inert); ``torch.jit.load`` only
  with ``trust=True``.
- sharded: ``*.index.json`` (or its folder) — every shard read as above and merged; the index is checked.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from pthkit.checkpoint import unwrap
from pthkit.checkpoint._formats import RawRead, open_legacy, read_raw_pickle, read_zip
from pthkit.checkpoint._paths import check_input, read_small
from pthkit.checkpoint._policy import classify, torch_weights_only_accepts
from pthkit.checkpoint._safetensors import read_tensors
from pthkit.checkpoint._zip import ZipArchive
from pthkit.checkpoint.detect import INDEX_LIMIT, detect_format
from pthkit.checkpoint.types import Checkpoint, Finding, Verdict
from pthkit.errors import (
    CheckpointError,
    CorruptCheckpointError,
    InputNotFoundError,
    NoTensorDataError,
    UnsupportedFormatError,
)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".pkl")
_SELECTS = ("auto", "raw", "ema")


def read_checkpoint(
    path: str | os.PathLike,
    *,
    trust: bool = False,
    mmap: bool = True,
    select: str = "auto",
    strip_prefix: bool = True,
    allow_meta: bool = False,
) -> Checkpoint:
    """Read the model weights (and everything else) a file holds. No code from the file runs unless ``trust``.

    Args:
        path: a weights file of any supported format, a ``*.index.json``, or a folder holding one.
        trust: allow running code from the file (``torch.jit.load`` for TorchScript; ``torch.load(weights_only=False)``
            when the inert reader cannot rebuild something). Emits a warning whenever file code runs.
        mmap: memory-map tensor data where the format allows (the default); ``False`` copies tensors into memory.
        select: ``"auto"`` (raw weights, EMA only when alone), ``"raw"`` or ``"ema"``.
        strip_prefix: remove ``module.``/``model.``/``_orig_mod.``/shared prefixes (each recorded and reported).
        allow_meta: return weights saved on the ``meta`` device (shapes, no data) instead of raising
            :class:`~pthkit.errors.NoTensorDataError` (``inspect`` shows their shapes; loading them is impossible).

    Raises:
        InputNotFoundError, UnsupportedFormatError, CorruptCheckpointError, BudgetExceededError, NoTensorDataError,
        CheckpointError.
    """
    if select not in _SELECTS:
        raise CheckpointError.build("select", received=repr(select), expected=" / ".join(_SELECTS))
    p = Path(path)
    fmt = detect_format(p)  # checks the path first: FIFOs, devices, too-long names are typed errors
    if fmt == "sharded":
        ckpt = _read_sharded(p, trust=trust, mmap=mmap, select=select, strip_prefix=strip_prefix)
    elif fmt == "safetensors":
        tensors, metadata = read_tensors(p, mmap=mmap)
        ckpt = Checkpoint(path=p, format="safetensors", file_size=p.stat().st_size, tensors=tensors, metadata=metadata)
        ckpt = _finish(ckpt, strip_prefix)
    else:
        raw, findings, verdict = _read_pickled(p, fmt, trust=trust, mmap=mmap)
        ckpt = _from_object(p, fmt, raw, findings, verdict, select=select, strip_prefix=strip_prefix)
    return _check_meta(ckpt, allow_meta)


def _check_meta(ckpt: Checkpoint, allow_meta: bool) -> Checkpoint:
    """Weights on the ``meta`` device have shapes but no values: a finding, and an error unless ``allow_meta``."""
    meta = [k for k, t in ckpt.tensors.items() if t.device.type == "meta"]
    if not meta:
        return ckpt
    detail = f"{len(meta)} of {len(ckpt.tensors)} tensors were saved on the meta device: the file has shapes but no data"
    if not allow_meta:
        raise NoTensorDataError.build(
            f"weights file {ckpt.path.name}", received=f"{detail} (e.g. {meta[0]!r})", expected="tensors with values",
            hint="Save the weights from a model whose parameters were materialized (not on device='meta').",
        )
    ckpt.findings.append(Finding("meta", detail, "warning"))
    return ckpt


# ---------------------------------------------------------------------------------------------------------------------


def _read_pickled(p: Path, fmt: str, *, trust: bool, mmap: bool) -> tuple[RawRead, list[Finding], Verdict]:
    findings: list[Finding] = []
    if fmt == "torchscript":
        findings.append(Finding("torchscript", "a TorchScript archive: it carries code; tensors were read without running it", "warning"))
        if trust:
            return _jit_load(p, findings)
    try:
        if fmt in ("zip", "torchscript"):
            archive = ZipArchive(p, mmap=mmap)
            try:
                archive.raise_problems()
                raw = read_zip(archive)
            finally:
                archive.close()
        elif fmt == "legacy":
            raw = open_legacy(p, mmap=mmap)
        else:
            raw = read_raw_pickle(p)
    except UnsupportedFormatError as err:
        raw = _torch_load_fallback(p, fmt, err, trust=trust, mmap=mmap, findings=findings)
        from pthkit.checkpoint.scan import scan_file

        raw.globals = scan_file(p, max_bytes=0).globals  # what torch.load saw, from the opcodes
    verdict = _verdict(raw.globals, torchscript=fmt == "torchscript")
    if raw.trailing:
        findings.append(Finding("trailing-data", f"{raw.trailing:,} bytes after the data torch.load reads (scan them)", "warning"))
        verdict = "needs-trust" if verdict == "safe" else verdict
    findings.extend(_global_findings(raw.globals))
    findings.extend(Finding("note", n, "info") for n in dict.fromkeys(raw.notes))
    if fmt != "torchscript" and not all(torch_weights_only_accepts(g) for g in raw.globals):
        refused = [g for g in raw.globals if not torch_weights_only_accepts(g)]
        findings.append(
            Finding(
                "weights-only",
                f"torch.load(weights_only=True) would refuse this file ({', '.join(refused[:5])}); pthkit read it inertly",
                "info",
            )
        )
    return raw, findings, verdict


def _torch_load_fallback(p: Path, fmt: str, err: Exception, *, trust: bool, mmap: bool, findings: list[Finding]) -> RawRead:
    """For constructs the inert reader does not rebuild: torch's own safe loader, then (trust only) the unsafe one."""
    try:
        obj = torch.load(p, weights_only=True, mmap=mmap and fmt == "zip", map_location="cpu")
        findings.append(Finding("reader", f"read by torch.load(weights_only=True): {err}", "info"))
        return RawRead(obj)
    except Exception as safe_err:  # noqa: BLE001 - torch raises many types; all mean "weights_only refused"
        if not trust:
            raise UnsupportedFormatError.build(
                f"weights file {p.name}", received=f"constructs pthkit does not rebuild ({err}); torch.load(weights_only=True) "
                f"also refused it ({' '.join(str(safe_err).split())[:120]})",
                expected="tensors and plain data",
                hint="If you trust the file's origin, pass trust=True (--trust) to run its code.",
            ) from safe_err
    warnings.warn(f"pthkit: loading {p.name} with torch.load(weights_only=False): code from the file may run", stacklevel=3)
    findings.append(Finding("trust", "read with torch.load(weights_only=False) because trust=True", "danger"))
    return RawRead(torch.load(p, weights_only=False, map_location="cpu"))


def _jit_load(p: Path, findings: list[Finding]) -> tuple[RawRead, list[Finding], Verdict]:
    warnings.warn(f"pthkit: torch.jit.load({p.name}) runs code from the file (trust=True)", stacklevel=3)
    findings.append(Finding("trust", "read with torch.jit.load because trust=True: code from the file ran", "danger"))
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as err:  # noqa: BLE001
        raise CorruptCheckpointError.build(
            f"TorchScript archive {p.name}", received=f"an archive torch.jit.load cannot read ({' '.join(str(err).split())[:120]})",
            expected="a TorchScript archive",
        ) from err
    return RawRead(dict(module.state_dict()), globals=[f"{type(module).__module__}.{type(module).__name__}"]), findings, "needs-trust"


def _verdict(globals_: list[str], *, torchscript: bool = False) -> Verdict:
    kinds = {classify(g) for g in globals_}
    if "dangerous" in kinds:
        return "malicious-looking"
    if "unknown" in kinds or torchscript:
        return "needs-trust"
    return "safe"


def _global_findings(globals_: list[str]) -> list[Finding]:
    out = []
    for g in globals_:
        kind = classify(g)
        if kind == "dangerous":
            out.append(Finding("refused-global", f"{g}: can run code; never imported or called", "danger"))
        elif kind == "unknown":
            out.append(Finding("class", f"{g}: read as an inert placeholder (not imported)", "warning"))
    return out


def _from_object(
    p: Path, fmt: Any, raw: RawRead, findings: list[Finding], verdict: Verdict, *, select: str, strip_prefix: bool
) -> Checkpoint:
    obj = raw.obj
    if isinstance(obj, torch.Tensor):
        obj = {"tensor": obj}
    candidates = unwrap.find_candidates(obj)
    chosen, others, notes = unwrap.choose(candidates, select)  # type: ignore[arg-type]
    findings.extend(notes)
    if chosen is None:
        findings.append(Finding("weights", "no dict of tensors found in the file", "warning"))
    exclude = {c.obj_id for c in candidates}
    entries = unwrap.entries_besides(obj, exclude) if not unwrap.is_module_object(obj) else {}
    classes = [g for g in raw.globals if classify(g) != "data"]
    ckpt = Checkpoint(
        path=p,
        format=fmt,
        file_size=p.stat().st_size,
        tensors=dict(chosen.tensors) if chosen else {},
        source=list(chosen.path) if chosen else [],
        alternatives={c.label: c.tensors for c in others},
        entries=entries,
        classes=classes,
        findings=findings,
        verdict=verdict,
    )
    if isinstance(obj, dict) and "pytorch-lightning_version" in obj:
        ckpt.metadata["lightning_version"] = str(obj["pytorch-lightning_version"])
    return _finish(ckpt, strip_prefix)


def _finish(ckpt: Checkpoint, strip_prefix: bool) -> Checkpoint:
    if strip_prefix and ckpt.tensors:
        ckpt.tensors, removed = unwrap.strip_prefixes(ckpt.tensors)
        if removed:
            ckpt.prefixes_removed = removed
            ckpt.findings.append(Finding("prefix", f"removed key prefix {''.join(removed)!r} shared by every key", "info"))
    ckpt.shared = unwrap.shared_groups(ckpt.tensors)
    if ckpt.shared:
        ckpt.findings.append(Finding("shared", f"{len(ckpt.shared)} groups of tied tensors (same storage)", "info"))
    return ckpt


# ---------------------------------------------------------------------------------------------------------------------
# sharded checkpoints


def _safe_shard(folder: Path, name: Any) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", "..") or ":" in name:
        raise CorruptCheckpointError.build(
            "shard index", received=f"shard name {name!r}", expected="a file name inside the index's folder",
            hint="The index was crafted or damaged.",
        )
    return folder / name


def _find_index(folder: Path) -> Path | None:
    indexes = sorted(folder.glob("*.index.json"))
    if not indexes:
        return None
    preferred = [i for i in indexes if "safetensors" in i.name]
    return (preferred or indexes)[0]


def single_weights_file(folder: Path) -> Path:
    """The one weights file of a folder without a shard index (``model.safetensors`` / ``pytorch_model.bin`` first)."""
    for preferred in ("model.safetensors", "pytorch_model.bin"):
        if (folder / preferred).is_file():
            return folder / preferred
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and f.name.endswith(_WEIGHT_SUFFIXES)]
    if len(files) == 1:
        return files[0]
    raise InputNotFoundError.build(
        f"weights folder {folder}", received=f"{len(files)} weights files and no *.index.json",
        expected="one weights file or a shard index", hint="Point at the file to read.",
    )


def _read_sharded(p: Path, *, trust: bool, mmap: bool, select: str, strip_prefix: bool) -> Checkpoint:
    if p.is_dir():
        index = _find_index(p)
        if index is None:
            return read_checkpoint(
                single_weights_file(p), trust=trust, mmap=mmap, select=select, strip_prefix=strip_prefix, allow_meta=True
            )
    else:
        index = p
    try:
        doc = json.loads(read_small(index, what="shard index", limit=INDEX_LIMIT).decode("utf-8"))
        weight_map = doc["weight_map"]
        if not isinstance(weight_map, dict) or not all(isinstance(k, str) for k in weight_map):
            raise TypeError("weight_map is not a map of names")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise CorruptCheckpointError.build(
            f"shard index {index.name}", received=f"malformed JSON ({err})", expected='{"weight_map": {tensor: shard}}'
        ) from err
    folder = index.parent
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        _safe_shard(folder, shard)
        shards.setdefault(shard, []).append(key)
    tensors: dict[str, torch.Tensor] = {}
    findings: list[Finding] = []
    classes: list[str] = []
    verdicts: list[Verdict] = []
    size = index.stat().st_size
    for shard, keys in shards.items():
        shard_path = folder / shard
        try:
            check_input(shard_path, what="shard", allow_dir=False)  # FIFOs, devices: typed errors before opening
        except InputNotFoundError as err:
            raise CorruptCheckpointError.build(
                f"sharded checkpoint {index.name}", received=f"an index naming {shard}, which is missing",
                expected="every shard next to the index", hint="Download the missing shard.",
            ) from err
        if detect_format(shard_path) == "sharded":
            raise UnsupportedFormatError.build("shard", received=f"{shard} is itself an index", expected="a weights file")
        part = read_checkpoint(shard_path, trust=trust, mmap=mmap, select=select, strip_prefix=False, allow_meta=True)
        size += part.file_size
        verdicts.append(part.verdict)
        classes.extend(c for c in part.classes if c not in classes)
        findings.extend(f for f in part.findings if f not in findings)
        missing = [k for k in keys if k not in part.tensors]
        if missing:
            raise CorruptCheckpointError.build(
                f"sharded checkpoint {index.name}", received=f"shard {shard} without {missing[:3]} that the index places there",
                expected="each tensor in the shard the index names",
            )
        for k, t in part.tensors.items():
            if k in tensors:
                raise CorruptCheckpointError.build(
                    f"sharded checkpoint {index.name}", received=f"tensor {k!r} in two shards", expected="each tensor once"
                )
            tensors[k] = t
        extra = [k for k in part.tensors if k not in weight_map]
        if extra:
            findings.append(Finding("index", f"shard {shard} holds {len(extra)} tensors the index does not list", "warning"))
    metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    order = {"safe": 0, "needs-trust": 1, "malicious-looking": 2}
    ckpt = Checkpoint(
        path=index,
        format="sharded",
        file_size=size,
        tensors=tensors,
        classes=classes,
        findings=findings,
        metadata={str(k): str(v) for k, v in metadata.items()},
        verdict=max(verdicts, key=order.__getitem__) if verdicts else "safe",
    )
    ckpt.metadata["shards"] = str(len(shards))
    return _finish(ckpt, strip_prefix)
