"""Key maps on disk: the checkpoint-key → model-key renames found by alignment, saved as JSON and reused."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pthkit.errors import InputNotFoundError, LoadError

__all__ = ["read_key_map", "write_key_map", "KeyMapFile"]

KEY_MAP_FORMAT = "pthkit-key-map/1"


class KeyMapFile(dict):
    """A key map (``dict[str, str]``) plus what the file said about the architecture it was made for."""

    architecture: str | None = None
    kwargs: dict[str, Any] | None = None


def write_key_map(path: str | os.PathLike, document: dict[str, Any]) -> Path:
    """Write ``document`` (see :meth:`LoadReport.key_map_dict`) as JSON, atomically (temp file + rename)."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    return target


def _bad(received: str, path: Any) -> LoadError:
    return LoadError.build(
        f"key map {path}", received=received,
        expected='a JSON object {"file key": "model key"} or a file written by --save-key-map',
        hint="Write one with `pthkit load FILE --save-key-map map.json`.",
    )


def read_key_map(source: dict[str, str] | str | os.PathLike) -> KeyMapFile:
    """A key map from a dict, or from a JSON file (plain ``{"old": "new"}`` or the ``--save-key-map`` document)."""
    result = KeyMapFile()
    if isinstance(source, dict):
        data: Any = source
        where: Any = "(dict)"
    else:
        where = Path(source).expanduser()
        if not where.is_file():
            raise InputNotFoundError.build(
                "key map", received=f"{where} (not found)", expected="an existing JSON file",
                hint="Check the --key-map path.",
            )
        try:
            data = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _bad(f"unreadable JSON ({exc})", where) from exc
    if not isinstance(data, dict):
        raise _bad(type(data).__name__, where)
    if "key_map" in data and isinstance(data.get("key_map"), dict):
        result.architecture = data.get("architecture") if isinstance(data.get("architecture"), str) else None
        result.kwargs = data.get("kwargs") if isinstance(data.get("kwargs"), dict) else None
        data = data["key_map"]
    for old, new in data.items():
        if not isinstance(old, str) or not isinstance(new, str):
            raise _bad(f"entry {old!r}: {new!r} (not two strings)", where)
        result[old] = new
    return result
