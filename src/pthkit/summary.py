"""What ``pthkit inspect`` shows about a checkpoint: counts, bytes, a compact module tree and the likely head.

:func:`summarize` looks only at tensor *metadata* (names, shapes, dtypes): it never reads tensor data, so summarizing a
memory-mapped multi-GB checkpoint costs no more RAM than its key list.

Written by hand because no library does it from a bare state dict: torchinfo / ``timm`` summaries need the built
``nn.Module``, and here the architecture is not known yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pthkit.cli._safe_text import safe_text

if TYPE_CHECKING:
    import torch

    from pthkit.checkpoint.types import Checkpoint

__all__ = [
    "summarize",
    "tensor_role",
    "find_head",
    "build_tree",
    "Summary",
    "ModuleNode",
    "TensorInfo",
    "Head",
    "AlternativeSummary",
]

TensorRole = Literal["parameter", "buffer", "counter"]
Confidence = Literal["high", "medium", "low"]

# Buffers recognised by their last name segment. They are stored in state dicts but are not trained parameters.
# Running statistics of batch norm (torch, Keras/TF ports) are counted in "values"; counters are not.
_RUNNING_STATS = frozenset({"running_mean", "running_var", "running_std", "moving_mean", "moving_variance"})
_COUNTERS = frozenset({"num_batches_tracked", "n_averaged", "step", "num_updates"})
_OTHER_BUFFERS = frozenset(
    {
        "relative_position_index",  # Swin / BEiT (int64)
        "position_ids",  # Hugging Face (int64)
        "token_type_ids",
        "attn_mask",
        "attention_mask",
        "inv_freq",  # rotary embeddings
        "anchors",
        "anchor_grid",
        "_float_tensor",  # fairseq
    }
)

# Names whose last segment says "this is the classifier".
_HEAD_NAMES = frozenset(
    {"fc", "_fc", "head", "heads", "classifier", "classif", "logits", "last_linear", "cls_head", "fc_cls", "out_fc",
     "prediction", "predictions", "output", "linear", "top"}
)
_HEAD_WORDS = ("head", "classifier", "logit", "fc", "cls")
# Names that say "this is not the classifier" (attention projections, MLP layers, embeddings, norms).
_NOT_HEAD_WORDS = ("attn", "attention", "qkv", "query", "key", "value", "mlp", "ffn", "embed", "norm", "proj",
                   "pos", "token", "lora", "adapter", "gate", "router", "reduce", "expand", "se.", "squeeze")
# Class counts of common datasets: ImageNet-1k (+background), ImageNet-21k variants, Places365, CIFAR, COCO …
_KNOWN_CLASS_COUNTS = frozenset(
    {1000, 1001, 21841, 21843, 11821, 10450, 365, 10, 100, 200, 101, 102, 37, 196, 397, 80, 91, 81, 2, 5, 11221, 18291}
)


def tensor_role(name: str, tensor: "torch.Tensor") -> TensorRole:
    """Classify one state-dict entry by its name and dtype.

    - ``counter``: step counters such as ``num_batches_tracked`` (not model values at all);
    - ``buffer``: running statistics and index/mask buffers, and any integer/bool tensor (cannot be trained);
    - ``parameter``: everything else (floating tensors under a module, which is what ``nn.Parameter`` holds).
    """
    last = name.rsplit(".", 1)[-1]
    is_float = tensor.dtype.is_floating_point or tensor.dtype.is_complex
    if last in _COUNTERS or (tensor.dim() == 0 and not is_float):
        return "counter"
    if last in _RUNNING_STATS or last in _OTHER_BUFFERS or not is_float:
        return "buffer"
    return "parameter"


def _dtype_name(tensor: "torch.Tensor") -> str:
    return str(tensor.dtype).removeprefix("torch.")


def _fmt_shape(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


# --- data types ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor directly under a module: its own name (``weight``), shape, dtype and role."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: TensorRole

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "role": self.role}

    def __str__(self) -> str:
        return f"{self.name} {_fmt_shape(self.shape)}"


@dataclass
class ModuleNode:
    """One line of the module tree.

    ``count`` > 1 means ``count`` consecutive sibling blocks with identical structure (names and shapes) were collapsed
    into this line (``name`` then reads ``"0..1"``); ``parameters`` / ``values`` are for ONE of them.
    Single-child chains are merged into one line (``layer1`` + ``0..1`` → ``layer1.0..1``).
    """

    name: str
    path: str
    count: int = 1
    parameters: int = 0
    values: int = 0
    tensors: list[TensorInfo] = field(default_factory=list)
    children: list["ModuleNode"] = field(default_factory=list)
    kind: str | None = None

    @property
    def total_parameters(self) -> int:
        return self.parameters * self.count

    def label(self) -> str:
        """``layer1.0..1 × 2`` / ``fc`` — the name with the repeat count."""
        return f"{self.name} × {self.count}" if self.count > 1 else self.name

    def describe_tensors(self) -> str:
        """The direct tensors in a compact form: ``Linear 512 → 1000`` or ``weight [64, 3, 7, 7]``."""
        if self.kind:
            return self.kind
        return ", ".join(str(t) for t in self.tensors)

    def iter_lines(self, depth: int = 0) -> Iterable[tuple[int, "ModuleNode"]]:
        """Depth-first (depth, node) pairs, the root excluded."""
        for child in self.children:
            yield depth, child
            yield from child.iter_lines(depth + 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "count": self.count,
            "parameters": self.parameters,
            "values": self.values,
            "kind": self.kind,
            "tensors": [t.to_dict() for t in self.tensors],
            "children": [c.to_dict() for c in self.children],
        }


@dataclass(frozen=True)
class Head:
    """The likely classifier head: the layer whose output looks like class scores."""

    name: str
    weight: str
    bias: str | None
    in_features: int
    out_features: int
    kind: Literal["linear", "conv1x1"]
    confidence: Confidence
    evidence: tuple[str, ...]

    def __str__(self) -> str:
        suffix = " (1×1 conv)" if self.kind == "conv1x1" else ""
        return f"{self.name}: {self.in_features} → {self.out_features}{suffix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight": self.weight,
            "bias": self.bias,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "kind": self.kind,
            "confidence": self.confidence,
            "evidence": list(self.evidence),
            "text": str(self),
        }


@dataclass(frozen=True)
class AlternativeSummary:
    """Another weight set in the file (EMA copy, teacher …) compared with the chosen one."""

    tensors: int
    parameters: int
    same_structure: bool  # same keys and shapes as the chosen weights

    def to_dict(self) -> dict[str, Any]:
        return {"tensors": self.tensors, "parameters": self.parameters, "same_structure": self.same_structure}


@dataclass
class Summary:
    """Counts, bytes, module tree and likely head of the chosen weights, plus short notes on everything else."""

    tensors: int
    parameters: int
    buffer_values: int
    counters: int
    tied: int
    bytes_total: int
    bytes_by_dtype: dict[str, int]
    tensors_by_dtype: dict[str, int]
    tree: ModuleNode
    head: Head | None
    alternatives: dict[str, AlternativeSummary] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def values(self) -> int:
        """Every stored number of the model: parameters plus buffers (running statistics …), counters excluded."""
        return self.parameters + self.buffer_values

    def to_dict(self) -> dict[str, Any]:
        return {
            "tensors": self.tensors,
            "parameters": self.parameters,
            "values": self.values,
            "buffer_values": self.buffer_values,
            "counters": self.counters,
            "tied": self.tied,
            "bytes_total": self.bytes_total,
            "bytes_by_dtype": dict(self.bytes_by_dtype),
            "tensors_by_dtype": dict(self.tensors_by_dtype),
            "head": self.head.to_dict() if self.head else None,
            "tree": self.tree.to_dict(),
            "alternatives": {k: v.to_dict() for k, v in self.alternatives.items()},
            "entries": dict(self.entries),
            "metadata": dict(self.metadata),
        }

    def describe(self) -> str:
        """A few plain-text lines (the CLI renders a richer view)."""
        lines = [
            f"{self.tensors} tensors, {self.parameters:,} parameters, {self.values:,} values counting buffers",
            "bytes: " + ", ".join(f"{d} {format_bytes(b)}" for d, b in self.bytes_by_dtype.items()),
            f"likely head: {self.head} ({self.head.confidence})" if self.head else "likely head: none found",
        ]
        for depth, node in self.tree.iter_lines():
            lines.append("  " * depth + f"{node.label()}  {node.describe_tensors()}".rstrip())
        # Names come from the file: terminal control characters are shown escaped, never sent to the terminal.
        return "\n".join(safe_text(line, newlines=False) for line in lines)

    __str__ = describe


def format_bytes(n: int) -> str:
    """``18.0 MB`` style, powers of 1000 (like file managers and ``ls --si``)."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


