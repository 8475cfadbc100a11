"""``load_model``: file → checkpoint → architecture (given or identified) → built model with the weights copied in."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pthkit.errors import IdentificationError, LoadError
from pthkit.loading.device import resolve_device, resolve_dtype
from pthkit.loading.keymap import read_key_map
from pthkit.loading.match import guess_head_keys, load_state_into
from pthkit.loading.report import KeyIssue, LoadReport

if TYPE_CHECKING:
    from pthkit.architectures.types import Candidate, IdentifyResult
    from pthkit.checkpoint.types import Checkpoint

__all__ = ["load_model", "check_fit", "identification_error"]


def _as_checkpoint(source: "str | os.PathLike | Checkpoint", *, trust: bool, select: str) -> "Checkpoint":
    from pthkit.checkpoint.types import Checkpoint

    if isinstance(source, Checkpoint):
        return source
    from pthkit.checkpoint import read_checkpoint

    return read_checkpoint(Path(source), trust=trust, select=select)  # type: ignore[arg-type]


def identification_error(result: "IdentifyResult", path: Any = None) -> IdentificationError:
    """The one-line refusal when identification is not confident: the top guesses and what to pass instead."""
    guesses = ", ".join(f"{c.architecture} ({c.score:.2f}, {c.confidence})" for c in result.candidates[:3]) or "none"
    where = f" for {path}" if path else ""
    decision = result.twin_decision
    if decision is not None and not decision.confident:
        # Twins: the tensors fit several architectures that compute different things; say which, why undecided,
        # and the exact flags (the message already carries the fit numbers).
        return IdentificationError.build(
            f"architecture{where}", received=result.message,
            expected="one architecture; these twins fit the tensors equally and differ in "
                     f"{decision.how_they_differ}",
            hint=f"Pass {decision.arch_flags()} (arch='NAME'); `pthkit identify FILE --explain` shows the evidence.",
        )
    return IdentificationError.build(
        f"architecture{where}", received=f"{result.message or 'no confident match'}; top guesses: {guesses}",
        expected="one architecture that fits the file with high confidence",
        hint="Pass --arch NAME (arch='NAME'); `pthkit identify FILE` shows the evidence.",
    )


def _candidate_for(tensors: dict[str, torch.Tensor], arch: str) -> "Candidate | None":
    """The identification evidence for an architecture the caller named (key map for another naming, num_classes).

    Best effort: identification refining an explicit --arch must never block loading, so failures return None and
    the load proceeds by names alone.
    """
    try:
        from pthkit.architectures import identify

        wanted = _resolve_name(arch)
        result = identify(tensors, top=1, include=[wanted])
    except Exception:  # noqa: BLE001 - see docstring
        return None
    for cand in result.candidates:
        if cand.architecture == wanted:
            return cand
    return None


def _user_model_that_fits(tensors: dict[str, torch.Tensor], arch_name: str,
                          arch_kwargs: dict[str, Any] | None) -> nn.Module | None:
    """The user's class (``file.py:Class``), built with the caller's kwargs, when the file's names and shapes already
    fit it (the load's own prefix fixing included); else None.

    Identification only adds a key map for another naming convention, or kwargs, to a class the caller named; when
    the names fit as they are it adds nothing, and it costs most of a small model's run (it imports timm and
    torchvision and loads the signature index: about 3 s of a 5 s ``pthkit predict`` on a million-row table).
    """
    from pthkit.architectures.user_code import is_file_spec

    if not is_file_spec(arch_name):
        return None
    from pthkit.architectures import build_model

    try:
        model = build_model(arch_name, **(arch_kwargs or {}))
    except Exception:  # noqa: BLE001 - the normal path builds it again and reports the failure in its own words
        return None
    report = load_state_into(model, tensors, architecture=arch_name, dry_run=True)
    return model if report.ok and not report.blocking else None


def _resolve_name(arch: str) -> str:
    from pthkit.architectures import get_architecture
    from pthkit.architectures.user_code import is_user_spec
    from pthkit.errors import ArchitectureError

    try:
        return get_architecture(arch).name
    except ArchitectureError:
        if is_user_spec(arch):  # built by build_model from the user's file / module
            return arch
        raise


def _accepted_kwargs(arch_name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Drop inferred kwargs the builder cannot take (a user class without ``num_classes``), so inference never breaks
    a build; builders taking ``**kwargs`` (timm, torchvision) keep them all."""
    if not kwargs:
        return kwargs
    import inspect

    from pthkit.architectures import get_architecture

    try:
        builder = get_architecture(arch_name).builder
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError, LookupError):
        return kwargs
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return kwargs
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}


def _file_num_classes(tensors: dict[str, torch.Tensor], key_map: dict[str, str], heads: set[str]) -> int | None:
    inverse = {v: k for k, v in key_map.items()}
    for head in heads:
        if head.endswith("weight"):
            t = tensors.get(inverse.get(head, head))
            if t is not None and t.ndim >= 2:
                return int(t.shape[0])
    return None


