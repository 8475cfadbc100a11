"""Output helpers shared by every command: human (rich), JSON, quiet.

Commands build a plain ``dict``/``list`` (from the API objects' ``to_dict()``) and either print it as JSON or render it
with rich. Keep rendering here or in the command module, never in the API.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console(highlight=False, soft_wrap=False, emoji=False)
err_console = Console(stderr=True, highlight=False, emoji=False)


def _default(obj: Any) -> Any:
    # Paths, tuples of tensors' shapes, numpy scalars, enums: anything reasonable becomes JSON.
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except Exception:  # noqa: BLE001
            pass
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def dumps(obj: Any, *, indent: int | None = 2) -> str:
    """JSON text for ``obj``; unknown objects become strings, never a crash."""
    return json.dumps(obj, indent=indent, default=_default, ensure_ascii=False)


def print_json(obj: Any, *, indent: int | None = 2) -> None:
    """Print ``obj`` as JSON to stdout (plain, no rich markup, so it can be piped)."""
    sys.stdout.write(dumps(obj, indent=indent) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    """A one-line warning on stderr (never wrapped; the message is plain text, not rich markup)."""
    from rich.markup import escape

    err_console.print(f"[yellow]Warning:[/yellow] {escape(message)}", markup=True, soft_wrap=True)
