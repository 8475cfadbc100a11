"""The architecture registry: torchvision, timm, entry points and the user's own code, under one naming scheme.

Names are qualified by source (``torchvision:resnet18``, ``timm:resnet18``); a bare name resolves when only one
source has it, and refuses loudly otherwise (like timm's ``parse_model_name``). Registration refuses duplicates
(like torchvision's ``register_model``); listing filters with fnmatch globs (like ``list_models(include, exclude)``).
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from pthkit.architectures.types import Architecture
from pthkit.architectures.user_code import is_file_spec, is_user_spec, load_user_callable
from pthkit.errors import (
    AmbiguousArchitectureError,
    ArchitectureBuildError,
    ArchitectureError,
    UnknownArchitectureError,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "REGISTRY",
    "Registry",
    "build_model",
    "get_architecture",
    "list_architectures",
    "register_architecture",
]

ENTRY_POINT_GROUP = "pthkit.architectures"


def _torchvision_builder(name: str, **kwargs: Any) -> Any:
    import inspect

    from torchvision import models  # type: ignore[import-untyped]

    builder = models.get_model_builder(name)
    params = inspect.signature(builder).parameters
    if "weights_backbone" in params:
        # Detection/segmentation builders default to downloading ImageNet backbone weights: never download.
        kwargs.setdefault("weights_backbone", None)
    return builder(weights=None, **kwargs)


def _timm_builder(name: str, **kwargs: Any) -> Any:
    import timm

    return timm.create_model(name, pretrained=False, **kwargs)


def _torchvision_architectures() -> list[Architecture]:
    from torchvision import models

    archs = []
    for name in models.list_models():
        weights = None
        try:
            enum = models.get_model_weights(name)
            default = getattr(enum, "DEFAULT", None)
            weights = str(default) if default is not None else None
        except (ValueError, KeyError, AttributeError):  # a model without weights enum
            weights = None
        archs.append(
            Architecture(
                name=f"torchvision:{name}", source="torchvision",
                builder=functools.partial(_torchvision_builder, name), torchvision_weights=weights,
            )
        )
    return archs


def _timm_architectures() -> list[Architecture]:
    import timm

    return [
        Architecture(name=f"timm:{name}", source="timm", builder=functools.partial(_timm_builder, name), timm_name=name)
        for name in timm.list_models()
    ]


class Registry:
    """Holds every known :class:`Architecture`; torchvision, timm and entry points are loaded on first use."""

    def __init__(self, *, builtin: bool = True) -> None:
        self._archs: dict[str, Architecture] = {}
        self._by_short: dict[str, list[str]] = {}
        self._builtin = builtin
        self._loaded = not builtin
        self._lock = threading.RLock()
        self.entry_point_errors: dict[str, str] = {}

    # --- loading ---------------------------------------------------------------------------------------------------

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            for arch in _torchvision_architectures() + _timm_architectures():
                self._add(arch)
            self._load_entry_points()

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points

        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                hook = ep.load()
                returned = hook(self)
                for arch in returned or ():
                    self.register(arch)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break pthkit; it is reported, not hidden
                self.entry_point_errors[ep.name] = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"pthkit: entry point {ep.name!r} ({ep.value}) of group {ENTRY_POINT_GROUP!r} failed: {exc}",
                    RuntimeWarning, stacklevel=2,
                )

    def _add(self, arch: Architecture) -> None:
        self._archs[arch.name] = arch
        self._by_short.setdefault(arch.short_name, []).append(arch.name)

    # --- public -----------------------------------------------------------------------------------------------------

    def register(self, arch: Architecture) -> None:
        """Add ``arch``; refuses a name already taken (qualify it, e.g. ``mylib:resnet18``)."""
        if not isinstance(arch, Architecture):
            raise ArchitectureError.build(
                "register_architecture", received=type(arch).__name__, expected="a pthkit Architecture",
            )
        self._ensure_loaded()
        with self._lock:
            if arch.name in self._archs:
                raise ArchitectureError.build(
                    "register_architecture", received=f"duplicate name {arch.name!r}",
                    expected="a name not yet registered", hint="Pick another name or qualify it: 'mylib:NAME'.",
                )
            self._add(arch)

    def unregister(self, name: str) -> None:
        """Remove a registered architecture (plugins reloading, tests); unknown names are ignored."""
        with self._lock:
            arch = self._archs.pop(name, None)
            if arch is not None:
                owners = self._by_short.get(arch.short_name, [])
                if name in owners:
                    owners.remove(name)
                if not owners:
                    self._by_short.pop(arch.short_name, None)

    def names(self) -> list[str]:
        self._ensure_loaded()
        return sorted(self._archs)

    def list(
        self, pattern: str | Iterable[str] | None = None, *, exclude: str | Iterable[str] | None = None,
        source: str | None = None,
    ) -> list[str]:
        """Qualified names matching any include glob (on the qualified or bare name) and no exclude glob."""
        includes = [pattern] if isinstance(pattern, str) else list(pattern or [])
        excludes = [exclude] if isinstance(exclude, str) else list(exclude or [])

        def hit(arch: Architecture, globs: list[str]) -> bool:
            return any(fnmatch.fnmatch(arch.name, g) or fnmatch.fnmatch(arch.short_name, g) for g in globs)

        self._ensure_loaded()
        out = []
        for name, arch in sorted(self._archs.items()):
            if source and arch.source != source:
                continue
            if includes and not hit(arch, includes):
                continue
            if excludes and hit(arch, excludes):
                continue
            out.append(name)
        return out

    def resolve_name(self, name: str) -> str:
        """The qualified registered name for ``name`` (bare, qualified, or a timm name with a ``.tag``)."""
        self._ensure_loaded()
        name = name.strip()
        if name in self._archs:
            return name
        for candidate in (name, name.split(".", 1)[0] if ":" not in name else None):
            if candidate and candidate in self._by_short:
                owners = self._by_short[candidate]
                if len(owners) == 1:
                    return owners[0]
                listed = " or ".join(sorted(owners))
                raise AmbiguousArchitectureError.build(
                    "architecture", received=f"{name!r}, which {len(owners)} sources have",
                    expected="one architecture", hint=f"Qualify it: use {listed}.",
                )
        if ":" in name:
            source, _, rest = name.partition(":")
            stripped = f"{source}:{rest.split('.', 1)[0]}"  # timm:resnet18.a1_in1k -> timm:resnet18
            if stripped in self._archs:
                return stripped
        close = difflib.get_close_matches(name, list(self._archs) + list(self._by_short), n=5, cutoff=0.6)
        hint = f"Did you mean: {', '.join(dict.fromkeys(close))}?" if close else ""
        raise UnknownArchitectureError.build(
            "architecture", received=repr(name),
            expected="a registered name (see 'pthkit architectures'), path/to/file.py:Class or package.module:factory",
            hint=hint or "List them with 'pthkit architectures PATTERN'.",
        )

    def get(self, name: str) -> Architecture:
        """The :class:`Architecture` for a registered name, or a user spec ``file.py:Class`` / ``pkg.mod:factory``."""
        if isinstance(name, Architecture):
            return name
        if is_file_spec(name):  # never a registered name: skip loading timm's and torchvision's registries (~3 s)
            return user_architecture(name)
        try:
            return self._archs[self.resolve_name(name)]
        except UnknownArchitectureError:
            if is_user_spec(name):
                return user_architecture(name)
            raise


def user_architecture(spec: str, **default_kwargs: Any) -> Architecture:
    """An :class:`Architecture` for the user's ``file.py:Class`` / ``package.module:factory`` (not registered)."""
    builder: Callable[..., Any] = load_user_callable(spec)
    return Architecture(name=spec, source="user", builder=builder, default_kwargs=dict(default_kwargs))


