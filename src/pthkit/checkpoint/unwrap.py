"""Find the model weights inside whatever container a training script saved, and describe everything else as data.

Rules (each choice becomes a :class:`Finding`, never silent):

- Candidates are dicts of tensors (or pickled ``nn.Module`` objects, flattened like ``state_dict()``) found under any
  key, nested up to :data:`MAX_SEARCH_DEPTH`; optimizer and scheduler states are never candidates.
- A candidate is "EMA" when a key on its path mentions EMA (``ema``, ``model_ema``, ``state_dict_ema`` …).
- ``select="auto"`` takes the largest raw candidate (most tensors, then most values; ties go to the usual model
  keys, then ``teacher`` before ``student``), EMA only when there is no raw one; ``"raw"``/``"ema"`` force the kind.
- Prefixes ``module.``, ``model.``, ``_orig_mod.`` and any first component shared by all keys are removed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from pthkit.checkpoint._inert import InertObject
from pthkit.checkpoint.types import Finding
from pthkit.errors import BudgetExceededError, CheckpointError

Select = Literal["auto", "raw", "ema"]
MAX_SEARCH_DEPTH = 6
MAX_NODES = 200_000  # containers one walk may visit
MAX_PLAIN = 20_000  # values one to_plain / entries_besides call may produce
KNOWN_PREFIXES = ("module.", "model.", "_orig_mod.")
MODEL_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "params", "weights", "teacher", "student")
_OPTIMIZER_KEYS = re.compile(r"optim|scheduler|scaler|lr_sched", re.IGNORECASE)


@dataclass
class Candidate:
    path: list[str]
    tensors: dict[str, torch.Tensor]
    obj_id: int

    @property
    def is_ema(self) -> bool:
        return any("ema" in re.split(r"[_\-.\s]", p.lower()) for p in self.path)

    @property
    def label(self) -> str:
        return ".".join(self.path) if self.path else "<top level>"

    def rank(self) -> tuple:
        values = sum(t.numel() for t in self.tensors.values())
        last = self.path[-1].lower() if self.path else ""
        name_rank = MODEL_KEYS.index(last) if last in MODEL_KEYS else len(MODEL_KEYS)
        return (len(self.tensors), values, -name_rank, -len(self.path))


# ---------------------------------------------------------------------------------------------------------------------
# pickled nn.Module objects


def is_module_object(obj: Any) -> bool:
    if not isinstance(obj, InertObject):
        return False
    state = obj.pthkit_state
    if isinstance(state, dict) and ("_parameters" in state or "_modules" in state):
        return True
    return obj.pthkit_class.startswith("__torch__.") and isinstance(state, dict)


class _Budget:
    """How many more containers one walk may visit: every walk over file data is bounded (shared-container bombs)."""

    def __init__(self, nodes: int) -> None:
        self.left = nodes

    def spend(self) -> bool:
        self.left -= 1
        return self.left >= 0


def flatten_module(
    obj: InertObject, prefix: str = "", out: dict[str, torch.Tensor] | None = None, depth: int = 0,
    _budget: _Budget | None = None,
) -> dict[str, torch.Tensor]:
    """A pickled ``nn.Module`` placeholder as ``state_dict()`` would give it (dotted keys, persistent buffers).

    A module shared under several names appears under each (as in ``state_dict()``), within a node budget: a file
    that shares modules to explode the walk is refused with :class:`BudgetExceededError`.
    """
    out = {} if out is None else out
    budget = _Budget(MAX_NODES) if _budget is None else _budget
    if depth > 100:
        return out
    if not budget.spend() or len(out) > MAX_NODES:
        raise BudgetExceededError.build(
            "pickled module", received=f"more than {MAX_NODES:,} submodules or tensors (shared modules nested to explode)",
            expected="a model", hint="The file was crafted.",
        )
    state = obj.pthkit_state if isinstance(obj.pthkit_state, dict) else {}
    if "_parameters" in state or "_modules" in state:
        skip = state.get("_non_persistent_buffers_set") or set()
        for group in ("_parameters", "_buffers"):
            for name, t in _items(state.get(group)):
                if isinstance(t, torch.Tensor) and not (group == "_buffers" and name in skip):
                    out[prefix + str(name)] = t
        for name, child in _items(state.get("_modules")):
            if isinstance(child, InertObject):
                flatten_module(child, f"{prefix}{name}.", out, depth + 1, budget)
    else:  # TorchScript object: attributes are the parameters, buffers and submodules
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                out[prefix + str(name)] = value
            elif isinstance(value, InertObject) and is_module_object(value):
                flatten_module(value, f"{prefix}{name}.", out, depth + 1, budget)
    return out


def _items(value: Any) -> list[tuple[Any, Any]]:
    if isinstance(value, dict):
        return list(value.items())
    return []


# ---------------------------------------------------------------------------------------------------------------------
# candidates


def _tensor_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, InertObject):  # a dict subclass the file names (its items were set, not its state)
        obj = obj.pthkit_setitems
    if not isinstance(obj, dict) or not obj:
        return None
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor) and isinstance(k, str)}
    if not tensors or len(tensors) < 0.5 * len(obj):
        return None
    return tensors


def _is_optimizer_state(obj: Any) -> bool:
    return isinstance(obj, dict) and "param_groups" in obj and "state" in obj


def find_candidates(obj: Any) -> list[Candidate]:
    """Every dict of tensors / pickled module in ``obj`` (each container visited once, by identity; node-budgeted)."""
    found: list[Candidate] = []
    visited: set[int] = set()
    budget = _Budget(MAX_NODES)

    def visit(value: Any, path: list[str], depth: int) -> None:
        if depth > MAX_SEARCH_DEPTH:
            return
        if isinstance(value, (dict, InertObject)):
            if id(value) in visited or not budget.spend():
                return
            visited.add(id(value))
        if is_module_object(value):
            tensors = flatten_module(value)
            if tensors:
                found.append(Candidate(path, tensors, id(value)))
            return
        td = _tensor_dict(value)
        if td is not None:
            found.append(Candidate(path, td, id(value)))
            return
        if isinstance(value, dict) and not _is_optimizer_state(value):
            for k, v in value.items():
                if isinstance(k, str) and not (path == [] and _OPTIMIZER_KEYS.search(k)):
                    visit(v, [*path, k], depth + 1)
        elif isinstance(value, InertObject):
            for k, v in _fields(value).items():
                if isinstance(k, str) and not _OPTIMIZER_KEYS.search(k):
                    visit(v, [*path, k], depth + 1)

    visit(obj, [], 0)
    return found


def choose(candidates: list[Candidate], select: Select) -> tuple[Candidate | None, list[Candidate], list[Finding]]:
    """The chosen weights, the others, and findings saying why."""
    findings: list[Finding] = []
    if not candidates:
        return None, [], findings
    raw = [c for c in candidates if not c.is_ema]
    ema = [c for c in candidates if c.is_ema]
    if select == "ema":
        if not ema:
            raise CheckpointError.build(
                "select='ema'", received=f"a file with no EMA weights (found {', '.join(c.label for c in candidates)})",
                expected="a key such as ema / model_ema / state_dict_ema", hint="Use select='auto' or 'raw'.",
            )
        pool = ema
    elif select == "raw":
        if not raw:
            raise CheckpointError.build(
                "select='raw'", received=f"a file with only EMA weights ({', '.join(c.label for c in candidates)})",
                expected="non-EMA weights", hint="Use select='ema'.",
            )
        pool = raw
    else:
        pool = raw or ema
        if not raw:
            findings.append(Finding("weights", "only EMA weights found; using them", "info"))
    chosen = max(pool, key=Candidate.rank)
    others = [c for c in candidates if c is not chosen]
    if others:
        findings.append(
            Finding(
                "weights",
                f"using {chosen.label} ({len(chosen.tensors)} tensors); also found "
                + ", ".join(f"{c.label} ({len(c.tensors)})" for c in others),
                "info",
            )
        )
    return chosen, others, findings


# ---------------------------------------------------------------------------------------------------------------------
# prefixes


def strip_prefixes(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove wrapper prefixes shared by every key; returns the new dict and the prefixes removed, in order."""
    removed: list[str] = []
    keys = list(tensors)
    while keys:
        prefix = next((p for p in KNOWN_PREFIXES if all(k.startswith(p) and len(k) > len(p) for k in keys)), None)
        if prefix is None:
            break
        keys = [k[len(prefix):] for k in keys]
        removed.append(prefix)
    if len(keys) > 1:
        first = {k.split(".", 1)[0] for k in keys}
        if len(first) == 1 and all("." in k for k in keys):
            rest = [k.split(".", 1)[1] for k in keys]
            # Strip only when what remains still looks like a module tree (several top-level parts, dotted keys).
            if len({r.split(".", 1)[0] for r in rest}) > 1 and any("." in r for r in rest):
                removed.append(next(iter(first)) + ".")
                keys = rest
    if not removed:
        return tensors, []
    return dict(zip(keys, tensors.values())), removed


