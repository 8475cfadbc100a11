"""Match a file's tensors to one architecture's signature: by name, then by ordered shapes and module structure.

No library aligns two ``state_dict``s written in different naming conventions, so this is written by hand. Both sides
are in registration order (``state_dict`` order), so a file in another convention (lukemelas' ``_blocks.N._bn0``
against timm's ``blocks.N.M.bn1``) lines up once each key is reduced to ``(last name component, shape)``; difflib's
SequenceMatcher finds that alignment, and a module-level one-to-one check rejects pairs that only match by accident.
"""

from __future__ import annotations

import difflib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pthkit.architectures.signatures import NBT, Signature, infer_img_size

__all__ = ["Match", "match_signature", "strip_prefix"]

Shape = tuple[int, ...]


@dataclass
class Match:
    """The result of matching one file against one signature."""

    pairs: dict[str, str]                       # original file key -> model key (accepted, core tensors + counters)
    by_name: int
    by_shape: int
    file_n: int                                 # file tensors counted (BN counters and duplicate copies excluded)
    model_n: int                                # model tensors counted (BN counters excluded; head when absent)
    matched: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    head: tuple[str, ...] = ()
    differences: list[str] = field(default_factory=list)
    unexplained_file: list[str] = field(default_factory=list)
    unexplained_model: list[str] = field(default_factory=list)
    prefix: str = ""

    @property
    def score(self) -> float:
        return self.matched / max(self.file_n, self.model_n, 1)

    @property
    def containment(self) -> float:
        """Share of the model found in the file (a backbone inside a detector scores high here, low in ``score``)."""
        return self.matched / max(self.model_n, 1)

    @property
    def complete(self) -> bool:
        return not self.unexplained_file and not self.unexplained_model and self.matched > 0


