"""Twins: architectures with the same tensors but possibly different code, and deciding between them by function.

Two architectures are *twins* when a weights file fits both (identical signatures, or identical apart from the head):
``timm:efficientnet_lite0`` / ``timm:tf_efficientnet_lite0`` (TensorFlow "same" padding, BN eps 1e-3),
``timm:resnet50`` / ``timm:resnetblur50`` (blur pooling), ``torchvision:resnet18`` / ``timm:resnet18`` (same
function, other default preprocessing). The tensors cannot tell them apart; what the weights *do* can.

- :func:`profile` / :func:`functional_differences`: build each twin on the meta device and compare what changes the
  output: convolution padding and strides, pooling (max / average / blur / anti-aliased), activation kinds, batch-norm
  eps. Derived from the modules, so twins nobody listed are handled too.
- :func:`twin_groups`: every group of twins in a signature index (through its public ``group_of``).
- :func:`decide_twins`: the batch-norm fit test. Each twin is loaded with the file's tensors and run on the packaged
  calibration crops under each plausible input normalization. A pre-forward hook on every batch-norm layer compares
  the per-channel mean / variance of the layer's input with the running statistics stored in the file (symmetric KL
  between Gaussians, averaged over live channels, then over layers). Running statistics are the average statistics
  of each layer's input during training, so the code that produced them fits them; a twin with other padding or
  pooling shifts them from the first layer it differs in onwards.

Decision rule (measured, see ``benchmarks/results/twins.md``): choose the best (twin, normalization) pair only when
its mean distance is at most :data:`MAX_FIT`, the best pair of every other twin is at least :data:`MIN_RATIO` times
farther, and the chosen twin fits better in at least :data:`MIN_LAYER_SHARE` of the layers. Otherwise, or when the
file has no trained batch-norm statistics, the decision is ambiguous and identification is not confident.
"""

from __future__ import annotations

import functools
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pthkit.architectures.types import TwinDecision, TwinFit

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pthkit.architectures.index import SignatureIndex
    from pthkit.architectures.types import Candidate

__all__ = [
    "FunctionProfile",
    "profile",
    "functional_differences",
    "twin_groups",
    "decide_twins",
    "exact_twin_choice",
    "function_classes",
    "MAX_FIT",
    "MIN_RATIO",
    "MIN_LAYER_SHARE",
    "FIT_SIZE",
    "FIT_SIZES",
    "FIT_CROPS",
]

# Thresholds of the decision (justified by the measurements in benchmarks/results/twins.md):
# - real lite0 file: tf twin 0.16 vs plain 1.05 (ratio 6.7, 40 of 49 layers closer) at 112 px / 16 crops;
# - calibrated random-init corpus: the true twin's distance is <= 0.05, the other twin's >= 10x that;
# - the ratio between two equally good fits (same function, noise of 16 crops) stays under 1.1.
MAX_FIT = 1.0          # mean symmetric KL of the best pair: above it no twin fits and none is chosen
MIN_RATIO = 2.0        # every other twin's best pair must be this many times farther
MIN_LAYER_SHARE = 0.6  # ... and the chosen twin closer in this share of the batch-norm layers
FIT_SIZES = (96, 128)  # crop sides of the fit test; every one must agree (lite0: ratio 16 at 96 px, 7.6 at 128 px)
FIT_SIZE = 112         # crop side for the cheap first-layer normalization test of exact twins
FIT_CROPS = 16         # calibration crops used (of the packaged 40): the test must stay under ~2 s per file
FAMILY_KEEP = 1.5      # normalization families whose first-layer distance is within this factor of the best are run
MAX_TWINS = 4          # twins tested by function (a larger group is reported ambiguous without running them)


# --- what each twin computes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionProfile:
    """What in a built model changes its output, as comparable plain data (from a meta build: no memory used)."""

    convs: tuple[tuple[Any, ...], ...]      # per convolution, in state-dict order: (stride, dilation, padding)
    pooling: tuple[str, ...]                # sorted kinds: "max k3 s2 p1", "avg k2 s2", "blur", "max-same k3 s2"
    activations: tuple[str, ...]            # sorted activation class names
    bn_eps: tuple[float, ...]               # sorted distinct eps values of the batch-norm layers
    batchnorms: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"pooling": list(self.pooling), "activations": list(self.activations), "bn_eps": list(self.bn_eps),
                "batchnorms": self.batchnorms, "convs": len(self.convs)}