# ---------------------------------------------------------------------------------------------------------------------
# shared storages


def shared_groups(tensors: dict[str, torch.Tensor]) -> list[list[str]]:
    """Groups of keys that are views of the same memory with the same shape, stride and dtype (tied weights)."""
    groups: dict[tuple, list[str]] = {}
    for k, t in tensors.items():
        if t.numel() == 0 or t.device.type == "meta" or t.layout != torch.strided:
            continue
        sig = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype)
        groups.setdefault(sig, []).append(k)
    return [g for g in groups.values() if len(g) > 1]


# ---------------------------------------------------------------------------------------------------------------------
# entries as plain data


def summarize_optimizer(obj: dict) -> dict[str, Any]:
    groups = obj.get("param_groups") or []
    out: dict[str, Any] = {"type": "optimizer state", "param_groups": len(groups) if isinstance(groups, list) else 0}
    if isinstance(groups, list) and groups and isinstance(groups[0], dict):
        g0 = groups[0]
        lrs = [g.get("lr") for g in groups if isinstance(g, dict)]
        out["lr"] = to_plain(lrs[0] if len(set(map(repr, lrs))) == 1 else lrs)
        for key in ("momentum", "betas", "weight_decay", "eps", "nesterov"):
            if key in g0:
                out[key] = to_plain(g0[key])
        out["params"] = sum(len(g.get("params", [])) for g in groups if isinstance(g, dict) and isinstance(g.get("params"), list))
    state = obj.get("state")
    out["state_entries"] = len(state) if isinstance(state, dict) else 0
    return out


