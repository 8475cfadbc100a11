"""Which format a weights file is, from its first bytes — never from its extension."""

from __future__ import annotations

import json
import os
import pickletools
import struct
import tarfile
import zipfile
from pathlib import Path

from pthkit.checkpoint._paths import check_input, read_small
from pthkit.checkpoint.types import CheckpointFormat
from pthkit.errors import CorruptCheckpointError, PthkitError, UnsupportedFormatError

# torch.save's legacy (pre-1.6) format starts with a pickled magic number.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PICKLED = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
INDEX_LIMIT = 16 * 1024 * 1024  # a shard index of the largest public models is a few MB

_SIGNATURES: list[tuple[bytes, str]] = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ", "an xz archive"),
    (b"7z\xbc\xaf", "a 7-zip archive"),
    (b"\x89HDF", "an HDF5 file (Keras .h5?)"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x7fELF", "an executable (ELF)"),
    (b"RIFF", "a RIFF (WebP/WAV) file"),
    (b"GGUF", "a GGUF file (llama.cpp)"),
]

_LFS_HINT = "a git-lfs pointer: the real file was never downloaded; run `git lfs pull`"


def _unsupported(path: Path, seen: str, hint: str | None = None) -> PthkitError:
    return UnsupportedFormatError.build(
        f"weights file {path.name}",
        received=seen,
        expected="a PyTorch checkpoint (torch.save zip or legacy), safetensors, TorchScript, or a pickle of tensors",
        hint=hint or "Check that the path points at the weights file itself.",
    )


def detect_format(path: str | os.PathLike) -> CheckpointFormat:
    """Return the format of ``path`` from its content, or raise a typed error that names what was seen.

    A folder is ``"sharded"`` when it holds a ``*.index.json`` (or one weights file, read as that file's format);
    Lightning ``.ckpt`` and Hugging Face ``pytorch_model.bin`` are ``"zip"``.
    """
    p = Path(path)
    kind, size = check_input(p)
    if kind == "dir":
        return "sharded"
    if size == 0:
        raise CorruptCheckpointError.build(
            f"weights file {p.name}", received="an empty file (0 bytes)", expected="a weights file",
            hint="The download or copy failed; fetch it again.",
        )
    with open(p, "rb") as f:
        head = f.read(512)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _zip_kind(p)
    if is_tar_header(head):  # torch.load tries its pre-0.4 tar format before anything else but zip
        raise _unsupported(
            p, "a tar archive (torch.save wrote tar files before PyTorch 0.4; torch.load would read it as one)",
            "Run `pthkit scan` on it; re-save it with torch.save from a PyTorch version that reads it, if you trust it.",
        )
    if head[:1] == b"\x80" and head[2:14] == _LEGACY_PICKLED:
        return "legacy"
    if len(head) >= 9 and _looks_like_safetensors(head):
        return "safetensors"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "pickle"
    for sig, what in _SIGNATURES:
        if head.startswith(sig):
            raise _unsupported(p, what)
    if head[257:262] == b"ustar":  # a tar header with a bad checksum: torch would not read it as tar either
        raise _unsupported(
            p, "a tar archive (torch.save wrote tar files before PyTorch 0.4)",
            "Re-save it with torch.save from a PyTorch version that reads it.",
        )
    if head[4:8] == b"TFL3":
        raise _unsupported(p, "a TensorFlow Lite model")
    text = head.lstrip()
    if text.startswith(b"version https://git-lfs"):
        raise UnsupportedFormatError(f"weights file {p.name}: received {_LFS_HINT}.")
    low = text[:64].lower()
    if low.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        raise _unsupported(p, "an HTML/XML page (a login or error page saved instead of the file?)", "Download the file again.")
    if text.startswith(b"{"):
        return _json_kind(p, size)
    if head[:1] in (b"(", b"}", b"]", b"c") and _parses_as_pickle(p):
        return "pickle"
    if len(head) < 9 and head[:1] != b"\x80":
        raise CorruptCheckpointError.build(
            f"weights file {p.name}", received=f"only {size} bytes", expected="a weights file", hint="The file is truncated."
        )
    if _is_text(head):
        first = head.decode("utf-8", "replace").splitlines()[0][:40] if head.strip() else ""
        raise _unsupported(p, f"a text file starting with {first!r}")
    raise _unsupported(p, f"unknown binary content starting with {head[:8].hex()}")


def is_tar_header(head: bytes) -> bool:
    """Whether the first 512 bytes form a tar header that :mod:`tarfile` accepts (checksum included).

    ``torch.load`` opens every real file at offset 0 with ``tarfile.open(mode="r:")`` first; when that succeeds it
    takes the legacy tar path and unpickles the archive's members, whatever else the file looks like.
    """
    if len(head) < 512:
        return False
    try:
        tarfile.TarInfo.frombuf(head[:512], tarfile.ENCODING, "surrogateescape")
    except (tarfile.HeaderError, ValueError, UnicodeError, OverflowError):
        return False
    return True


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then the JSON header. Text files have printable bytes where the length is.
    if _is_text(head[:8]):
        return False
    (n,) = struct.unpack("<Q", head[:8])
    # '{' is not a pickle opcode, so a pickle rarely has it at byte 8; whitespace must lead to a '{'.
    return n > 0 and head[8:].lstrip(b" \t\r\n")[:1] == b"{"



def _is_text(data: bytes) -> bool:
    return bool(data) and all(32 <= b < 127 or b in (9, 10, 13) for b in data)


def _zip_kind(p: Path) -> CheckpointFormat:
    try:
        with zipfile.ZipFile(p) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, OverflowError, struct.error, EOFError, NotImplementedError) as err:
        raise CorruptCheckpointError.build(
            f"weights file {p.name}", received=f"a damaged or truncated zip archive ({' '.join(str(err).split())[:80]})",
            expected="a complete torch.save archive", hint="Download the file again.",
        ) from err
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        return "torchscript"
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "zip"
    if names and all(n.endswith(".npy") for n in names):
        raise _unsupported(p, "a NumPy .npz archive")
    raise _unsupported(p, f"a zip archive without data.pkl ({len(names)} members)", "It is not a torch.save file.")


def _json_kind(p: Path, size: int) -> CheckpointFormat:
    if size > INDEX_LIMIT:
        raise _unsupported(p, f"a {size:,}-byte JSON/text file")
    try:
        doc = json.loads(read_small(p, what="shard index", limit=INDEX_LIMIT).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _unsupported(p, "a text file that is not valid JSON") from err
    if isinstance(doc, dict) and isinstance(doc.get("weight_map"), dict):
        return "sharded"
    raise _unsupported(p, "a JSON file without a weight_map (a config file?)", "Point at the weights or the *.index.json.")


def _parses_as_pickle(p: Path) -> bool:
    """Protocol 0/1 pickles have no header; accept the file when pickletools can walk it to STOP."""
    from pthkit.checkpoint._pickle_scan import BoundedReader

    size = p.stat().st_size
    with open(p, "rb") as f:
        try:
            for op, _, _ in pickletools.genops(BoundedReader(f, 0, size)):  # type: ignore[arg-type]
                if op.name == "STOP":
                    return True
        except Exception:  # noqa: BLE001 - anything unparseable is simply "not a pickle"
            return False
    return False