REGISTRY = Registry()


def list_architectures(
    pattern: str | Iterable[str] | None = None, *, exclude: str | Iterable[str] | None = None,
    source: str | None = None,
) -> list[str]:
    """Registered names (``timm:resnet18``, ``torchvision:resnet18`` …) matching fnmatch globs."""
    return REGISTRY.list(pattern, exclude=exclude, source=source)


def get_architecture(name: str) -> Architecture:
    """Resolve a name: qualified, bare (if only one source has it), or user code ``file.py:Class``."""
    return REGISTRY.get(name)


def register_architecture(arch: Architecture) -> None:
    """Add an architecture to the global registry (refuses duplicate names)."""
    REGISTRY.register(arch)


def build_model(name: str | Architecture, **kwargs: Any) -> Any:
    """Build the named architecture on CPU with random weights; ``kwargs`` go to its constructor."""
    arch = REGISTRY.get(name) if isinstance(name, str) else name
    try:
        model = arch.build(**kwargs)
    except ArchitectureError:
        raise
    except Exception as exc:
        args = ", ".join(f"{k}={v!r}" for k, v in {**arch.default_kwargs, **kwargs}.items()) or "no arguments"
        raise ArchitectureBuildError.build(
            "build_model", received=f"{arch.name}({args}) raising {type(exc).__name__}: {exc}",
            expected="constructor arguments that architecture accepts",
            hint="Check --arch-kwargs (names and values).",
        ) from exc
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ArchitectureBuildError.build(
            "build_model", received=f"{arch.name} returning {type(model).__name__}", expected="a torch.nn.Module",
        )
    return model