# --- module tree -----------------------------------------------------------------------------------------------------


class _Trie:
    __slots__ = ("children", "tensors")

    def __init__(self) -> None:
        self.children: dict[str, _Trie] = {}
        self.tensors: list[TensorInfo] = []


def _signature(node: _Trie) -> tuple:
    # Structure of a subtree: names, shapes and dtypes, in order. Identical signatures collapse.
    return (
        tuple((t.name, t.shape, t.dtype) for t in node.tensors),
        tuple((name, _signature(child)) for name, child in node.children.items()),
    )


def _guess_kind(tensors: list[TensorInfo], module: str = "") -> str | None:
    """Name the layer type when the tensor names and shapes make it obvious (a label only; nothing depends on it)."""
    by_name = {t.name: t for t in tensors}
    names = set(by_name)
    w = by_name.get("weight")
    if w is None:
        return None
    if {"running_mean", "running_var"} <= names and w.shape and len(w.shape) == 1:
        return f"BatchNorm {w.shape[0]}"
    if names - {"weight", "bias"}:
        return None
    if len(w.shape) == 2 and "bias" not in names and ("embed" in module.lower() or "token" in module.lower()):
        return f"Embedding {w.shape[0]} × {w.shape[1]}"
    if len(w.shape) == 2:
        return f"Linear {w.shape[1]} → {w.shape[0]}"
    if len(w.shape) == 4:
        k = "×".join(str(d) for d in w.shape[2:])
        if w.shape[1] == 1 and w.shape[0] > 1:
            # [C, 1, k, k] is a depthwise conv (groups=C) or a conv on a 1-channel input: say both.
            return f"Conv {w.shape[0]} ch {k} depthwise (or 1 → {w.shape[0]})"
        return f"Conv {w.shape[1]} → {w.shape[0]} {k}"
    if len(w.shape) == 1 and "bias" in names:
        return f"Norm {w.shape[0]}"
    return None


