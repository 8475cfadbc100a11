"""``identify``: which architecture produced these tensors?

Two stages: a fast pre-filter over the whole index (multiset of tensor shapes, no names), then a precise match
(:mod:`pthkit.architectures.align`) for the best groups. Architectures whose signatures differ only in head size are
one group: matched once, reported together as ``equivalent``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping
from typing import Any

from pthkit.architectures.align import Match, match_signature
from pthkit.architectures.index import SignatureIndex, get_index, shape_counter
from pthkit.architectures.registry import REGISTRY, user_architecture
from pthkit.architectures.signatures import NBT, Signature, compute_signature
from pthkit.architectures.twins import (
    decide_twins,
    exact_twin_choice,
    function_classes,
    functional_differences,
    trained_statistics,
)
from pthkit.architectures.types import Candidate, IdentifyResult, PartialMatch, TwinDecision
from pthkit.architectures.user_code import is_user_spec
from pthkit.errors import IdentificationError

__all__ = ["identify", "file_items"]

REFINE_GROUPS = 12      # precise matching for this many signature groups, best pre-filter score first
PARTIAL_GROUPS = 6      # and this many "contained in the file" groups (backbones of detectors)
PARTIAL_MIN = 0.8       # share of a model's tensors a file must contain to report it as a partial match


def file_items(tensors: Any) -> list[tuple[str, tuple[int, ...]]]:
    """Ordered ``(key, shape)`` from a state dict, a :class:`Checkpoint`, or a mapping of key -> shape."""
    if hasattr(tensors, "tensors") and isinstance(tensors.tensors, Mapping):
        tensors = tensors.tensors
    if not isinstance(tensors, Mapping):
        raise IdentificationError.build(
            "identify", received=type(tensors).__name__, expected="a dict of name -> tensor (or a Checkpoint)",
            hint="Read the file first: pthkit.read_checkpoint(path).tensors.",
        )
    items = []
    for key, value in tensors.items():
        shape = getattr(value, "shape", value)
        try:
            items.append((str(key), tuple(int(d) for d in shape)))  # type: ignore[union-attr]  # None: TypeError
        except (TypeError, ValueError):
            continue  # not a tensor (a stray int/str entry): not weights
    return items


def _signatures_for(include: Iterable[str], index: SignatureIndex | None = None) -> tuple[SignatureIndex, list[str]]:
    """Signatures for the ``include`` list (names, globs, user specs), computed on demand, from the cache if there."""
    index = index if index is not None else get_index(build=False)
    names: list[str] = []
    for entry in include:
        if is_user_spec(entry) and not REGISTRY.list(entry):
            sig = compute_signature(user_architecture(entry))
            index.add(sig)
            names.append(sig.name)
        elif any(ch in entry for ch in "*?["):
            names += REGISTRY.list(entry)
        else:
            names.append(REGISTRY.resolve_name(entry))
    names = list(dict.fromkeys(names))
    for name in names:
        if name not in index.signatures:
            try:
                index.add(compute_signature(REGISTRY.get(name)))
            except Exception as exc:  # recorded like the full build does; identify goes on with the others
                index.failures[name] = f"{type(exc).__name__}: {exc}"
    return index, [n for n in names if n in index.signatures]


def _prefilter(items: list[tuple[str, tuple[int, ...]]], index: SignatureIndex, names: list[str] | None):
    counters = index.counters()
    fc = shape_counter([k for k, _ in items], [s for _, s in items])
    nf = sum(fc.values())
    scores: list[tuple[float, float, str]] = []
    for name in names if names is not None else counters:
        ac = counters.get(name)
        if ac is None:
            continue
        na = sum(ac.values())
        small, big = (fc, ac) if len(fc) < len(ac) else (ac, fc)
        overlap = sum(min(n, big.get(s, 0)) for s, n in small.items())
        scores.append((overlap / max(nf, na, 1), overlap / max(na, 1), name))
    return scores


def _preference(name: str) -> tuple:
    """Which member of an equivalence group is named first: plain names before tf_/variants, timm before tv."""
    short = name.split(":", 1)[-1]
    return (short.startswith("tf_"), len(short), not name.startswith("timm:"), name)


def _body_shapes(sig: Signature) -> tuple:
    head = set(sig.head)
    return tuple(s for k, s in zip(sig.keys, sig.shapes) if k not in head and not k.endswith(NBT))


def _adjustments(m: Match, sig: Signature) -> int:
    """How many constructor arguments must change from the architecture's defaults to fit the file."""
    defaults = {"num_classes": sig.num_classes or 0, "in_chans": sig.in_chans, "img_size": sig.img_size}
    return sum(1 for k, v in m.kwargs.items() if defaults.get(k) != v)