@dataclass
class _Plan:
    """Everything decided before copying: the architecture, its kwargs, the key map, the head."""

    ckpt: "Checkpoint"
    arch_name: str
    model: nn.Module
    candidate: "Candidate | None"
    kwargs: dict[str, Any]
    file_kwargs: dict[str, Any]
    key_map: dict[str, str]
    key_map_cause: str
    heads: set[str]
    head_change: bool
    file_classes: int | None
    notes: list[KeyIssue] = field(default_factory=list)


def _plan(
    ckpt: "Checkpoint", arch: str | None, *, arch_kwargs: dict[str, Any] | None, num_classes: int | None,
    key_map: dict[str, str] | str | os.PathLike | None, trust: bool = False,
) -> _Plan:
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0):
        raise LoadError.build("num_classes", received=repr(num_classes), expected="an integer >= 0")
    tensors = ckpt.tensors
    user_map = read_key_map(key_map) if key_map is not None else None

    from pthkit.architectures import build_model

    candidate: Candidate | None = None
    fitted: nn.Module | None = None  # a user's class already built with the caller's kwargs, that fits by names
    kwargs: dict[str, Any] = {}
    notes: list[KeyIssue] = []
    if arch is None and user_map is not None and user_map.architecture:
        from pthkit.architectures.from_file import architecture_from_file

        arch = architecture_from_file(user_map.architecture, where=f"key map {key_map}", trust=trust)
        notes.append(KeyIssue(arch, "user-key-map", f"architecture {arch} taken from the key map file"))
    if arch is None:
        from pthkit.architectures import identify

        result = identify(tensors)
        if not result.confident or not result.candidates:
            raise identification_error(result, ckpt.path)
        candidate = result.candidates[0]
        arch_name = candidate.architecture
        if candidate.equivalent:
            notes.append(KeyIssue(arch_name, "equivalent", "identical signature: " + ", ".join(candidate.equivalent)
                                  + (f" ({result.message})" if result.message else "")))
    else:
        arch_name = _resolve_name(arch)
        if user_map is None:
            fitted = _user_model_that_fits(tensors, arch_name, arch_kwargs)
            candidate = _candidate_for(tensors, arch) if fitted is None else None
        elif user_map.kwargs and user_map.architecture in (None, arch, arch_name):
            kwargs.update(user_map.kwargs)
    if candidate is not None:
        kwargs.update(candidate.kwargs)
    kwargs = _accepted_kwargs(arch_name, kwargs)  # inferred ones only; explicit ones below always go through
    kwargs.update(arch_kwargs or {})
    file_kwargs = dict(kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes

    if user_map is not None:
        map_used, map_cause = dict(user_map), "user-key-map"
    elif candidate is not None:
        map_used, map_cause = dict(candidate.key_map), "renamed-by-alignment"
    else:
        map_used, map_cause = {}, "user-key-map"

    model = fitted if fitted is not None and kwargs == dict(arch_kwargs or {}) else build_model(arch_name, **kwargs)
    heads = set(guess_head_keys(model)) | set(candidate.head if candidate is not None else ())
    file_classes = _file_num_classes(tensors, map_used, heads)
    requested = num_classes if num_classes is not None else (arch_kwargs or {}).get("num_classes")
    head_change = requested is not None and file_classes != requested
    if file_classes is not None:
        file_kwargs["num_classes"] = file_classes
    if "num_classes" not in kwargs and isinstance(getattr(model, "num_classes", None), int):
        kwargs["num_classes"] = model.num_classes
    if model is fitted and "num_classes" not in kwargs and file_classes is not None:
        kwargs.update(_accepted_kwargs(arch_name, {"num_classes": file_classes}))  # it fits: its default is the file's
    if head_change:
        notes.append(KeyIssue("num_classes", "classifier-head",
                              f"head built for {requested} classes (file: {file_classes if file_classes is not None else 'unknown'}); re-initialized"))
    return _Plan(ckpt=ckpt, arch_name=arch_name, model=model, candidate=candidate, kwargs=kwargs,
                 file_kwargs=file_kwargs, key_map=map_used, key_map_cause=map_cause, heads=heads,
                 head_change=head_change, file_classes=file_classes, notes=notes)


def _run(plan: _Plan, *, strict: bool, partial: bool, dry_run: bool) -> LoadReport:
    try:
        report = load_state_into(
            plan.model, plan.ckpt.tensors, architecture=plan.arch_name, key_map=plan.key_map,
            key_map_cause=plan.key_map_cause, strict=strict, partial=partial, head_keys=plan.heads,
            head_change_expected=plan.head_change, checkpoint=plan.ckpt, dry_run=dry_run,
        )
    except LoadError as err:
        refused = getattr(err, "report", None)
        if refused is not None:  # the refused report travels with the error: complete it for the CLI
            _complete(refused, plan)
        raise
    return _complete(report, plan)


def _complete(report: LoadReport, plan: _Plan) -> LoadReport:
    report.candidate = plan.candidate
    report.kwargs = dict(plan.kwargs)
    report.file_kwargs = dict(plan.file_kwargs)
    report.notes[:0] = _checkpoint_notes(plan.ckpt) + plan.notes
    return report


def load_model(
    source: "str | os.PathLike | Checkpoint",
    arch: str | None = None,
    *,
    arch_kwargs: dict[str, Any] | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "auto",
    dtype: torch.dtype | str | None = None,
    strict: bool = True,
    partial: bool = False,
    key_map: dict[str, str] | str | os.PathLike | None = None,
    trust: bool = False,
    select: str = "auto",
) -> tuple[nn.Module, LoadReport]:
    """Build the architecture of a weights file and load the file into it; return ``(model, report)``.

    - ``arch=None`` identifies the architecture from the tensors and refuses (:class:`IdentificationError`, naming the
      top guesses) unless the match is confident. The candidate's inferred constructor arguments (``num_classes``,
      ``in_chans`` …) are used; ``arch_kwargs`` and ``num_classes`` override them, and its alignment key map renames
      keys of another naming convention. A named ``arch`` is also matched against the file (for its key map and
      inferred kwargs) when identification is available.
    - ``num_classes`` different from the file's head builds a new head and reports it re-initialized (fine-tuning).
    - ``strict`` refuses any missing / unexpected / mismatched key that is not harmless (:class:`LoadError`, with the
      report as ``err.report``); ``partial=True`` loads every tensor that fits by name *and shape* and keeps the
      fresh init for the rest (``report.reinitialized``).
    - ``key_map``: a dict or a JSON file from :meth:`LoadReport.save_key_map`; it also supplies the architecture and
      kwargs it was saved with when ``arch`` is None.
    - Values are copied into the model's own parameters (nothing keeps the file's memory-mapped tensors alive) and
      cast to the model's dtype; the model comes back in eval mode on ``device`` (``"auto"``: cuda > mps > cpu),
      cast to ``dtype`` when given.
    """
    target_device = resolve_device(device)
    target_dtype = resolve_dtype(dtype)
    ckpt = _as_checkpoint(source, trust=trust, select=select)
    plan = _plan(ckpt, arch, arch_kwargs=arch_kwargs, num_classes=num_classes, key_map=key_map, trust=trust)
    report = _run(plan, strict=strict, partial=partial, dry_run=False)
    model = plan.model
    model.eval()
    if target_dtype is not None:
        model.to(device=target_device, dtype=target_dtype)
    else:
        model.to(target_device)
    report.device = str(target_device)
    first = next(iter(model.parameters()), None)
    report.dtype = str(target_dtype or (first.dtype if first is not None else torch.float32)).removeprefix("torch.")
    return model, report


def check_fit(
    source: "str | os.PathLike | Checkpoint",
    arch: str,
    *,
    arch_kwargs: dict[str, Any] | None = None,
    num_classes: int | None = None,
    key_map: dict[str, str] | str | os.PathLike | None = None,
    trust: bool = False,
    select: str = "auto",
) -> LoadReport:
    """How a file fits a named architecture (your own ``file.py:Class`` too), key by key, without copying anything.

    The same matching as :func:`load_model` (``report.ok`` says whether a strict load would succeed), for
    ``pthkit identify FILE --arch …``: "does this file fit my class? where not?".
    """
    ckpt = _as_checkpoint(source, trust=trust, select=select)
    plan = _plan(ckpt, arch, arch_kwargs=arch_kwargs, num_classes=num_classes, key_map=key_map, trust=trust)
    return _run(plan, strict=False, partial=False, dry_run=True)


def _checkpoint_notes(ckpt: "Checkpoint") -> list[KeyIssue]:
    notes: list[KeyIssue] = []
    if ckpt.prefixes_removed:
        notes.append(KeyIssue("".join(ckpt.prefixes_removed), "prefix",
                              "removed by the reader: " + ", ".join(repr(p) for p in ckpt.prefixes_removed)))
    src = "/".join(ckpt.source)
    if "ema" in src.lower():
        notes.append(KeyIssue(src, "ema-copy", f"weights taken from the EMA copy {src!r} (select='raw' for the raw ones)"))
    elif any("ema" in k.lower() for k in ckpt.alternatives):
        alts = ", ".join(k for k in ckpt.alternatives if "ema" in k.lower())
        notes.append(KeyIssue(src or "(top level)", "ema-copy",
                              f"raw weights {src or '(top level)'!r} used; EMA copy {alts} ignored (select='ema')"))
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in ckpt.tensors.values() if t.is_floating_point()})
    if dtypes and dtypes != ["float32"]:
        notes.append(KeyIssue("dtype", "dtype", f"file stores {', '.join(dtypes)}; values cast to the model's dtype on copy"))
    return notes