def _counts(node: _Trie, tied: frozenset[str], prefix: str) -> tuple[int, int]:
    params = values = 0
    for t in node.tensors:
        if f"{prefix}{t.name}" in tied:
            continue
        n = 1
        for d in t.shape:
            n *= d
        if t.role == "parameter":
            params += n
            values += n
        elif t.role == "buffer":
            values += n
    for name, child in node.children.items():
        p, v = _counts(child, tied, f"{prefix}{name}.")
        params += p
        values += v
    return params, values


def _int(name: str) -> int | None:
    return int(name) if name.isdigit() else None


def _range_label(indices: list[int]) -> str:
    step = indices[1] - indices[0]
    if all(b - a == step for a, b in zip(indices, indices[1:])):
        return f"{indices[0]}..{indices[-1]}" if step == 1 else f"{indices[0]}..{indices[-1]} step {step}"
    return ",".join(str(i) for i in indices)


def _to_node(name: str, path: str, trie: _Trie, tied: frozenset[str]) -> ModuleNode:
    params, values = _counts(trie, tied, f"{path}." if path else "")
    node = ModuleNode(name=name, path=path, parameters=params, values=values, tensors=list(trie.tensors))
    if not trie.children:
        node.kind = _guess_kind(node.tensors, name)
    # Collapse runs of consecutive numeric siblings with identical structure.
    items = list(trie.children.items())
    i = 0
    while i < len(items):
        child_name, child = items[i]
        j = i + 1
        if _int(child_name) is not None:
            sig = _signature(child)
            while j < len(items) and _int(items[j][0]) is not None and _signature(items[j][1]) == sig:
                j += 1
        run = items[i:j]
        child_path = f"{path}.{child_name}" if path else child_name
        sub = _to_node(child_name, child_path, child, tied)
        if len(run) > 1:
            label = _range_label([int(n) for n, _ in run])
            sub.name = label
            sub.path = f"{path}.{label}" if path else label
            sub.count = len(run)
            # Tied keys may fall in any member; count each member's own parameters and keep the largest per-instance.
            sub.parameters = max(_counts(t, tied, f"{path + '.' if path else ''}{n}.")[0] for n, t in run)
            sub.values = max(_counts(t, tied, f"{path + '.' if path else ''}{n}.")[1] for n, t in run)
        node.children.append(sub)
        i = j
    # Merge single-child chains with no own tensors: `layer1` + `0..1 × 2` → `layer1.0..1 × 2`.
    if path and not node.tensors and len(node.children) == 1 and node.count == 1:
        only = node.children[0]
        only.name = f"{node.name}.{only.name}"
        return only
    return node