def to_plain(obj: Any, depth: int = 0, _budget: _Budget | None = None) -> Any:
    """JSON-ready data: tensors/arrays summarized, inert objects as ``{"__class__": …, fields}``.

    Bounded: at most :data:`MAX_PLAIN` values are produced per call (then ``"…"``), so shared containers nested to
    explode (a dict whose values are all the same dict, six deep) cost the budget, not their expanded size.
    """
    budget = _Budget(MAX_PLAIN) if _budget is None else _budget
    if depth > 20 or not budget.spend():
        return "…"
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, torch.Tensor):
        if obj.numel() == 1 and obj.device.type != "meta" and obj.layout == torch.strided:
            return to_plain(obj.item(), depth, budget)
        return {"type": "tensor", "shape": list(obj.shape), "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, np.ndarray):
        if obj.size <= 16 and obj.dtype.kind in "biuf":
            return to_plain(obj.tolist(), depth + 1, budget)
        return {"type": "ndarray", "shape": list(obj.shape), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return to_plain(obj.item(), depth + 1, budget)
    if isinstance(obj, (torch.dtype, torch.device, np.dtype)):
        return str(obj)
    if isinstance(obj, dict):
        if _is_optimizer_state(obj):
            return summarize_optimizer(obj)
        items = list(obj.items())
        out = {str(k): to_plain(v, depth + 1, budget) for k, v in items[:200]}
        if len(items) > 200:
            out["…"] = f"{len(items) - 200} more"
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        seq = list(obj)
        if seq and len(seq) > 8 and all(isinstance(v, torch.Tensor) for v in seq):
            return {"type": "tensor list", "count": len(seq)}
        out_l = [to_plain(v, depth + 1, budget) for v in seq[:100]]
        if len(seq) > 100:
            out_l.append(f"… {len(seq) - 100} more")
        return out_l
    if isinstance(obj, InertObject) and obj.pthkit_class.startswith("omegaconf.") and isinstance(obj.pthkit_state, dict):
        return _omegaconf_plain(obj, depth, budget)
    if isinstance(obj, InertObject):
        out_d: dict[str, Any] = {"__class__": obj.pthkit_class}
        if is_module_object(obj):
            out_d["type"] = "pickled module"
            return out_d
        state = obj.pthkit_state
        if isinstance(state, dict):
            out_d.update({str(k): to_plain(v, depth + 1, budget) for k, v in list(state.items())[:200]})
        elif state is not None:
            out_d["state"] = to_plain(state, depth + 1, budget)
        if obj.pthkit_args:
            out_d["args"] = to_plain(list(obj.pthkit_args), depth + 1, budget)
        if obj.pthkit_items:
            out_d["items"] = to_plain(obj.pthkit_items, depth + 1, budget)
        for k, v in list(obj.pthkit_setitems.items())[:200]:  # dict subclasses (e.g. Lightning's AttributeDict)
            out_d.setdefault(str(k), to_plain(v, depth + 1, budget))
        return out_d
    return str(obj)[:200]


def _omegaconf_plain(obj: InertObject, depth: int, budget: _Budget) -> Any:
    """omegaconf ``DictConfig``/``ListConfig``/value nodes (pickled as their ``__dict__``) as the plain config."""
    state = obj.pthkit_state
    if "_content" in state:
        content = state["_content"]
        if isinstance(content, dict):
            return {str(k): to_plain(v, depth + 1, budget) for k, v in list(content.items())[:200]}
        return to_plain(content, depth + 1, budget)
    if "_val" in state:
        return to_plain(state["_val"], depth + 1, budget)
    return {"__class__": obj.pthkit_class}


def entries_besides(
    obj: Any, exclude: set[int], path: tuple[str, ...] = (), _budget: _Budget | None = None,
    _memo: dict[int, bool] | None = None,
) -> dict[str, Any]:
    """Every entry of the container except the weight candidates (``exclude`` holds their ``id()``); node-budgeted."""
    budget = _Budget(MAX_PLAIN) if _budget is None else _budget
    memo: dict[int, bool] = {} if _memo is None else _memo
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        items = list(obj.items())
    elif isinstance(obj, InertObject) and not is_module_object(obj):
        out["__class__"] = obj.pthkit_class
        items = list(_fields(obj).items())
    else:
        return out
    if id(obj) in exclude:  # the weights dict itself: keep only its non-tensor entries
        out.update({str(k): to_plain(v, 0, budget) for k, v in items if not isinstance(v, torch.Tensor)})
        return out
    for k, v in items:
        if budget.left <= 0:
            out["…"] = "more entries (walk budget reached)"
            break
        key = str(k)
        if id(v) in exclude:
            continue
        holds_candidate = _contains(v, exclude, 0, memo)
        if holds_candidate and isinstance(v, (dict, InertObject)) and len(path) < MAX_SEARCH_DEPTH:
            inner = entries_besides(v, exclude, (*path, key), budget, memo)
            if inner:
                out[key] = inner
        else:
            out[key] = to_plain(v, 0, budget)
    return out


def _contains(value: Any, ids: set[int], depth: int, memo: dict[int, bool] | None = None) -> bool:
    """Whether ``value`` holds one of ``ids`` (memoized by identity: shared containers are looked into once)."""
    if depth > MAX_SEARCH_DEPTH:
        return False
    if id(value) in ids:
        return True
    if not isinstance(value, (dict, InertObject)):
        return False
    memo = {} if memo is None else memo
    key = id(value)
    if key in memo:
        return memo[key]
    memo[key] = False  # provisional: cycles and re-entries answer "no" while the first visit is under way
    children = value.values() if isinstance(value, dict) else _fields(value).values()
    found = any(_contains(v, ids, depth + 1, memo) for v in children)
    memo[key] = found
    return found


def _fields(obj: InertObject) -> dict:
    """State fields and set items of a placeholder, together."""
    state = obj.pthkit_state if isinstance(obj.pthkit_state, dict) else {}
    return {**state, **obj.pthkit_setitems}
