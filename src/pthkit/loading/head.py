"""The one head-replacement policy: find a classifier's head by structure and give it another number of classes.

Fine-tuning and ``pthkit bundle --labels/--num-classes`` both need "these weights, with a head for N classes". The
policy, used by both (and by nothing else that re-initializes weights):

1. Load the file **strictly** into the architecture with the file's own head. A ``--arch`` that does not fit the
   file is refused there (:class:`~pthkit.errors.LoadError`), never turned into a half-random model.
2. Find the head by structure (:func:`find_head`): timm's ``get_classifier()`` when the model has one; otherwise the
   last ``nn.Linear`` or 1x1 ``nn.Conv2d`` in module order (training-only auxiliary heads excluded). That is the
   layer feeding the output for torchvision (``fc``, ``classifier.6``, squeezenet's ``classifier.1``, ``heads.head``)
   and for user classes (``layer2`` of ``Linear(10, 50) → relu → Linear(50, 2)``).
3. When the number of classes differs (:func:`set_num_classes`): timm models use their own ``reset_classifier``;
   every other model gets the head module replaced by one of the same kind and input width, reported as
   ``"layer2: 50 → 2 replaced by 50 → 3"``. Only the head's keys are new; :func:`check_only_head_reinitialized`
   refuses a load report that re-initialized anything else.

Classes whose constructor takes no ``num_classes`` cannot rebuild the new head from arguments; :meth:`HeadChange.record`
is what a bundle stores so :func:`apply_head_record` can rebuild it (``pthkit.open`` on the bundle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

from pthkit.errors import LoadError

if TYPE_CHECKING:
    import os

    from pthkit.loading.report import LoadReport
    from pthkit.model import Model

__all__ = ["Head", "HeadChange", "HeadedModel", "find_head", "set_num_classes", "open_with_classes",
           "check_only_head_reinitialized", "apply_head_record", "accepts_num_classes"]

HeadKind = Literal["linear", "conv1x1"]


@dataclass(frozen=True)
class Head:
    """A classifier head found in a model: module path(s), kind, widths, and its state-dict keys."""

    name: str  # module path, e.g. "fc", "classifier.1", "layer2" (first of several for timm's distilled heads)
    kind: HeadKind
    in_features: int
    out_features: int
    keys: tuple[str, ...]  # state-dict keys of the head (all head modules)

    def describe(self) -> str:
        """``"layer2: 50 → 2"``."""
        return f"{self.name}: {self.in_features} → {self.out_features}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "in_features": self.in_features,
                "out_features": self.out_features, "keys": list(self.keys)}


@dataclass(frozen=True)
class HeadChange:
    """What :func:`set_num_classes` did: the head before and after, and how (timm's reset or a module swap)."""

    before: Head | None  # None: the model had no head (timm num_classes=0)
    after: Head
    method: Literal["reset_classifier", "replaced"]

    def __str__(self) -> str:
        if self.before is None:
            return f"{self.after.name}: new head → {self.after.out_features}"
        return (f"{self.before.describe()} replaced by {self.after.in_features} → {self.after.out_features}")

    def record(self) -> dict[str, Any]:
        """JSON data for a bundle: enough to rebuild the new head on a freshly built model."""
        return {"name": self.after.name, "kind": self.after.kind, "in_features": self.after.in_features,
                "out_features": self.after.out_features, "method": self.method}


def _is_auxiliary(name: str) -> bool:
    from pthkit.loading.match import is_auxiliary

    return is_auxiliary(name)


def _head_module_ok(module: nn.Module) -> HeadKind | None:
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and module.groups == 1:
        return "conv1x1"
    return None


def _widths(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    assert isinstance(module, nn.Conv2d)
    return module.in_channels, module.out_channels


def _keys_of(model: nn.Module, names: list[str]) -> tuple[str, ...]:
    return tuple(k for k in model.state_dict() if any(k.startswith(n + ".") for n in names))


def _timm_heads(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """timm's own answer (``get_classifier()``), as (name, module) pairs; None when the model has no such method."""
    get = getattr(model, "get_classifier", None)
    if not callable(get) or not callable(getattr(model, "reset_classifier", None)):
        return None
    try:
        clf = get()
    except Exception:  # noqa: BLE001 - a user class with an unrelated get_classifier: fall back to structure
        return None
    modules = list(clf) if isinstance(clf, (tuple, list)) else [clf]
    ids = {id(m) for m in modules if isinstance(m, nn.Module)}
    return [(n, m) for n, m in model.named_modules() if id(m) in ids and n]


def find_head(model: nn.Module) -> Head | None:
    """The classifier head of ``model`` by structure, or None when it has none (timm ``num_classes=0``, no layer).

    timm models answer through ``get_classifier()``; every other model's head is the last ``nn.Linear`` or 1x1
    ``nn.Conv2d`` in module order, training-only auxiliary heads excluded.
    """
    timm_heads = _timm_heads(model)
    if timm_heads is not None:
        usable = [(n, m, k) for n, m in timm_heads if (k := _head_module_ok(m)) is not None]
        if not usable:
            return None  # nn.Identity: built without a head
        name, module, kind = usable[0]
        cin, cout = _widths(module)
        return Head(name=name, kind=kind, in_features=cin, out_features=cout,
                    keys=_keys_of(model, [n for n, _, _ in usable]))
    last: tuple[str, nn.Module, HeadKind] | None = None
    for module_name, candidate in model.named_modules():
        found = _head_module_ok(candidate)
        if found is not None and module_name and not _is_auxiliary(module_name):
            last = (module_name, candidate, found)
    if last is None:
        return None
    name, module, kind = last
    cin, cout = _widths(module)
    return Head(name=name, kind=kind, in_features=cin, out_features=cout, keys=_keys_of(model, [name]))


def _new_module(kind: HeadKind, cin: int, cout: int, like: nn.Module | None) -> nn.Module:
    bias = like is None or getattr(like, "bias", None) is not None
    module: nn.Module = nn.Linear(cin, cout, bias=bias) if kind == "linear" else nn.Conv2d(cin, cout, 1, bias=bias)
    if like is not None:
        first = next(iter(like.parameters()), None)
        if first is not None:
            module = module.to(device=first.device, dtype=first.dtype)
    return module


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)  # works for Sequential children ("classifier.6") too


def set_num_classes(model: nn.Module, num_classes: int) -> HeadChange | None:
    """Give ``model`` a fresh head for ``num_classes`` classes, in place; None when it already has that many.

    Raises :class:`LoadError` when the model has no head pthkit can find, or ``num_classes`` is not positive.
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise LoadError.build("number of classes", received=repr(num_classes), expected="an integer >= 1")
    before = find_head(model)
    if before is not None and before.out_features == num_classes:
        return None
    if _timm_heads(model) is not None:
        model.reset_classifier(num_classes)  # type: ignore[operator]  # timm's own policy (pooling, dist heads)
        after = find_head(model)
        if after is None or after.out_features != num_classes:
            raise LoadError.build("classifier head", received=f"{type(model).__name__}.reset_classifier("
                                  f"{num_classes}) left no {num_classes}-class head",
                                  expected="a timm classifier", hint="Pass --arch for a classification model.")
        return HeadChange(before=before, after=after, method="reset_classifier")
    if before is None:
        raise LoadError.build("classifier head", received=f"{type(model).__name__} without an nn.Linear or 1x1 "
                              "nn.Conv2d layer", expected="a classifier whose last such layer gives the class scores",
                              hint="Pass --arch for a classification architecture.")
    old = model.get_submodule(before.name)
    _set_submodule(model, before.name, _new_module(before.kind, before.in_features, num_classes, old))
    if isinstance(getattr(model, "num_classes", None), int):
        model.num_classes = num_classes  # type: ignore[assignment]  # keep the attribute honest (bundles read it)
    after = Head(name=before.name, kind=before.kind, in_features=before.in_features, out_features=num_classes,
                 keys=_keys_of(model, [before.name]))
    return HeadChange(before=before, after=after, method="replaced")


def apply_head_record(model: nn.Module, record: dict[str, Any]) -> None:
    """Rebuild the head a bundle recorded (:meth:`HeadChange.record`) on a freshly built ``model``, before loading.

    Only a same-kind, same-input-width swap of an existing Linear / 1x1 conv is accepted: the record comes from a
    file and never names code to run.
    """
    name, kind = record.get("name"), record.get("kind")
    cin, cout = record.get("in_features"), record.get("out_features")
    ok = (isinstance(name, str) and kind in ("linear", "conv1x1") and isinstance(cin, int) and isinstance(cout, int)
          and cout >= 1)
    try:
        old = model.get_submodule(name) if ok and isinstance(name, str) else None
    except AttributeError:
        old = None
    if old is None or _head_module_ok(old) != kind or _widths(old)[0] != cin:
        raise LoadError.build("recorded head", received=repr(record)[:120],
                              expected="a Linear / 1x1 conv of the architecture with the recorded input width",
                              hint="The bundle's config.json does not describe its model; recreate the bundle.")
    assert isinstance(name, str) and isinstance(cin, int) and isinstance(cout, int) and kind in ("linear", "conv1x1")
    if _widths(old)[1] != cout:
        _set_submodule(model, name, _new_module(kind, cin, cout, old))


def check_only_head_reinitialized(report: LoadReport, head_keys: tuple[str, ...] | list[str] | set[str],
                                  what: str) -> None:
    """Refuse a load that re-initialized anything but the head (a non-fitting ``--arch`` under a partial load)."""
    heads = set(head_keys)
    others = [k for k in report.reinitialized if k not in heads]
    if others:
        shown = ", ".join(others[:3]) + (f" … (+{len(others) - 3})" if len(others) > 3 else "")
        raise LoadError.build(
            what, received=f"{len(others)} of {report.model_tensors} tensors of {report.architecture} that would be "
            f"re-initialized besides the classifier head ({shown})",
            expected="every tensor but the head to come from the file",
            hint="Check --arch (`pthkit identify FILE` ranks the architectures that fit).")


def accepts_num_classes(arch: str) -> bool:
    """Whether the registered builder of ``arch`` takes ``num_classes`` (or ``**kwargs``): then a bundle rebuilds the
    new head from its arguments, otherwise from the recorded head."""
    import inspect

    from pthkit.architectures import get_architecture
    from pthkit.errors import ArchitectureError

    try:
        builder = get_architecture(arch).builder
        params = list(inspect.signature(builder).parameters.values())
    except (ArchitectureError, TypeError, ValueError):
        return False
    return any(p.kind is inspect.Parameter.VAR_KEYWORD or p.name == "num_classes" for p in params)


@dataclass
class HeadedModel:
    """A model opened strictly with its file's head, ready for :meth:`set_classes` (:func:`open_with_classes`)."""

    model: Model  # the pthkit.open handle; ``model.module`` carries the (new) head
    change: HeadChange | None  # None: the head was kept (already that many classes, or not asked)
    head: Head | None
    arch_kwargs: dict[str, Any]  # constructor arguments that rebuild this model (with the new num_classes if taken)
    head_record: dict[str, Any] | None  # for bundles of classes without a num_classes argument
    takes_num_classes: bool = False

    @property
    def module(self) -> nn.Module:
        assert self.model.module is not None
        return self.model.module

    def set_classes(self, num_classes: int) -> HeadChange | None:
        """Give the model a fresh ``num_classes`` head (in place); record how a bundle rebuilds it."""
        change = set_num_classes(self.module, num_classes)
        self.head = find_head(self.module)
        if change is None:
            return None
        self.change = change
        self.model.evidence.append(f"classifier head: {change} (new, random until trained)")
        if self.takes_num_classes:
            self.arch_kwargs["num_classes"] = num_classes
            self.head_record = None
        else:
            self.head_record = change.record()
        return change


def open_with_classes(
    source: str | os.PathLike[str] | nn.Module,
    num_classes: int | None,
    *,
    arch: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    trust: bool = False,
    device: str = "cpu",
    select: str = "auto",
) -> HeadedModel:
    """Open ``source`` strictly with its own head, then give it a ``num_classes`` head (the policy of this module).

    A ``--arch`` that does not fit the file raises :class:`LoadError` from the strict load: nothing but the head is
    ever re-initialized. ``num_classes=None`` keeps the file's head (call :meth:`HeadedModel.set_classes` later).
    """
    from pthkit.api import open as open_model

    handle = open_model(source, arch=arch, arch_kwargs=arch_kwargs, trust=trust, device=device, select=select,
                        check=False)
    module = handle.module
    if module is None:
        raise LoadError.build("model", received=f"{handle.architecture} (no torch module: {handle.source})",
                              expected="a PyTorch model", hint="Start from a weights file or a bundle.")
    file_head = find_head(module)
    if handle.report is not None:  # a strict load re-initializes nothing; say so loudly if that ever changes
        check_only_head_reinitialized(handle.report, file_head.keys if file_head is not None else (),
                                      f"weights {handle.source.path or handle.architecture}")
    kwargs = dict(handle.arch_kwargs)
    takes = accepts_num_classes(handle.architecture)
    if not takes:
        kwargs.pop("num_classes", None)  # the class would refuse it when a bundle rebuilds the model
    headed = HeadedModel(model=handle, change=None, head=file_head, arch_kwargs=kwargs, head_record=None,
                         takes_num_classes=takes)
    if num_classes is not None:
        headed.set_classes(num_classes)
    return headed