def build_tree(tensors: Mapping[str, "torch.Tensor"], *, tied: Iterable[str] = ()) -> ModuleNode:
    """The module tree of a state dict, repeated blocks collapsed. ``tied`` keys are not counted again."""
    root = _Trie()
    for key, tensor in tensors.items():
        parts = key.split(".")
        node = root
        for part in parts[:-1]:
            node = node.children.setdefault(part, _Trie())
        node.tensors.append(TensorInfo(parts[-1], tuple(tensor.shape), _dtype_name(tensor), tensor_role(key, tensor)))
    return _to_node("", "", root, frozenset(tied))


# --- head ------------------------------------------------------------------------------------------------------------


def find_head(tensors: Mapping[str, "torch.Tensor"]) -> Head | None:
    """The likely classifier: the last 2-D ``weight`` (or 1×1 conv) whose name and output size look like class scores.

    Scored on evidence, each reason recorded: a head-like name (``fc``, ``head``, ``classifier`` …), an output size
    that is a known dataset's class count (1000, 21843 …) or not a multiple of 8 (hidden sizes almost always are),
    being the last such layer in the file. Names of attention / MLP / embedding layers count against it.
    Returns None when nothing scores high enough: a backbone without a head, or no 2-D weights at all.
    """
    keys = list(tensors)
    candidates: list[tuple[int, str]] = []  # (position, key)
    for pos, key in enumerate(keys):
        if not (key == "weight" or key.endswith(".weight")):
            continue
        shape = tuple(tensors[key].shape)
        if not tensors[key].dtype.is_floating_point:
            continue
        if len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1)):
            candidates.append((pos, key))
    if not candidates:
        return None
    last_pos = candidates[-1][0]
    best: tuple[int, int, Head] | None = None
    for pos, key in candidates:
        shape = tuple(tensors[key].shape)
        module = key[: -len(".weight")] if key.endswith(".weight") else ""
        lowered = module.lower()
        last = lowered.rsplit(".", 1)[-1]
        if last.isdigit() and "." in lowered:  # `classifier.1` → judge by `classifier`
            last = lowered.rsplit(".", 2)[-2]
        out_f, in_f = shape[0], shape[1]
        score = 0
        evidence: list[str] = []
        if last in _HEAD_NAMES or any(w in last for w in _HEAD_WORDS):
            score += 2
            evidence.append(f"name {module or key!r} reads like a classifier")
        if any(w in lowered for w in _NOT_HEAD_WORDS) and last not in _HEAD_NAMES:
            score -= 3
        if out_f in _KNOWN_CLASS_COUNTS:
            score += 2
            evidence.append(f"{out_f} outputs is a common class count")
        elif out_f % 8 != 0:
            score += 1
            evidence.append(f"{out_f} outputs is not a hidden-layer size (not a multiple of 8)")
        if pos == last_pos:
            score += 1
            evidence.append("last 2-D weight in the file")
        if len(shape) == 4:
            score -= 1
        if score < 2:
            continue
        confidence: Confidence = "high" if score >= 4 else "medium" if score == 3 else "low"
        bias_key = f"{module}.bias" if module else "bias"
        bias = bias_key if bias_key in tensors and tuple(tensors[bias_key].shape) == (out_f,) else None
        head = Head(
            name=module or key,
            weight=key,
            bias=bias,
            in_features=int(in_f),
            out_features=int(out_f),
            kind="linear" if len(shape) == 2 else "conv1x1",
            confidence=confidence,
            evidence=tuple(evidence),
        )
        if best is None or (score, pos) >= (best[0], best[1]):
            best = (score, pos, head)
    return best[2] if best else None


