"""Match a file's tensors to a built model key by key, explain every difference, and copy what fits.

``torch.nn.Module.load_state_dict(strict=False)`` returns bare missing / unexpected lists and raises on the first
shape mismatch; nothing in torch, timm or safetensors says *why* a key differs, re-initializes on a shape mismatch, or
fixes a wrapper prefix. That classification is the job of this module (hand-written for that reason); the copy itself
is ``load_state_dict(assign=False)``, so the model's own parameters receive the values (casting fp16 → fp32 and
leaving no reference to memory-mapped file tensors).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from pthkit.errors import LoadError
from pthkit.loading.report import KeyIssue, LoadReport

__all__ = ["load_state_into", "guess_head_keys", "naming_convention", "is_auxiliary", "is_ema_copy"]

if TYPE_CHECKING:
    from pthkit.checkpoint.types import Checkpoint

_AUX_RE = re.compile(r"(^|\.)(AuxLogits|aux_?logits|aux_classifier|aux_head|auxiliary(_head)?|aux\d*)(\.|$)",
                     re.IGNORECASE)
_EMA_RE = re.compile(r"^(model_ema|ema_model|module_ema|ema|state_dict_ema|model_ema_\w+|_ema)\.")
_COUNTER = "num_batches_tracked"
# Wrapper prefixes seen in the wild; tried (with those the keys themselves suggest) when names do not line up.
_KNOWN_PREFIXES = ("module.", "model.", "_orig_mod.", "net.", "network.", "backbone.", "encoder.", "student.",
                   "teacher.", "base_model.", "state_dict.")


def is_auxiliary(key: str) -> bool:
    """Keys of training-only auxiliary heads (inception ``AuxLogits``, segmentation ``aux_classifier``)."""
    return bool(_AUX_RE.search(key))


def is_ema_copy(key: str) -> bool:
    """Keys of an EMA copy stored next to the raw weights in the same dict (``model_ema.…``, ``ema.…``)."""
    return bool(_EMA_RE.match(key))


def naming_convention(keys: Iterable[str]) -> str:
    """A short name for the key naming style (used in "remapped 296 keys by alignment (lukemelas → timm)")."""
    keys = list(keys)
    joined = "\n".join(keys[:400])
    if "_conv_stem" in joined or "_blocks." in joined:
        return "lukemelas"
    if any("/" in k or k.endswith(":0") for k in keys[:50]):
        return "tensorflow"
    if "conv_stem" in joined and "blocks." in joined:
        return "timm"
    if "features." in joined or "layer1." in joined:
        return "torchvision"
    return "file"


def guess_head_keys(model: nn.Module) -> tuple[str, ...]:
    """State-dict keys of the classifier head of a built model.

    timm models name it (``pretrained_cfg["classifier"]``); otherwise the last ``nn.Linear`` (or a final 1x1 conv
    classifier) in module order is taken as the head.
    """
    names: list[str] = []
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        cls = cfg["classifier"]
        names = list(cls) if isinstance(cls, (list, tuple)) else [cls]
    else:
        last: str | None = None
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and not is_auxiliary(name):
                last = name
        if last is not None:
            names = [last]
    keys = model.state_dict().keys()
    return tuple(k for k in keys if any(k == n or k.startswith(n + ".") for n in names))


def _first_segments(keys: Iterable[str], depth: int = 2) -> Counter[str]:
    counts: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for d in range(1, min(depth, len(parts) - 1) + 1):
            counts[".".join(parts[:d]) + "."] += 1
    return counts


def _fit_prefix(file_keys: list[str], model_keys: set[str]) -> tuple[str, str] | None:
    """``(strip, add)`` prefixes that make more file keys match model keys by name, or None when none helps.

    The reader already strips the common wrappers; this catches the rest (a user class that wraps a backbone as
    ``self.model``, a prefix the reader left because it was not shared by every key, …).
    """

    def score(strip: str, add: str) -> int:
        n = 0
        for key in file_keys:
            if strip and not key.startswith(strip):
                continue
            if add + key[len(strip):] in model_keys:
                n += 1
        return n

    base = sum(1 for k in file_keys if k in model_keys)
    if base == len(file_keys):
        return None
    unmatched_file = [k for k in file_keys if k not in model_keys]
    strips = [""] + [p for p, c in _first_segments(unmatched_file).most_common(3) if c >= len(unmatched_file) // 4]
    strips += [p for p in _KNOWN_PREFIXES if p not in strips and any(k.startswith(p) for k in unmatched_file[:50])]
    matched_model = {k for k in file_keys if k in model_keys}
    unmatched_model = [k for k in model_keys if k not in matched_model]
    adds = [""] + [p for p, c in _first_segments(unmatched_model).most_common(3) if c >= len(unmatched_model) // 4]
    best, best_score = None, base
    for strip in strips:
        for add in adds:
            if not strip and not add:
                continue
            s = score(strip, add)
            if s > best_score:
                best, best_score = (strip, add), s
    return best


def _tied_to(key: str, state: Mapping[str, torch.Tensor], loaded: set[str]) -> str | None:
    tensor = state[key]
    if tensor.device.type == "meta" or tensor.numel() == 0:
        return None
    ptr = tensor.untyped_storage().data_ptr()
    for other in loaded:
        t = state[other]
        if t.device == tensor.device and t.numel() and t.untyped_storage().data_ptr() == ptr and t.shape == tensor.shape:
            return other
    return None


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def load_state_into(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    *,
    architecture: str | None = None,
    key_map: Mapping[str, str] | None = None,
    key_map_cause: str = "user-key-map",
    strict: bool = True,
    partial: bool = False,
    head_keys: Iterable[str] | None = None,
    head_change_expected: bool = False,
    fix_prefix: bool = True,
    checkpoint: "Checkpoint | None" = None,
    dry_run: bool = False,
) -> LoadReport:
    """Copy ``tensors`` into ``model`` by (remapped) name and shape; return a :class:`LoadReport` explaining every key.

    - ``key_map``: file key → model key renames (from alignment or the user), recorded with ``key_map_cause``.
    - ``head_keys``: model keys of the classifier head (guessed from the model when None); with
      ``head_change_expected`` (the caller asked for another ``num_classes``) a head that differs is re-initialized
      without failing.
    - ``strict`` (and not ``partial``): any blocking issue raises :class:`~pthkit.errors.LoadError` and nothing is
      copied. ``partial``: everything that fits is copied; the rest keeps the fresh init and is listed in
      ``reinitialized``. A file of which nothing fits always raises.
    - ``dry_run``: classify only (never raises for a bad fit, copies nothing): how well would it fit?
    """
    name = architecture or type(model).__name__
    state = model.state_dict()
    model_keys = set(state)
    heads = set(head_keys) if head_keys is not None else set(guess_head_keys(model))
    report = LoadReport(architecture=name, checkpoint=checkpoint, partial=partial, dry_run=dry_run,
                        file_tensors=len(tensors), model_tensors=len(state))

    # 1. rename: caller's key map, then a wrapper prefix if one makes names line up.
    key_map = dict(key_map or {})
    renamed: dict[str, str] = {}
    for key in tensors:
        target = key_map.get(key, key)
        if target != key:
            renamed[key] = target
            report.remap_causes[key] = key_map_cause
    stale = [k for k in key_map if k not in tensors]
    if stale:
        report.notes.append(KeyIssue(stale[0], key_map_cause, f"{len(stale)} key-map entries name keys the file "
                                     f"does not have (first: {stale[0]})"))
    if fix_prefix:
        current = [renamed.get(k, k) for k in tensors]
        fit = _fit_prefix(current, model_keys)
        if fit is not None:
            strip, add = fit
            changed = 0
            for key in tensors:
                cur = renamed.get(key, key)
                if strip and not cur.startswith(strip):
                    continue
                new = add + cur[len(strip):]
                if new != cur and (new in model_keys or cur not in model_keys):
                    renamed[key] = new
                    report.remap_causes.setdefault(key, "prefix")
                    changed += 1
            what = " and ".join(x for x in (f"removed {strip!r}" if strip else "", f"added {add!r}" if add else "") if x)
            report.notes.append(KeyIssue(strip or add, "prefix", f"{what} on {changed} keys to match the model"))
    report.remapped = dict(renamed)

    # 2. classify every file key.
    to_load: dict[str, torch.Tensor] = {}
    source_of: dict[str, str] = {}
    for key, tensor in tensors.items():
        target = renamed.get(key, key)
        if target in source_of:
            report.unexpected.append(KeyIssue(key, "not-in-model", f"renamed to {target}, which "
                                              f"{source_of[target]} already fills"))
            continue
        if target in model_keys:
            want = state[target]
            source_of[target] = key
            if tuple(tensor.shape) == tuple(want.shape):
                to_load[target] = tensor
            elif target in heads and tensor.ndim >= 1 and want.ndim >= 1 and tensor.shape[0] != want.shape[0]:
                report.mismatched.append(KeyIssue(
                    target, "classifier-head", f"file {_shape(tensor)} vs model {_shape(want)}",
                    harmless=head_change_expected))
            else:
                report.mismatched.append(KeyIssue(target, "shape", f"file {_shape(tensor)} vs model {_shape(want)}"))
            continue
        if is_ema_copy(key):
            report.unexpected.append(KeyIssue(key, "ema-copy", "EMA duplicate of the weights; ignored", True))
        elif is_auxiliary(target):
            report.unexpected.append(KeyIssue(key, "auxiliary-head",
                                              "training-only auxiliary head the model was built without; ignored",
                                              True))
        elif target.endswith(_COUNTER) or key.endswith(_COUNTER):
            report.unexpected.append(KeyIssue(key, "num_batches_tracked",
                                              "BatchNorm step counter the model does not keep; ignored", True))
        elif target in heads:
            report.unexpected.append(KeyIssue(key, "classifier-head", "the model was built without this head",
                                              head_change_expected))
        else:
            report.unexpected.append(KeyIssue(key, "not-in-model"))

    # 3. classify every model key nothing was copied to.
    loaded = set(to_load)
    mismatched = {i.key for i in report.mismatched}
    for key in state:
        if key in loaded or key in mismatched:
            continue
        if key.endswith(_COUNTER):
            report.missing.append(KeyIssue(key, "num_batches_tracked",
                                           "BatchNorm step counter; kept at 0 (unused in eval)", True))
            continue
        tied = _tied_to(key, state, loaded)
        if tied is not None:
            report.missing.append(KeyIssue(key, "tied-weights", f"shares storage with {tied}, which was loaded", True))
        elif key in heads:
            report.missing.append(KeyIssue(key, "classifier-head", "not in the file; fresh init",
                                           head_change_expected))
        elif is_auxiliary(key):
            report.missing.append(KeyIssue(key, "auxiliary-head",
                                           "training-only auxiliary head not in the file; fresh init", True))
        else:
            report.missing.append(KeyIssue(key, "not-in-file"))

    report.loaded = [k for k in state if k in loaded]
    report.reinitialized = [i.key for i in (*report.mismatched, *report.missing)
                            if i.cause not in ("num_batches_tracked", "tied-weights")]
    aligned = [k for k, c in report.remap_causes.items() if c == "renamed-by-alignment"]
    if aligned:
        report.alignment = f"{naming_convention(aligned)} → {naming_convention(report.remapped[k] for k in aligned)}"

    # 4. refuse or copy.
    if dry_run:
        return report
    if not to_load and state:
        raise _refusal(report, nothing=True)
    if strict and not partial and report.blocking:
        raise _refusal(report)
    result = model.load_state_dict(to_load, strict=False)  # assign=False: copy into the model's own tensors
    leftover = set(result.unexpected_keys)
    if leftover:  # a module's own _load_from_state_dict refused a key its state_dict lists: say so, never hide it
        report.loaded = [k for k in report.loaded if k not in leftover]
        report.unexpected += [KeyIssue(k, "not-in-model", "refused by the module's own loader") for k in sorted(leftover)]
    return report


def _refusal(report: LoadReport, *, nothing: bool = False) -> LoadError:
    if nothing:
        err = LoadError.build(
            f"weights do not fit {report.architecture}",
            received=f"a file of {report.file_tensors} tensors of which none matches the model by name and shape "
                     f"({report.problem_summary()})",
            expected="at least the backbone to match",
            hint="Run `pthkit identify FILE` and pass --arch NAME (or a --key-map).",
        )
    else:
        hint = "Use partial=True / --partial to load what fits (the rest re-initialized), or --arch to choose another architecture"
        if any(i.cause == "classifier-head" and not i.harmless for i in report.blocking):
            hint += ", or num_classes=N / --num-classes N for a new head"
        err = LoadError.build(
            f"weights do not fit {report.architecture}",
            received=f"{len(report.loaded)}/{report.model_tensors} tensors fit; {report.problem_summary()}",
            expected="every tensor to match by name and shape (strict load)",
            hint=hint + ".",
        )
    err.report = report  # type: ignore[attr-defined]  # the CLI prints it before the one-line error
    return err