def _padding_of(module: "nn.Module") -> Any:
    name = type(module).__name__
    pad = getattr(module, "padding", 0)
    if "Same" in name or pad == "same" and getattr(module, "stride", (1,)) not in ((1,), (1, 1), 1):
        return "same (TensorFlow, computed from the input size)"
    mode = getattr(module, "padding_mode", "zeros")
    return (tuple(pad) if isinstance(pad, (tuple, list)) else pad, mode)


def _pool_kind(module: "nn.Module") -> str | None:
    name = type(module).__name__
    low = name.lower()
    if "blur" in low or "antialias" in low or any(b == "filt" for b, _ in module.named_buffers(recurse=False)):
        return f"blur ({name})"
    if "adaptive" in low or "global" in low or "selectadaptive" in low:
        return None  # global pooling: the same function whichever module (or a functional mean) does it
    if "pool" not in low:
        return None

    def val(attr: str) -> Any:
        v = getattr(module, attr, None)
        return tuple(v) if isinstance(v, (list, tuple)) else v

    kind = "max" if "max" in low else "avg" if "avg" in low else low
    if "same" in low:
        kind += "-same"
    return f"{kind} k{val('kernel_size')} s{val('stride')} p{val('padding')}"


def _is_activation(module: "nn.Module") -> bool:
    cls = type(module)
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.children()):
        return False
    return "activation" in cls.__module__ or cls.__name__ in {"Swish", "HardSwish", "HardSigmoid", "GELUTanh"}


def profile_module(model: "nn.Module") -> FunctionProfile:
    """The :class:`FunctionProfile` of a built model."""
    import torch

    state_order = {k: i for i, k in enumerate(model.state_dict(keep_vars=True))}
    convs: list[tuple[int, tuple[Any, ...]]] = []
    pools: Counter = Counter()
    acts: set[str] = set()
    eps: set[float] = set()
    bns = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            key = f"{name}.weight" if name else "weight"
            spec = (tuple(module.stride), tuple(module.dilation), _padding_of(module))
            convs.append((state_order.get(key, len(state_order)), spec))
            continue
        if isinstance(getattr(module, "running_var", None), torch.Tensor):
            bns += 1
            eps.add(float(getattr(module, "eps", 1e-5)))
            continue
        kind = _pool_kind(module)
        if kind:
            pools[kind] += 1
        elif _is_activation(module):
            acts.add(type(module).__name__)
    return FunctionProfile(
        convs=tuple(spec for _, spec in sorted(convs, key=lambda c: c[0])),
        pooling=tuple(sorted(f"{k} x{n}" for k, n in pools.items())), activations=tuple(sorted(acts)),
        bn_eps=tuple(sorted(eps)), batchnorms=bns,
    )


@functools.lru_cache(maxsize=64)
def _profile_cached(name: str, kwargs_key: tuple[tuple[str, Any], ...]) -> FunctionProfile:
    import warnings

    import torch

    from pthkit.architectures.registry import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.device("meta"):
                model = build_model(name, **dict(kwargs_key))
        except Exception:  # a few models compute values at init and cannot be built on meta
            model = build_model(name, **dict(kwargs_key))
    return profile_module(model)


def profile(name: str, kwargs: Mapping[str, Any] | None = None) -> FunctionProfile:
    """The :class:`FunctionProfile` of a registered architecture (built on meta, cached per name and kwargs)."""
    key = tuple(sorted((k, v) for k, v in (kwargs or {}).items() if isinstance(v, (int, float, str, bool))))
    return _profile_cached(name, key)