def _module(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else ""


def _last(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def strip_prefix(file_keys: list[str], model_keys: set[str]) -> str:
    """The prefix (``module.``, ``backbone.body.``) whose removal makes the most file keys model keys; '' if none."""
    counts: Counter = Counter()
    for key in file_keys:
        if key in model_keys:
            counts[""] += 1
            continue
        start = 0
        while True:
            dot = key.find(".", start)
            if dot < 0:
                break
            if key[dot + 1:] in model_keys:
                counts[key[: dot + 1]] += 1
                break
            start = dot + 1
    if not counts:
        return ""
    prefix, n = counts.most_common(1)[0]
    return prefix if prefix and n > counts.get("", 0) else ""


def _align(file_seq: list[tuple[str, Shape]], model_seq: list[tuple[str, Shape]]) -> list[tuple[str, str, bool]]:
    """Pairs (file key, model key, same_shape) from aligning (last component, shape) tokens in order."""
    ta = [(_last(k), s) for k, s in file_seq]
    tb = [(_last(k), s) for k, s in model_seq]
    if ta == tb:  # the common case (a pure rename): zip, no search needed
        return [(a[0], b[0], True) for a, b in zip(file_seq, model_seq)]
    out: list[tuple[str, str, bool]] = []
    matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            out += [(file_seq[i][0], model_seq[j][0], True) for i, j in zip(range(i1, i2), range(j1, j2))]
        elif tag == "replace" and i2 - i1 == j2 - j1:
            # Same length: pair equal shapes (a renamed top-level parameter such as cls_token) and same-named
            # parameters of another shape (a resized head/stem, checked by the caller).
            for i, j in zip(range(i1, i2), range(j1, j2)):
                if ta[i][1] == tb[j][1]:
                    out.append((file_seq[i][0], model_seq[j][0], True))
                elif ta[i][0] == tb[j][0] and len(ta[i][1]) == len(tb[j][1]):
                    out.append((file_seq[i][0], model_seq[j][0], False))
    return out


def _verify_topology(pairs: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """Keep pairs whose modules map one-to-one (every tensor of a file module goes to the same model module)."""
    votes: Counter = Counter((_module(a), _module(b)) for a, b, _ in pairs)
    best_for_file: dict[str, tuple[int, str]] = {}
    best_for_model: dict[str, tuple[int, str]] = {}
    for (fm, mm), n in votes.items():
        if n > best_for_file.get(fm, (0, ""))[0]:
            best_for_file[fm] = (n, mm)
        if n > best_for_model.get(mm, (0, ""))[0]:
            best_for_model[mm] = (n, fm)
    return [
        (a, b, same) for a, b, same in pairs
        if best_for_file[_module(a)][1] == _module(b) and best_for_model[_module(b)][1] == _module(a)
    ]


def _only_dim_differs(a: Shape, b: Shape, dim: int) -> bool:
    return len(a) == len(b) and len(a) > dim and all(x == y for i, (x, y) in enumerate(zip(a, b)) if i != dim)


def _classifier_modules(sig: Signature) -> tuple[str, ...]:
    """Where a timm model's classifier lives even when its default has none (num_classes=0 models)."""
    if not sig.name.startswith("timm:"):
        return ()
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(sig.name.split(":", 1)[1])
    except Exception:  # unknown to timm's registry: nothing to add
        return ()
    classifier = getattr(cfg, "classifier", None)
    if not classifier:
        return ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def match_signature(file_items: list[tuple[str, Shape]], sig: Signature) -> Match:
    """Match ``file_items`` (ordered ``(key, shape)``) against ``sig``; see the module docstring."""
    model_shape = dict(zip(sig.keys, sig.shapes))
    model_keys = set(model_shape)
    prefix = strip_prefix([k for k, _ in file_items], model_keys)
    differences: list[str] = []

    # 1. Working names: prefix removed; a second copy of the same names (an EMA copy under another prefix) is dropped.
    work: dict[str, tuple[str, Shape]] = {}  # working key -> (original key, shape)
    copies: list[str] = []
    for key, shape in file_items:
        wk = key[len(prefix):] if prefix and key.startswith(prefix) else key
        if wk in work:
            copies.append(key)
            continue
        work[wk] = (key, shape)
    if not prefix:  # keys such as "ema.conv1.weight" next to "conv1.weight": a copy, not extra layers
        for wk in list(work):
            dot = wk.find(".")
            if dot > 0 and wk not in model_keys and wk[dot + 1:] in work and wk[dot + 1:] in model_keys:
                copies.append(work.pop(wk)[0])
    if copies:
        differences.append(f"{len(copies)} tensors are a second copy of the weights (EMA?) and were ignored, "
                           f"e.g. {copies[0]}")

    file_core = [(wk, s) for wk, (_, s) in work.items() if not wk.endswith(NBT)]
    model_core = [(k, s) for k, s in zip(sig.keys, sig.shapes) if not k.endswith(NBT)]

    # 2. By name.
    pairs: list[tuple[str, str, bool]] = []
    for wk, shape in file_core:
        if wk in model_shape and not wk.endswith(NBT):
            pairs.append((wk, wk, model_shape[wk] == shape))
    named = {a for a, _, _ in pairs}
    taken = {b for _, b, _ in pairs}

    # 3. By ordered shapes for what names did not explain, checked by module structure.
    rest_file = [(k, s) for k, s in file_core if k not in named]
    rest_model = [(k, s) for k, s in model_core if k not in taken]
    if rest_file and rest_model:
        aligned = _verify_topology(_align(rest_file, rest_model))
        pairs += aligned

    # 4. Shape differences that constructor arguments explain: head size, input channels, image size.
    file_shape = {wk: s for wk, s in file_core}
    head = set(sig.head)
    kwargs: dict[str, Any] = {}
    accepted: list[tuple[str, str]] = []
    head_outs: set[int] = set()
    for a, b, same in pairs:
        fs, ms = file_shape[a], model_shape[b]
        if same or fs == ms:
            accepted.append((a, b))
        elif b in head and _only_dim_differs(fs, ms, 0):
            head_outs.add(fs[0])
            accepted.append((a, b))
        elif b == sig.stem and _only_dim_differs(fs, ms, 1):
            kwargs["in_chans"] = fs[1]
            accepted.append((a, b))
        elif b == sig.pos_embed and _only_dim_differs(fs, ms, 1) and infer_img_size(sig, fs[1]):
            kwargs["img_size"] = infer_img_size(sig, fs[1])
            accepted.append((a, b))
        else:
            differences.append(f"shape of {work[a][0]}: file {list(fs)} vs model {b} {list(ms)}")
    if len(head_outs) > 1:  # the head keys disagree: not a clean resize
        bad = {b for _, b in accepted if b in head}
        accepted = [(a, b) for a, b in accepted if b not in bad]
        differences.append(f"classifier head tensors disagree on the number of classes: {sorted(head_outs)}")
        head_outs = set()

    model_n = len(model_core)
    head_keys = tuple(sig.head)
    if not sig.head:
        # A model built without classifier (num_classes=0 by default): a file with one means num_classes=N.
        modules = _classifier_modules(sig)
        taken_file = {a for a, _ in accepted}
        extra = [(k, s) for k, s in file_core if k not in taken_file and _module(k) in modules]
        outs = {s[0] for k, s in extra if k.endswith(("weight", "bias")) and s}
        if extra and len(outs) == 1:
            kwargs["num_classes"] = outs.pop()
            accepted += [(k, k) for k, _ in extra]
            model_n += len(extra)
            head_keys = tuple(k for k, _ in extra)
            differences.append(f"classifier head with {kwargs['num_classes']} outputs (model default: none)")
        elif modules and not extra:
            kwargs["num_classes"] = 0  # say it: no head in the file, none in the model (its default)
    matched_model = {b for _, b in accepted}
    head_in_file = bool(head & matched_model)
    if sig.head:
        if head_outs:
            kwargs["num_classes"] = head_outs.pop()
        elif head_in_file:
            kwargs["num_classes"] = sig.num_classes
        else:
            head_n = sum(1 for k in sig.head if not k.endswith(NBT))
            if len(accepted) >= 0.9 * max(model_n - head_n, 1):
                # Everything but the classifier fits: a feature extractor, or saved with num_classes=0.
                model_n -= head_n
                kwargs["num_classes"] = 0
                differences.append("no classifier head in the file (num_classes=0)")
    if "num_classes" in kwargs and sig.num_classes is not None and kwargs["num_classes"] not in (0, sig.num_classes):
        differences.append(f"classifier head has {kwargs['num_classes']} outputs (model default {sig.num_classes})")
    if "in_chans" in kwargs:
        differences.append(f"stem takes {kwargs['in_chans']} input channels (model default {sig.in_chans})")
    if "img_size" in kwargs:
        differences.append(f"position embedding fits img_size={kwargs['img_size']} (model default {sig.img_size})")

    # 5. BN counters follow their module.
    module_map = {_module(a): _module(b) for a, b in accepted}
    result_pairs = {work[a][0]: b for a, b in accepted}
    file_nbt = [wk for wk in work if wk.endswith(NBT)]
    model_nbt = {k for k in sig.keys if k.endswith(NBT)}
    for wk in file_nbt:
        target = f"{module_map.get(_module(wk), '')}.{NBT}" if module_map.get(_module(wk)) else wk
        if target in model_nbt:
            result_pairs[work[wk][0]] = target
    if len(file_nbt) != len(model_nbt):
        differences.append(f"BN num_batches_tracked: file has {len(file_nbt)}, model {len(model_nbt)} (ignored)")

    matched_file = {a for a, _ in accepted}
    unexplained_file = [work[k][0] for k, _ in file_core if k not in matched_file]
    head_dropped = kwargs.get("num_classes") == 0
    unexplained_model = [k for k, _ in model_core if k not in matched_model and not (k in head and head_dropped)]
    renamed = sum(1 for a, b in accepted if a != b)
    by_name = len(accepted) - renamed
    if renamed:
        differences.insert(0, f"{renamed} tensors have other names; matched by ordered shapes and module structure")
    if unexplained_file:
        differences.append(f"{len(unexplained_file)} file tensors not in the model, e.g. "
                           + ", ".join(unexplained_file[:3]))
    if unexplained_model:
        differences.append(f"{len(unexplained_model)} model tensors not in the file, e.g. "
                           + ", ".join(unexplained_model[:3]))
    return Match(
        pairs=result_pairs, by_name=by_name, by_shape=renamed, file_n=len(file_core), model_n=model_n,
        matched=len(accepted), kwargs=kwargs, head=head_keys, differences=differences,
        unexplained_file=unexplained_file, unexplained_model=unexplained_model, prefix=prefix,
    )