# --- entries ---------------------------------------------------------------------------------------------------------


def _brief(value: Any, limit: int = 80) -> str:
    """One short line describing a plain-data entry."""
    if isinstance(value, Mapping) and value and len(value) <= 8 and all(
        isinstance(v, (int, float, str, bool, type(None))) for v in value.values()
    ):
        text = ", ".join(f"{k}: {v}" for k, v in value.items())  # a small flat record: show it whole
    elif isinstance(value, Mapping):
        keys = [str(k) for k in list(value)[:6]]
        more = "…" if len(value) > 6 else ""
        text = f"dict, {len(value)} keys: {', '.join(keys)}{more}" if value else "empty dict"
    elif isinstance(value, (list, tuple)):
        text = f"{type(value).__name__} of {len(value)}"
        if value and all(isinstance(v, (int, float, str, bool)) for v in value) and len(value) <= 8:
            text = repr(list(value))
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _strip(key: str, prefixes: Iterable[str]) -> str:
    for prefix in prefixes:
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


# --- entry point -----------------------------------------------------------------------------------------------------


def summarize(ckpt: "Checkpoint") -> Summary:
    """Summarize the chosen weights of ``ckpt`` (and note its alternatives, other entries and metadata).

    Only shapes and dtypes are read; tied tensors (``ckpt.shared``) are counted once.
    """
    tensors = ckpt.tensors
    tied: set[str] = set()
    for group in ckpt.shared:
        members = [k for k in group if k in tensors]
        tied.update(members[1:])

    parameters = buffer_values = counters = bytes_total = 0
    bytes_by_dtype: dict[str, int] = {}
    tensors_by_dtype: dict[str, int] = {}
    for key, t in tensors.items():
        dtype = _dtype_name(t)
        tensors_by_dtype[dtype] = tensors_by_dtype.get(dtype, 0) + 1
        role = tensor_role(key, t)
        if role == "counter":
            counters += 1
        if key in tied:
            continue
        n = t.numel()
        nbytes = n * t.element_size()
        bytes_total += nbytes
        bytes_by_dtype[dtype] = bytes_by_dtype.get(dtype, 0) + nbytes
        if role == "parameter":
            parameters += n
        elif role == "buffer":
            buffer_values += n

    alternatives: dict[str, AlternativeSummary] = {}
    own_structure = {k: tuple(v.shape) for k, v in tensors.items()}
    for name, alt in ckpt.alternatives.items():
        # Compare modulo the wrapper prefixes already reported for the chosen weights (`module.` …).
        raw_structure = {k: tuple(v.shape) for k, v in alt.items()}
        stripped = {_strip(k, ckpt.prefixes_removed): shape for k, shape in raw_structure.items()}
        alternatives[name] = AlternativeSummary(
            tensors=len(alt),
            parameters=sum(v.numel() for k, v in alt.items() if tensor_role(k, v) == "parameter"),
            same_structure=own_structure in (raw_structure, stripped),
        )

    return Summary(
        tensors=len(tensors),
        parameters=parameters,
        buffer_values=buffer_values,
        counters=counters,
        tied=len(tied),
        bytes_total=bytes_total,
        bytes_by_dtype=dict(sorted(bytes_by_dtype.items(), key=lambda kv: -kv[1])),
        tensors_by_dtype=tensors_by_dtype,
        tree=build_tree(tensors, tied=tied),
        head=find_head(tensors),
        alternatives=alternatives,
        entries={str(k): _brief(v) for k, v in ckpt.entries.items()},
        metadata={str(k): str(v) for k, v in ckpt.metadata.items()},
    )

