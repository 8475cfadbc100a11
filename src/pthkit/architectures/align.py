"""Match a file's tensors to one architecture's signature: by name, then by module-tree structure and shapes.

No library aligns two ``state_dict``s written in different naming conventions, so this is written by hand. Key order
is never used: Hugging Face ``model.safetensors`` stores keys sorted alphabetically (``_blocks.10`` before
``_blocks.2``), so a file in another convention (lukemelas' ``_blocks.N._bn0`` against timm's ``blocks.N.M.bn1``) is
matched as a module tree: submodules pair recursively by their multisets of ``(parameter name, shape)``, numbered
siblings by their numbers. The same file gives the same pairs in any key order.
"""

from __future__ import annotations

import functools
import heapq
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pthkit.architectures.signatures import NBT, Signature, infer_img_size

__all__ = ["Match", "match_signature", "natural_key", "strip_prefix"]

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
    prefix, n = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))  # ties: the shortest-sorting prefix, any order
    return prefix if prefix and n > counts.get("", 0) else ""


@functools.lru_cache(maxsize=65536)
def natural_key(path: str) -> tuple:
    """Sort key that orders numbers by value: ``_blocks.2`` before ``_blocks.10``, ``layer1_0`` before ``layer1_1``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in _DIGITS.split(path) if p)


_DIGITS = re.compile(r"(\d+)")


def _tree_path(module: str) -> str:
    """A module path with flattened numbered levels restored: ``features_6_conv_3`` -> ``features.6.conv.3``.

    Files saved with dots replaced by underscores lose their tree; a purely numeric ``_``-separated token marks a
    level again, so identical blocks stay apart (``layer1_0_conv1`` -> ``layer1.0.conv1``; ``conv_stem`` unchanged).
    """
    if "_" not in module:
        return module
    out = []
    for part in module.split("."):
        tokens = part.split("_")
        if len(tokens) < 2 or not any(t.isdigit() for t in tokens):
            out.append(part)
            continue
        level: list[str] = []
        for tok in tokens:
            if tok.isdigit():
                if level:
                    out.append("_".join(level))
                    level = []
                out.append(tok)
            else:
                level.append(tok)
        if level:
            out.append("_".join(level))
    return ".".join(out)


class _Tree:
    """One side's keys as a module tree: each node's own parameters form one atomic unit; children are sub-nodes.

    ``content(entry)`` is the multiset of ``(parameter name, shape)`` tokens under an entry, as a sorted tuple of token
    ids (interned in ``tokens``, shared by both sides), so equal content compares equal across naming conventions.
    """

    def __init__(self, items: list[tuple[str, Shape]], tokens: dict[tuple[str, Shape], int]) -> None:
        self.own: dict[str, list[tuple[str, int]]] = {}       # module path -> [(key, token id)] of its own params
        self.children: dict[str, set[str]] = {"": set()}
        for key, shape in items:
            module = _tree_path(_module(key))
            tid = tokens.setdefault((_last(key), shape), len(tokens))
            self.own.setdefault(module, []).append((key, tid))
            node = module
            while node:
                parent = _module(node)
                self.children.setdefault(parent, set()).add(node)
                self.children.setdefault(node, set())
                node = parent
        self._content: dict[tuple[str, str], tuple[int, ...]] = {}

    def content(self, entry: tuple[str, str]) -> tuple[int, ...]:
        got = self._content.get(entry)
        if got is None:
            kind, path = entry
            if kind == "u":
                got = tuple(sorted(t for _, t in self.own.get(path, [])))
            else:
                parts: list[int] = []
                for sub in self.expand(entry):
                    parts += self.content(sub)
                got = tuple(sorted(parts))
            self._content[entry] = got
        return got

    def expand(self, entry: tuple[str, str]) -> list[tuple[str, str]]:
        kind, path = entry
        if kind == "u":
            return [entry]
        out = [("u", path)] if self.own.get(path) else []
        return out + [("n", c) for c in sorted(self.children.get(path, ()), key=natural_key)]


def _norm(path: str) -> str:
    return _SEPARATORS.sub("_", path).lower()


_SEPARATORS = re.compile(r"[._\-]+")


def _pair_group(
    fs: list[tuple[str, str]], ms: list[tuple[str, str]],
) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Pair entries of equal content: the same path up to separators first (``a_b.1`` = ``a.b.1``), then the rest
    in natural order on both sides."""
    out = []
    by_norm: dict[str, list[tuple[str, str]]] = {}
    for m in sorted(ms, key=lambda e: natural_key(e[1])):
        by_norm.setdefault(_norm(m[1]), []).append(m)
    rest_f = []
    for f in sorted(fs, key=lambda e: natural_key(e[1])):
        same = by_norm.get(_norm(f[1]))
        if same:
            out.append((f, same.pop(0)))
        else:
            rest_f.append(f)
    taken = {m for _, m in out}
    rest_m = [m for m in sorted(ms, key=lambda e: natural_key(e[1])) if m not in taken]
    return out + list(zip(rest_f, rest_m))


