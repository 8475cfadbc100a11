"""The user's own architectures: ``path/to/file.py:ClassName`` and ``package.module:factory``.

These run code the user points at on purpose (their own model definition), never code from a weights file.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pthkit.errors import ArchitectureBuildError, InputNotFoundError

__all__ = ["is_file_spec", "is_user_spec", "load_user_callable", "parse_arch_kwargs"]

_MODULE_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_ATTR_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")


def _split(spec: str) -> tuple[str, str] | None:
    if ":" not in spec:
        return None
    target, attr = spec.rsplit(":", 1)  # rsplit: Windows paths (C:\x.py:Net) keep their drive colon
    if not target or not _ATTR_RE.match(attr):
        return None
    return target, attr


def is_user_spec(spec: str) -> bool:
    """True for ``something.py:Name`` (a file) or ``dotted.module:name`` (an importable module)."""
    parts = _split(spec)
    if parts is None:
        return False
    target, _ = parts
    return target.endswith(".py") or ("/" in target) or ("\\" in target) or bool(_MODULE_RE.match(target) and "." in target)


def is_file_spec(spec: str) -> bool:
    """True for ``path/to/file.py:Name``: a spec no registered name can be (registered names are
    ``source:name``, the source a bare word), so it resolves without loading the registry."""
    parts = _split(spec)
    if parts is None:
        return False
    target, _ = parts
    return target.endswith(".py") or "/" in target or "\\" in target


def _import_file(path: Path) -> Any:
    # A stable, unique module name per file so two files named model.py do not collide.
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    mod_name = f"pthkit_user_{path.stem}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ArchitectureBuildError.build(
            "architecture file", received=str(path), expected="a Python source file",
            hint="Point --arch at a .py file defining your model: path/to/file.py:ClassName.",
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    # The file's own imports (from . or sibling modules) resolve from its folder.
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's code failed: say where, keep the cause
        sys.modules.pop(mod_name, None)
        raise ArchitectureBuildError.build(
            "architecture file", received=f"{path} raising {type(exc).__name__}: {exc}",
            expected="a file that imports cleanly", hint="Fix the error in that file (run it with python to see it).",
        ) from exc
    finally:
        try:
            sys.path.remove(str(path.parent))
        except ValueError:
            pass
    return module


def load_user_callable(spec: str) -> Callable[..., Any]:
    """Resolve ``file.py:Name`` / ``package.module:factory`` to the class or function it names."""
    parts = _split(spec)
    if parts is None:
        raise ArchitectureBuildError.build(
            "architecture", received=repr(spec), expected="path/to/file.py:ClassName or package.module:factory",
        )
    target, attr = parts
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise InputNotFoundError.build(
                "architecture file", received=f"{target} (not found)", expected="an existing .py file",
                hint="Check the path before the ':' in --arch.",
            )
        module = _import_file(path)
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ArchitectureBuildError.build(
                "architecture module", received=f"{target!r} ({exc})", expected="an importable Python module",
                hint="Install the package or use path/to/file.py:ClassName.",
            ) from exc
        where = target
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in vars(module) if not n.startswith("_") and callable(getattr(module, n)))
            raise ArchitectureBuildError.build(
                "architecture", received=f"no {attr!r} in {where}", expected="a class or factory defined there",
                hint=f"Available: {', '.join(names[:10]) or 'none'}.",
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ArchitectureBuildError.build(
            "architecture", received=f"{attr!r} in {where} is {type(obj).__name__}",
            expected="a class or a function returning an nn.Module",
        )
    return obj


def parse_arch_kwargs(items: Iterable[str] | None) -> dict[str, Any]:
    """``["num_classes=10", "drop_rate=0.1", "act='gelu'"]`` -> dict; values are Python literals, else strings."""
    kwargs: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ArchitectureBuildError.build(
                "--arch-kwargs", received=repr(item), expected="key=value (value a Python literal)",
                hint="Example: --arch-kwargs num_classes=10 --arch-kwargs img_size=224",
            )
        raw = raw.strip()
        try:
            kwargs[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            kwargs[key] = raw  # a bare word such as gelu: keep it as the string the user typed
    return kwargs