def _reported_kwargs(name: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The inferred constructor arguments; for user code (``file.py:Class``) only those the class takes, so a class
    without a ``num_classes`` parameter is never reported (or built) with one."""
    if not kwargs or not is_user_spec(name):
        return dict(kwargs)
    import inspect

    try:
        params = inspect.signature(user_architecture(name).builder).parameters.values()
    except (TypeError, ValueError, LookupError):
        return dict(kwargs)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(kwargs)
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in kwargs.items() if k in names}


def _confidence(m: Match) -> str:
    if m.complete and not any(d.startswith("shape of") for d in m.differences):
        return "high"
    return "medium" if m.score >= 0.9 else "low"


def _tensor_values(tensors: Any) -> dict[str, Any] | None:
    """The name -> tensor mapping when ``tensors`` holds real values (not shapes, not meta tensors)."""
    import torch

    if hasattr(tensors, "tensors") and isinstance(tensors.tensors, Mapping):
        tensors = tensors.tensors
    if not isinstance(tensors, Mapping):
        return None
    values = {str(k): v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    if not values or any(v.is_meta for v in values.values()):
        return None
    return values


def _as_twin(best: Candidate, name: str, items: list[tuple[str, tuple[int, ...]]], index: SignatureIndex) -> Candidate:
    """``best``'s evidence, for its twin ``name`` (re-matched when the twin names its tensors differently)."""
    others = [n for n in [best.architecture, *best.equivalent] if n != name]
    if name == best.architecture:
        return best
    sig, base = index.signatures.get(name), index.signatures.get(best.architecture)
    if sig is not None and base is not None and sig.keys != base.keys:
        m = match_signature(items, sig)
        return dataclasses.replace(
            best, architecture=name, equivalent=others, key_map={k: v for k, v in m.pairs.items() if k != v},
            head=m.head, kwargs=dict(m.kwargs), matched_by_name=m.by_name, matched_by_shape=m.by_shape,
            differences=list(m.differences))
    return dataclasses.replace(best, architecture=name, equivalent=others)


def _recipes(names: list[str], index: SignatureIndex) -> dict[str, dict[str, Any]]:
    out = {}
    for name in names:
        sig = index.signatures.get(name)
        cfg = dict(sig.cfg) if sig is not None else {}
        if not cfg and name.startswith("torchvision:"):
            cfg = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "interpolation": "bilinear",
                   "crop_pct": 0.875, "input_size": [3, 224, 224], "note": "torchvision's ImageNet recipe"}
        out[name] = cfg
    return out


def _settle_twins(best: Candidate, tensors: Any, items: list[tuple[str, tuple[int, ...]]],
                  index: SignatureIndex) -> tuple[Candidate, bool, str]:
    """Choose among ``best`` and its twins (``best.equivalent``): by function, then by a stated rule for exact twins.

    Twins are split into classes that compute the same function; the batch-norm fit test chooses a class (one
    representative each), and the exact-twin rule chooses within it. Returns the chosen candidate (its
    ``twin_decision`` set), whether it is confident, and the message.
    """
    names = [best.architecture, *best.equivalent]
    diffs = functional_differences(names, best.kwargs)
    classes = function_classes(names, best.kwargs)
    values = _tensor_values(tensors)
    trained = values is not None and trained_statistics(values)[0]
    shown = " and ".join(names) if len(names) <= 3 else f"{names[0]} and {len(names) - 1} others"
    if len(classes) == 1:
        decision = TwinDecision(twins=names, differences=diffs, exact=True, recipes=_recipes(names, index))
    elif values is None:
        decision = TwinDecision(twins=names, differences=diffs, recipes=_recipes(names, index),
                                reason="only tensor shapes were given: what the weights compute cannot be tested")
    else:
        reps = [members[0] for members in classes]
        rep_best = best if best.architecture in reps else _as_twin(best, reps[0], items, index)
        decision = decide_twins(values, rep_best, reps, index=index, differences=diffs)
        decision.twins, decision.recipes = names, _recipes(names, index)
    if not decision.exact and not (decision.confident and decision.chosen):
        best.twin_decision = decision
        fits = f" (batch-norm fit: {decision.fit_table()})" if decision.fits else ""
        message = (f"ambiguous: {shown} have the same tensors but differ in function ({decision.how_they_differ}); "
                   f"not decided: {decision.reason}{fits}; pass {decision.arch_flags()}")
        return best, False, message

    # One class of same-function twins is left: the chosen one's, or all of them (exact twins).
    members = next(m for m in classes if decision.exact or decision.chosen in m)
    chosen, rule = members[0], ""
    if len(members) > 1:
        normalization = decision.normalization
        if normalization is None and trained and values is not None:
            normalization = _first_layer_normalization(best, values)
            decision.normalization = normalization
        chosen, rule = exact_twin_choice(_as_twin(best, members[0], items, index), members,
                                         [k for k, _ in items], index, normalization)
        decision.rule = rule
    decision.chosen, decision.confident = chosen, True
    cand = _as_twin(best, chosen, items, index)
    cand.twin_decision = decision
    exact_note = ""
    if len(members) > 1:
        recipes = "; ".join(f"{n}: " + ", ".join(f"{k} {v}" for k, v in decision.recipes.get(n, {}).items()
                                                  if k != "note") for n in members)
        exact_note = (f"exact twins {', '.join(members)} compute the same function, only their default "
                      f"preprocessing differs ({recipes}); chose {chosen} because {rule}")
    if decision.exact:
        decision.reason = f"exact twins: {rule}"
        return cand, True, f"identified as {chosen}; {exact_note}"
    others = ", ".join(n for n in names if n != chosen)
    message = (f"identified as {chosen} by function: {decision.reason} (mean symmetric KL of the batch-norm "
               f"statistics, {decision.normalization_label}); twins with the same tensors: {others}; they differ "
               f"in {decision.how_they_differ}")
    if exact_note:
        message += "; " + exact_note
    return cand, True, message