def _describe_convs(a: tuple[tuple[Any, ...], ...], b: tuple[tuple[Any, ...], ...]) -> list[str]:
    out = []
    if len(a) != len(b):
        return [f"number of convolutions ({len(a)} vs {len(b)})"]
    pad = sum(1 for x, y in zip(a, b) if x[2] != y[2])
    stride = sum(1 for x, y in zip(a, b) if x[:2] != y[:2])
    if pad:
        same = [x[2] for x, y in zip(a, b) if x[2] != y[2] and isinstance(x[2], str)]
        same += [y[2] for x, y in zip(a, b) if x[2] != y[2] and isinstance(y[2], str)]
        how = " (TensorFlow 'same' padding in one of them)" if same else ""
        out.append(f"padding of {pad} convolution(s){how}")
    if stride:
        out.append(f"stride or dilation of {stride} convolution(s)")
    return out


def functional_differences(names: Sequence[str], kwargs: Mapping[str, Any] | None = None) -> dict[str, list[str]]:
    """For each twin after the first: how its function differs from the first's (empty list: same function).

    Aspects: padding, strides, pooling, activation kinds, batch-norm eps. A twin that cannot be built gets
    ``["could not be built: ..."]`` (treated as a difference: never assumed equal).
    """
    profiles: dict[str, FunctionProfile | str] = {}
    for name in names:
        try:
            profiles[name] = profile(name, kwargs)
        except Exception as exc:  # noqa: BLE001 - a twin that cannot be built is reported, not assumed equal
            profiles[name] = f"could not be built: {type(exc).__name__}: {str(exc)[:120]}"
    first = profiles[names[0]] if names else None
    out: dict[str, list[str]] = {}
    for name in names[1:]:
        other = profiles[name]
        if isinstance(first, str) or isinstance(other, str):
            out[name] = [first if isinstance(first, str) else str(other)]
            continue
        assert first is not None
        diffs = _describe_convs(first.convs, other.convs)
        if first.pooling != other.pooling:
            diffs.append(f"pooling ({', '.join(first.pooling) or 'none'} vs {', '.join(other.pooling) or 'none'})")
        if first.activations != other.activations:
            diffs.append(f"activation ({'/'.join(first.activations) or 'none'} vs "
                         f"{'/'.join(other.activations) or 'none'})")
        if first.bn_eps != other.bn_eps:
            diffs.append("batch-norm eps (" + "/".join(f"{e:g}" for e in first.bn_eps) + " vs "
                         + "/".join(f"{e:g}" for e in other.bn_eps) + ")")
        out[name] = diffs
    return out


def function_classes(names: Sequence[str], kwargs: Mapping[str, Any] | None = None) -> list[list[str]]:
    """``names`` split into classes that compute the same function (equal :class:`FunctionProfile`), in order.

    A twin that cannot be built is a class of its own (never assumed equal to another).
    """
    classes: list[tuple[FunctionProfile | None, list[str]]] = []
    for name in names:
        try:
            prof: FunctionProfile | None = profile(name, kwargs)
        except Exception:  # noqa: BLE001 - unknown function: its own class
            prof = None
        for known, members in classes:
            if prof is not None and known == prof:
                members.append(name)
                break
        else:
            classes.append((prof, [name]))
    return [members for _, members in classes]


def twin_groups(index: "SignatureIndex", names: Sequence[str] | None = None) -> list[list[str]]:
    """Groups (2 or more names) of indexed architectures whose signatures are identical apart from the head."""
    seen: set[str] = set()
    groups: list[list[str]] = []
    pool = list(names) if names is not None else list(index.signatures)
    allowed = set(pool)
    for name in pool:
        if name in seen:
            continue
        group = sorted(n for n in index.group_of(name) if n in allowed)
        seen.update(group)
        if len(group) > 1:
            groups.append(group)
    return groups


# --- the batch-norm fit test ---------------------------------------------------------------------------------------


def _batchnorms(model: "nn.Module") -> list[tuple[str, "nn.Module"]]:
    import torch

    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "running_mean", None), torch.Tensor)
            and isinstance(getattr(m, "running_var", None), torch.Tensor) and m.running_mean.ndim == 1]