def _numbered(entries: list[tuple[str, str]]) -> bool:
    """True when the entries' paths differ only in their numbers (``blocks.1``/``blocks.2``, ``bn1``/``bn2``)."""
    return len({_DIGITS.sub("#", path) for _, path in entries}) == 1


def _contains(big: tuple[int, ...], small: tuple[int, ...]) -> bool:
    """Whether multiset ``small`` is inside multiset ``big`` (both sorted tuples of token ids)."""
    if len(small) > len(big) or not set(small) <= _token_set(big):
        return False
    have = _counts(big)
    return all(have.get(t, 0) >= n for t, n in _counts(small).items())


@functools.lru_cache(maxsize=8192)
def _token_set(content: tuple[int, ...]) -> frozenset[int]:
    return frozenset(content)


@functools.lru_cache(maxsize=8192)
def _counts(content: tuple[int, ...]) -> dict[int, int]:
    return dict(Counter(content))


def _tree_pairs(
    file_items: list[tuple[str, Shape]], model_items: list[tuple[str, Shape]],
) -> tuple[list[tuple[str, str, bool]], int]:
    """Pair file keys with model keys by module-tree structure; the result does not depend on either key order.

    Submodules are matched recursively by their multisets of ``(parameter name, shape)``: at each matched pair of
    modules, children with equal content are paired; a child that matches nothing is replaced by its own children
    (largest first), so different nesting (``se.conv_reduce`` vs ``_se_reduce``) still lines up. Children with equal
    content (identical blocks, two BNs of the same width) are paired in natural name order on both sides (numbers by
    value: ``_blocks.2`` before ``_blocks.10``), and only once no unexpanded module could hold another of them.
    Leftover modules pair when their parameter names and ranks are unique among the leftovers (a resized head or stem),
    and leftover tensors when their exact shape is. Returns ``(pairs, tie_groups)``: ``(file key, model key,
    same shape)`` and how many groups of identical modules were paired by name order.
    """
    tokens: dict[tuple[str, Shape], int] = {}
    ft, mt = _Tree(file_items, tokens), _Tree(model_items, tokens)
    shape_of = {**{("f", k): s for k, s in file_items}, **{("m", k): s for k, s in model_items}}
    pairs: list[tuple[str, str, bool]] = []
    left_f: list[tuple[str, str]] = []
    left_m: list[tuple[str, str]] = []
    ties = 0

    def pair_units(fu: str, mu: str) -> None:
        fown = {_last(k): k for k, _ in ft.own.get(fu, [])}
        mown = {_last(k): k for k, _ in mt.own.get(mu, [])}
        for name in sorted(set(fown) & set(mown)):
            a, b = fown[name], mown[name]
            pairs.append((a, b, shape_of[("f", a)] == shape_of[("m", b)]))

    cids: dict[tuple[int, ...], int] = {}       # content -> small int, so pools group without rehashing tuples
    contents: list[tuple[int, ...]] = []

    def cid(tree: _Tree, entry: tuple[str, str]) -> int:
        content = tree.content(entry)
        got = cids.get(content)
        if got is None:
            got = cids[content] = len(contents)
            contents.append(content)
        return got

    def solve(fpool: list[tuple[str, str]], mpool: list[tuple[str, str]]) -> None:
        nonlocal ties
        trees = (ft, mt)
        groups: tuple[dict[int, list[tuple[str, str]]], dict[int, list[tuple[str, str]]]] = ({}, {})
        opened: dict[tuple[int, tuple[str, str]], int] = {}   # unopened modules in the pools -> content id
        heap: list[tuple[int, int, tuple, tuple[str, str]]] = []

        def add(side: int, entry: tuple[str, str]) -> None:
            c = cid(trees[side], entry)
            groups[side].setdefault(c, []).append(entry)
            if entry[0] == "n":
                opened[(side, entry)] = c
                heapq.heappush(heap, (-len(contents[c]), side, natural_key(entry[1]), entry))

        def remove(side: int, entry: tuple[str, str]) -> None:
            c = cid(trees[side], entry)
            members = groups[side][c]
            members.remove(entry)
            if not members:
                del groups[side][c]
            opened.pop((side, entry), None)

        for entry in fpool:
            add(0, entry)
        for entry in mpool:
            add(1, entry)
        while True:
            # 1. Pair entries of equal content that no unopened module could also hold.
            matched: list[tuple[tuple[str, str], tuple[str, str]]] = []
            for c in sorted(groups[0].keys() & groups[1].keys()):
                content = contents[c]
                if any(oc != c and _contains(contents[oc], content) for oc in set(opened.values())):
                    continue  # an unopened module may hold another of these: pairing now could pick the wrong one
                fs, ms = groups[0][c], groups[1][c]
                if len(fs) > 1 and len(ms) > 1 and not (_numbered(fs) and _numbered(ms)):
                    ties += 1
                matched += _pair_group(list(fs), list(ms))
            if matched:
                for f, m in matched:
                    remove(0, f)
                    remove(1, m)
                for f, m in matched:
                    if f[0] == "u" and m[0] == "u":
                        pair_units(f[1], m[1])
                    else:
                        solve(ft.expand(f), mt.expand(m))
                continue
            # 2. Nothing (more) pairs at this level: open the largest unmatched module and try again.
            while heap and (heap[0][1], heap[0][3]) not in opened:
                heapq.heappop(heap)  # paired or opened already
            if not heap:
                break
            _, side, _, entry = heapq.heappop(heap)
            remove(side, entry)
            for child in trees[side].expand(entry):
                add(side, child)
        for side, out in ((0, left_f), (1, left_m)):
            for members in groups[side].values():
                out.extend(members)

    solve(ft.expand(("n", "")), mt.expand(("n", "")))

    # 3. Leftover units: same parameter names and ranks, unique on both sides (a resized head, a stem for in_chans).
    def loose(tree: _Tree, side: str, unit: str) -> tuple:
        return tuple(sorted((_last(k), len(shape_of[(side, k)])) for k, _ in tree.own.get(unit, [])))

    lf: dict[tuple, list[str]] = {}
    lm: dict[tuple, list[str]] = {}
    for _, u in left_f:
        lf.setdefault(loose(ft, "f", u), []).append(u)
    for _, u in left_m:
        lm.setdefault(loose(mt, "m", u), []).append(u)
    used_f: set[str] = set()
    used_m: set[str] = set()
    for key in lf.keys() & lm.keys():
        if len(lf[key]) == 1 and len(lm[key]) == 1:
            pair_units(lf[key][0], lm[key][0])
            used_f.add(lf[key][0])
            used_m.add(lm[key][0])

    # 4. Leftover tensors whose exact shape is unique on both sides (a renamed top-level parameter: cls_token).
    rest_f: dict[Shape, list[str]] = {}
    rest_m: dict[Shape, list[str]] = {}
    for _, u in left_f:
        if u not in used_f:
            for k, _ in ft.own.get(u, []):
                rest_f.setdefault(shape_of[("f", k)], []).append(k)
    for _, u in left_m:
        if u not in used_m:
            for k, _ in mt.own.get(u, []):
                rest_m.setdefault(shape_of[("m", k)], []).append(k)
    for shape in rest_f.keys() & rest_m.keys():
        if len(rest_f[shape]) == 1 and len(rest_m[shape]) == 1:
            pairs.append((rest_f[shape][0], rest_m[shape][0], True))
    return pairs, ties