def _first_layer_normalization(best: Candidate, values: Mapping[str, Any]) -> str | None:
    """The normalization family the first batch-norm layer's statistics fit (exact twins share it)."""
    from pthkit.architectures.twins import FIT_CROPS, FIT_SIZE, _load_twin
    from pthkit.preprocess.infer import calibration_batch, infer_normalization

    try:
        model = _load_twin(best.architecture, best.kwargs, values, best.key_map)
        guess = infer_normalization(model, images=calibration_batch(FIT_SIZE, FIT_CROPS))
    except Exception:  # noqa: BLE001 - the rule then falls through to naming / library; said in the message
        return None
    return guess.candidate.name if guess.confident and guess.candidate is not None else None


def identify(
    tensors: Any, *, top: int = 5, include: list[str] | None = None, index: SignatureIndex | None = None,
    progress: bool = True, decide_twins: bool = True,
) -> IdentifyResult:
    """Rank architectures by how well ``tensors`` fit them; see :class:`IdentifyResult` for what comes back.

    ``include`` restricts the search to registered names, fnmatch globs (``"timm:resnet*"``) or the user's own
    code (``"path/file.py:MyNet"``: does this file fit my class, and where not?). Without it, the full index is
    used (built once and cached, see :mod:`pthkit.architectures.index`).

    Twins (architectures the tensors fit equally well, see :mod:`pthkit.architectures.twins`): when they compute
    different functions, the file's batch-norm statistics decide (``tensors`` must hold values; shapes alone are
    never confident); when they compute the same function, a stated rule picks one. ``decide_twins=False`` skips
    this and reports twins as not confident. The evidence is ``result.twin_decision``.
    """
    start = time.perf_counter()
    items = file_items(tensors)
    if not items:
        raise IdentificationError.build(
            "identify", received="no tensors", expected="a state dict with at least one tensor",
            hint="Check the file with 'pthkit inspect'.",
        )
    if include:
        index, names = _signatures_for(include, index)
        pool: list[str] | None = names
    else:
        index = index or get_index(progress=progress)
        pool = None
    pre = _prefilter(items, index, pool)

    # One representative per group of architectures identical apart from head size.
    best_by_group: dict[str, tuple[float, float, str]] = {}
    in_pool = set(pool) if pool is not None else None
    for entry in pre:
        group = tuple(sorted(index.group_of(entry[2])))
        if in_pool is not None:
            group = tuple(n for n in group if n in in_pool)
        key = group[0] if group else entry[2]
        if key not in best_by_group or _preference(entry[2]) < _preference(best_by_group[key][2]):
            best_by_group[key] = entry
    groups = list(best_by_group.values())
    chosen = {e[2] for e in sorted(groups, reverse=True)[:REFINE_GROUPS]}
    chosen |= {e[2] for e in sorted(groups, key=lambda e: (e[1], e[0]), reverse=True)[:PARTIAL_GROUPS]
               if e[1] >= PARTIAL_MIN}

    matches: list[tuple[str, Match]] = [(n, match_signature(items, index.signatures[n])) for n in chosen]
    # Each group is named by the member needing the fewest constructor changes (the file has no head: the member
    # built without one), then the plainest name.
    members: dict[str, list[str]] = {}
    adjust: dict[str, int] = {}
    for name, m in matches:
        pool_group = [n for n in index.group_of(name) if in_pool is None or n in in_pool]
        ordered = sorted(set(pool_group) | {name}, key=lambda n: (_adjustments(m, index.signatures[n]), _preference(n)))
        members[name] = ordered
        adjust[ordered[0]] = _adjustments(m, index.signatures[ordered[0]])
    # Ties: more tensors matched by name, fewer constructor changes (a 224 ViT also fits the 384 one with img_size).
    matches.sort(key=lambda nm: (nm[1].score, nm[1].by_name, -adjust[members[nm[0]][0]],
                                 -abs(nm[1].model_n - nm[1].file_n)), reverse=True)

    candidates: list[Candidate] = []
    for name, m in matches:
        ordered = members[name]
        key_map = {k: v for k, v in m.pairs.items() if k != v}
        candidates.append(Candidate(
            architecture=ordered[0], score=m.score, confidence=_confidence(m),  # type: ignore[arg-type]
            matched_by_name=m.by_name, matched_by_shape=m.by_shape, file_tensors=m.file_n, model_tensors=m.model_n,
            kwargs=_reported_kwargs(ordered[0], m.kwargs), key_map=key_map, head=m.head,
            differences=list(m.differences), equivalent=ordered[1:],
        ))

    best = candidates[0] if candidates else None
    partial: list[PartialMatch] = []
    for (_name, m), cand in zip(matches, candidates):
        if m.containment < PARTIAL_MIN or m.model_n > 0.9 * m.file_n:
            continue
        partial.append(PartialMatch(cand.architecture, m.matched, m.model_n, m.file_n, m.prefix))
    partial.sort(key=lambda p: (p.matched / max(p.model_tensors, 1), p.matched), reverse=True)

    shapes = {c.architecture: _body_shapes(index.signatures[n]) for (n, _), c in zip(matches, candidates)}
    rivals: list[Candidate] = []
    if best is not None:
        for cand in candidates[1:]:
            if (cand.confidence != "high" or cand.score < best.score - 0.01
                    or adjust[cand.architecture] > adjust[best.architecture]
                    or cand.matched_by_name < best.matched_by_name):
                continue  # weaker evidence: fewer names, or more constructor changes needed
            if cand.score == best.score and shapes[cand.architecture] == shapes[best.architecture]:
                # Same shapes in the same order under other names (torchvision vs timm efficientnet_b0 read from a
                # renamed file): the file cannot tell them apart and loads into either through its key map.
                best.equivalent += [cand.architecture, *cand.equivalent]
                continue
            rivals.append(cand)
        candidates = [c for c in candidates if c is best or c.architecture not in best.equivalent]
    confident = bool(best and best.confidence == "high" and not rivals)
    twin_message = ""
    if best is not None and confident and best.equivalent:
        if decide_twins:
            settled, confident, twin_message = _settle_twins(best, tensors, items, index)
        else:
            settled, confident = best, False
            twin_message = (f"ambiguous: {', '.join([best.architecture, *best.equivalent])} have the same tensors "
                            "(twins not decided: decide_twins=False)")
        candidates = [settled if c is best else c for c in candidates]
        best = settled
    if twin_message:
        message = twin_message
    elif best is None:
        message = "no confident match: no architecture to compare with"
    elif not confident:
        message = (f"no confident match; nearest: {best.architecture} (score {best.score:.2f}, "
                   f"{best.matched_by_name + best.matched_by_shape} of {max(best.file_tensors, best.model_tensors)} "
                   "tensors)")
        if rivals:
            message = f"no confident match: {best.architecture} and {rivals[0].architecture} fit equally well"
    else:
        how = "by name" if not best.matched_by_shape else "by name and aligned shapes"
        message = f"identified as {best.architecture} ({best.file_tensors} tensors match {how})"
    if confident:
        partial = []  # the whole file is explained: smaller architectures inside it are not news
    elif partial:
        message += "; " + partial[0].message
    return IdentifyResult(
        candidates=candidates[: max(top, 1)], confident=confident, message=message, partial=partial[:3],
        elapsed_s=time.perf_counter() - start,
    )