def trained_statistics(tensors: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether a file's batch-norm running statistics were trained (not all at their init values mean 0 / var 1)."""
    import torch

    means = [k for k, v in tensors.items() if str(k).endswith("running_mean") and isinstance(v, torch.Tensor)]
    if not means:
        return False, "the file has no batch-norm running statistics"
    moved = 0
    for key in means:
        rm = tensors[key]
        rv = tensors.get(key[: -len("running_mean")] + "running_var")
        if not isinstance(rv, torch.Tensor):
            continue
        if not (torch.allclose(rm.float(), torch.zeros(())) and torch.allclose(rv.float(), torch.ones(()))):
            moved += 1
    if moved == 0:
        return False, (f"all {len(means)} batch-norm layers hold their initial statistics (mean 0, var 1): the "
                       "weights were never trained, so their function cannot be read from them")
    return True, f"{moved} of {len(means)} batch-norm layers hold trained statistics"


def _layer_distances(model: "nn.Module", x: "torch.Tensor") -> dict[str, float]:
    """Per batch-norm layer: mean over live channels of the symmetric KL between N(input stats) and N(running)."""
    import torch

    got: dict[str, tuple[torch.Tensor, torch.Tensor, torch.nn.Module]] = {}
    handles = []
    for name, module in _batchnorms(model):
        def hook(mod: "nn.Module", args: tuple[Any, ...], name: str = name) -> None:
            a = args[0].detach()
            dims = [d for d in range(a.ndim) if d != 1]
            got[name] = (a.mean(dims).double(), a.var(dims).double(), mod)
        handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    out: dict[str, float] = {}
    for name, (pm, pv, mod) in got.items():
        rm = torch.as_tensor(mod.running_mean).detach().double().cpu()
        rv = torch.as_tensor(mod.running_var).detach().double().cpu()
        eps = float(getattr(mod, "eps", 1e-5))
        pm, pv = pm.cpu(), pv.cpu()
        live = rv > rv.max() * 1e-6
        if not bool(live.any()):
            continue
        pm, pv, rm, rv = pm[live], pv[live] + eps, rm[live], rv[live] + eps
        dm2 = (pm - rm) ** 2
        kl_pq = 0.5 * (pv / rv + dm2 / rv - 1 + (rv / pv).log())
        kl_qp = 0.5 * (rv / pv + dm2 / pv - 1 + (pv / rv).log())
        value = float(((kl_pq + kl_qp) / 2).mean())
        out[name] = value if math.isfinite(value) else float("inf")
    return out


def _load_twin(name: str, kwargs: Mapping[str, Any], tensors: Mapping[str, "torch.Tensor"],
               key_map: Mapping[str, str]) -> "nn.Module":
    import warnings

    import torch

    from pthkit.architectures.registry import build_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(name, **dict(kwargs))
    state = {key_map.get(k, k): v for k, v in tensors.items() if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise ValueError(f"{len(missing)} of its tensors are not in the file (first: {missing[0]})")
    model.load_state_dict(state, strict=False)
    return model.eval()


def _twin_key_maps(items: list[tuple[str, tuple[int, ...]]], best: "Candidate", twins: Sequence[str],
                   index: "SignatureIndex | None") -> dict[str, dict[str, str]]:
    from pthkit.architectures.align import match_signature

    maps: dict[str, dict[str, str]] = {best.architecture: dict(best.key_map)}
    base = index.signatures[best.architecture].keys if index is not None and best.architecture in index else None
    for twin in twins:
        if twin == best.architecture:
            continue
        sig = index.signatures[twin] if index is not None and twin in index else None
        if sig is None or base is None or sig.keys == base:
            maps[twin] = dict(best.key_map)
        else:
            m = match_signature(items, sig)
            maps[twin] = {k: v for k, v in m.pairs.items() if k != v}
    return maps


def decide_twins(
    tensors: Mapping[str, Any], best: "Candidate", twins: Sequence[str], *, index: "SignatureIndex | None" = None,
    differences: Mapping[str, list[str]] | None = None, sizes: Sequence[int] = FIT_SIZES, crops: int = FIT_CROPS,
) -> TwinDecision:
    """Choose between ``twins`` (``best.architecture`` among them) by how well each fits the file's BN statistics.

    ``tensors`` must hold values (a state dict); ``best`` supplies the constructor kwargs and key map. The test runs
    at each of ``sizes``; a twin is chosen only when every size agrees (a border effect of one input size cannot
    decide). Returns a :class:`TwinDecision`; ``decision.confident`` is False when the evidence is not clear.
    """
    import torch

    from pthkit.preprocess.infer import DEFAULT_CANDIDATES, calibration_batch, infer_normalization

    start = time.perf_counter()
    names = list(dict.fromkeys([best.architecture, *twins]))
    diffs = dict(differences) if differences is not None else functional_differences(names, best.kwargs)
    decision = TwinDecision(twins=names, differences={n: list(v) for n, v in diffs.items()})

    def finish(reason: str) -> TwinDecision:
        decision.reason = reason
        decision.elapsed_s = time.perf_counter() - start
        return decision

    trained, why = trained_statistics(tensors)
    decision.evidence.append(why)
    if not trained:
        return finish(why)
    if len(names) > MAX_TWINS:
        return finish(f"{len(names)} twins: too many to test by function")
    items = [(str(k), tuple(int(d) for d in v.shape)) for k, v in tensors.items() if isinstance(v, torch.Tensor)]
    maps = _twin_key_maps(items, best, names, index)
    by_name = {c.name: c for c in DEFAULT_CANDIDATES}

    models: dict[str, nn.Module] = {}
    for name in names:
        try:
            models[name] = _load_twin(name, best.kwargs, tensors, maps.get(name, {}))
        except Exception as exc:  # noqa: BLE001 - a twin the file does not load into cannot be the answer
            decision.evidence.append(f"{name}: not tested ({type(exc).__name__}: {' '.join(str(exc).split())[:120]})")
    if len(models) < 2:
        return finish("fewer than two twins could be loaded with the file's tensors")

    # Which normalizations to run in full: the first batch-norm layer (cheap: the pass stops there) ranks them.
    first_model = next(iter(models.values()))
    guess = infer_normalization(first_model, images=calibration_batch(size=max(sizes), count=crops))
    rgb = {k: v for k, v in guess.distances.items() if by_name[k].channel_order == "rgb" or by_name[k].family == "caffe"}
    families = []
    if rgb:
        lo = min(rgb.values())
        families = [k for k, v in sorted(rgb.items(), key=lambda kv: kv[1]) if v <= lo * FAMILY_KEEP + 1e-9][:2]
    decision.families_tested = families = families or ["imagenet"]

    per_size: list[tuple[int, TwinFit, TwinFit, int, int]] = []
    for size in sizes:
        batch = calibration_batch(size=size, count=crops)
        layers: dict[tuple[str, str], dict[str, float]] = {}
        for name, model in models.items():
            param = next(iter(model.parameters()), None)
            dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
            for fam in families:
                try:
                    layers[(name, fam)] = _layer_distances(model, by_name[fam].apply(batch).to(dtype=dtype))
                except Exception as exc:  # noqa: BLE001 - foreign model code: a failed run is evidence of nothing
                    decision.evidence.append(f"{name} with {fam} at {size} px: the forward pass failed "
                                             f"({type(exc).__name__})")
        fits = []
        for (name, fam), per_layer in layers.items():
            values = list(per_layer.values())
            mean = sum(values) / len(values) if values else float("inf")
            fits.append(TwinFit(twin=name, normalization=fam, distance=mean, layers=len(values), size=size))
        fits.sort(key=lambda f: f.distance)
        decision.fits += fits
        if not fits or not math.isfinite(fits[0].distance):
            return finish(f"no twin could be run on the calibration images at {size} px")
        top = fits[0]
        rivals = [f for f in fits if f.twin != top.twin]
        if not rivals:
            return finish("only one twin could be run")
        runner = rivals[0]
        mine, theirs = layers[(top.twin, top.normalization)], layers[(runner.twin, runner.normalization)]
        common = [k for k in mine if k in theirs]
        closer = sum(1 for k in common if mine[k] < theirs[k])
        per_size.append((size, top, runner, closer, len(common)))
        decision.evidence.append(
            f"at {size} px: {top.twin} with {top.normalization} normalization fits with mean symmetric KL "
            f"{top.distance:.3f}; best of {runner.twin}: {runner.distance:.3f} ({runner.normalization}); ratio "
            f"{(runner.distance + 1e-9) / (top.distance + 1e-9):.1f}, closer in {closer} of {len(common)} batch-norm "
            "layers")
    decision.fits.sort(key=lambda f: (f.size, f.distance))

    # The summary numbers are the weakest over sizes.
    winners = {top.twin for _, top, _, _, _ in per_size}
    ratios = [(runner.distance + 1e-9) / (top.distance + 1e-9) for _, top, runner, _, _ in per_size]
    worst = min(range(len(per_size)), key=lambda i: ratios[i])
    size, top, runner, closer, n_layers = per_size[worst]
    decision.ratio, decision.layers_closer, decision.layers = ratios[worst], closer, n_layers
    norm_votes = Counter(t.normalization for _, t, _, _, _ in per_size)
    decision.normalization = norm_votes.most_common(1)[0][0]
    decision.normalization_label = by_name[decision.normalization].label
    if len(winners) > 1:
        return finish("the input sizes disagree on which twin fits better (" + ", ".join(
            f"{s} px: {t.twin}" for s, t, _, _, _ in per_size) + ")")
    best_fit = max(t.distance for _, t, _, _, _ in per_size)
    if best_fit > MAX_FIT:
        return finish(f"no twin fits the statistics well (best {best_fit:.3f} > {MAX_FIT})")
    if decision.ratio < MIN_RATIO:
        return finish(f"the fits are too close to tell (ratio {decision.ratio:.2f} < {MIN_RATIO} at {size} px)")
    share = min(c / max(n, 1) for _, _, _, c, n in per_size)
    if share < MIN_LAYER_SHARE:
        return finish(f"the better fit is not consistent over layers (closer in {share:.0%} of them at worst, "
                      f"< {MIN_LAYER_SHARE:.0%})")
    decision.chosen = top.twin
    decision.confident = True
    return finish(f"{top.twin} fits the batch-norm statistics at least {decision.ratio:.1f}x better than "
                  f"{runner.twin} at every input size tested ({', '.join(str(s) for s, *_ in per_size)} px)")


def exact_twin_choice(best: "Candidate", twins: Sequence[str], file_keys: Sequence[str],
                      index: "SignatureIndex | None", normalization: str | None = None) -> tuple[str, str]:
    """For twins that compute the same function: the one to use, and the stated rule that chose it.

    Rules in order: (1) the twin whose default normalization is the one inferred from the file's batch-norm
    statistics, when exactly one twin's is; (2) the twin whose own key names the file uses, when exactly one does;
    (3) the torchvision twin (the reference implementation; timm's copy differs only in its resize / crop recipe);
    (4) the first by pthkit's preference order (plain names, timm).
    """
    names = list(dict.fromkeys([best.architecture, *twins]))
    sigs = {n: index.signatures[n] for n in names if index is not None and n in index}
    if normalization:
        from pthkit.preprocess.infer import DEFAULT_CANDIDATES

        cand = next((c for c in DEFAULT_CANDIDATES if c.name == normalization), None)
        if cand is not None:
            fits = [n for n, s in sigs.items() if s.cfg.get("mean") and all(
                abs(a - b) < 2e-3 for a, b in zip(s.cfg["mean"], cand.mean))]
            if len(fits) == 1 and len(sigs) == len(names) and all(s.cfg.get("mean") for s in sigs.values()):
                return fits[0], (f"its default normalization ({cand.label}) is the one inferred from the file's "
                                 "batch-norm statistics")
    keys = set(file_keys)
    by_names = {n: len(keys & set(s.keys)) for n, s in sigs.items()}
    if by_names and len(sigs) == len(names):
        top = max(by_names.values())
        owners = [n for n, v in by_names.items() if v == top]
        if len(owners) == 1 and top > 0:
            return owners[0], "the file's keys use its naming"
    tv = [n for n in names if n.startswith("torchvision:")]
    if len(tv) == 1:
        return tv[0], ("same function and same key names: torchvision's is the reference implementation (timm's "
                       "copy differs only in its default resize / crop)")
    return names[0], "same function and same key names: pthkit's default order (plain names first, timm first)"