def _only_dim_differs(a: Shape, b: Shape, dim: int) -> bool:
    return len(a) == len(b) and len(a) > dim and all(x == y for i, (x, y) in enumerate(zip(a, b)) if i != dim)


def _classifier_modules(sig: Signature) -> tuple[str, ...]:
    """Where a timm model's classifier lives even when its default has none (num_classes=0 models)."""
    if not sig.name.startswith("timm:"):
        return ()
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(sig.name.split(":", 1)[1])
    except Exception:  # noqa: BLE001 - unknown to timm's registry: nothing to add
        return ()
    classifier = getattr(cfg, "classifier", None)
    if not classifier:
        return ()
    return (classifier,) if isinstance(classifier, str) else tuple(classifier)


def match_signature(file_items: list[tuple[str, Shape]], sig: Signature) -> Match:
    """Match ``file_items`` (``(key, shape)`` in any order) against ``sig``; see the module docstring.

    The result (pairs, counts, kwargs, differences) depends only on the set of items, never on their order.
    """
    file_items = sorted(file_items, key=lambda kv: natural_key(kv[0]))
    # Optional heads (aux_loss=True, aux_logits=False …): off by default -> their tensors are added as candidates.
    extra = [(k, s) for opt in sig.options if not opt.default for k, s in zip(opt.keys, opt.shapes)]
    model_items = list(zip(sig.keys, sig.shapes)) + extra
    model_shape = dict(model_items)
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
    model_core = [(k, s) for k, s in model_items if not k.endswith(NBT)]

    # 2. By name.
    pairs: list[tuple[str, str, bool]] = []
    for wk, shape in file_core:
        if wk in model_shape:
            pairs.append((wk, wk, model_shape[wk] == shape))
    named = {a for a, _, _ in pairs}
    taken = {b for _, b, _ in pairs}

    # 3. By module-tree structure for what names did not explain.
    rest_file = [(k, s) for k, s in file_core if k not in named]
    rest_model = [(k, s) for k, s in model_core if k not in taken]
    ties = 0
    if rest_file and rest_model:
        aligned, ties = _tree_pairs(rest_file, rest_model)
        pairs += aligned
    pairs.sort(key=lambda p: natural_key(p[0]))

    # 3b. Optional heads: decided by whether the file holds their tensors.
    kwargs: dict[str, Any] = {}
    dropped: set[str] = set()
    for opt in sig.options:
        core = [k for k in opt.keys if not k.endswith(NBT)]
        found = sum(1 for _, b, _ in pairs if b in set(core))
        present = bool(core) and found >= 0.9 * len(core)
        if present != opt.default:
            kwargs[opt.kwarg] = present
            differences.append(f"{opt.kwarg}={present}: the file {'has' if present else 'lacks'} "
                               f"{'its' if present else 'the'} {len(core)} tensors (model default {opt.default})")
        if not present:
            dropped |= set(opt.keys)
    if dropped:
        pairs = [p for p in pairs if p[1] not in dropped]
        model_core = [(k, s) for k, s in model_core if k not in dropped]
    model_nbt = {k for k, _ in model_items if k.endswith(NBT) and k not in dropped}

    # 4. Shape differences that constructor arguments explain: head size, input channels, image size.
    file_shape = {wk: s for wk, s in file_core}
    head = set(sig.head) - dropped
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
    head_keys = tuple(k for k in sig.head if k not in dropped)
    if not sig.head:
        # A model built without classifier (num_classes=0 by default): a file with one means num_classes=N.
        modules = _classifier_modules(sig)
        taken_file = {a for a, _ in accepted}
        clf = sorted(((k, s) for k, s in file_core if k not in taken_file and _module(k) in modules),
                     key=lambda kv: (natural_key(_module(kv[0])), not kv[0].endswith("weight"), kv[0]))
        outs = {s[0] for k, s in clf if k.endswith(("weight", "bias")) and s}
        if clf and len(outs) == 1:
            kwargs["num_classes"] = outs.pop()
            accepted += [(k, k) for k, _ in clf]
            model_n += len(clf)
            head_keys = tuple(k for k, _ in clf)
            differences.append(f"classifier head with {kwargs['num_classes']} outputs (model default: none)")
        elif modules and not clf:
            kwargs["num_classes"] = 0  # say it: no head in the file, none in the model (its default)
    matched_model = {b for _, b in accepted}
    head_in_file = bool(head & matched_model)
    if sig.head:
        if head_outs:
            kwargs["num_classes"] = head_outs.pop()
        elif head_in_file:
            kwargs["num_classes"] = sig.num_classes
        else:
            head_n = sum(1 for k in head if not k.endswith(NBT))
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
        note = f"{renamed} tensors have other names; matched by module structure and shapes"
        if ties:
            note += f" ({ties} groups of identical modules paired in name order)"
        differences.insert(0, note)
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
