"""What an exported file says about itself: preprocessing (with provenance), labels, architecture, input spec, task,
output names, precision and the pthkit version.

Stored as string key/values: ONNX ``metadata_props``, TorchScript ``_extra_files``, ``.pt2`` ``extra_files`` and
OpenVINO ``rt_info`` all hold ``{"pthkit.<field>": <JSON text>}``. Reading back validates every field (the file is
untrusted input) within a size budget.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pthkit.errors import ExportError

if TYPE_CHECKING:
    from pthkit.input_spec import InputSpec
    from pthkit.model import Model
    from pthkit.preprocess.types import Preprocess

__all__ = ["PREFIX", "ExportMetadata", "metadata_for"]

PREFIX = "pthkit."
# A metadata value larger than this is not pthkit's (22k ImageNet labels are ~400 KB).
_VALUE_BUDGET = 8 * 1024 * 1024


def current_version() -> str:
    try:
        from importlib.metadata import version

        return version("pthkit")
    except Exception:  # noqa: BLE001 - an uninstalled checkout
        import pthkit

        return str(getattr(pthkit, "__version__", "unknown"))


@dataclass
class ExportMetadata:
    """The facts an export carries (see the module docstring); ``to_strings``/``from_strings`` are the file form."""

    architecture: str
    task: str
    input_spec: dict[str, Any]
    preprocess: dict[str, Any] | None = None
    labels: list[str] | None = None
    output_names: list[str] | None = None
    precision: str = "fp32"
    pthkit_version: str = field(default_factory=current_version)
    format: str = "onnx"
    exporter: str | None = None

    def to_strings(self) -> dict[str, str]:
        values: dict[str, Any] = {
            "architecture": self.architecture, "task": self.task, "input_spec": self.input_spec,
            "preprocess": self.preprocess, "labels": self.labels, "output_names": self.output_names,
            "precision": self.precision, "version": self.pthkit_version, "format": self.format,
            "exporter": self.exporter,
        }
        return {PREFIX + k: json.dumps(v) for k, v in values.items() if v is not None}

    @classmethod
    def from_strings(cls, props: dict[str, str], *, where: str) -> ExportMetadata | None:
        """Read :meth:`to_strings` back; ``None`` when the file has no pthkit metadata (exported elsewhere)."""
        ours = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        if "architecture" not in ours:
            return None

        def load(key: str) -> Any:
            text = ours.get(key)
            if text is None:
                return None
            if len(text) > _VALUE_BUDGET:
                raise ExportError.build(f"export metadata {key}", received=f"{len(text)} characters in {where}",
                                        expected=f"at most {_VALUE_BUDGET}")
            try:
                return json.loads(text)
            except ValueError as err:
                raise ExportError.build(f"export metadata {key}", received=f"invalid JSON in {where}",
                                        expected="the JSON pthkit export writes",
                                        hint="Re-export the model with pthkit export.") from err

        def typed(key: str, kind: type | tuple[type, ...], *, optional: bool = True) -> Any:
            value = load(key)
            if value is None and optional:
                return None
            if not isinstance(value, kind):
                raise ExportError.build(f"export metadata {key}", received=f"{type(value).__name__} in {where}",
                                        expected=f"a {kind}")
            return value

        labels = typed("labels", list)
        if labels is not None and not all(isinstance(n, (str, int)) for n in labels):
            raise ExportError.build("export metadata labels", received=f"non-text names in {where}",
                                    expected="a list of names")
        names = typed("output_names", list)
        return cls(
            architecture=str(typed("architecture", str, optional=False)), task=str(typed("task", str) or "raw"),
            input_spec=typed("input_spec", dict) or {}, preprocess=typed("preprocess", dict),
            labels=[str(n) for n in labels] if labels is not None else None,
            output_names=[str(n) for n in names] if names is not None else None,
            precision=str(typed("precision", str) or "fp32"), pthkit_version=str(typed("version", str) or "unknown"),
            format=str(typed("format", str) or "onnx"), exporter=typed("exporter", str),
        )

    def read_preprocess(self, where: str) -> Preprocess | None:
        """The preprocessing, each value's provenance kept and marked as read from ``where``."""
        if self.preprocess is None:
            return None
        from pthkit.preprocess.types import Preprocess

        data = dict(self.preprocess)
        raw = data.get("sources")
        sources: dict[str, Any] = raw if isinstance(raw, dict) else {}
        data["sources"] = {str(k): f"{v} (via {where} metadata)" for k, v in sources.items()}
        data.pop("inference", None)
        try:
            return Preprocess.from_dict(data)
        except Exception as err:  # PreprocessError or a TypeError from an unexpected value
            if isinstance(err, ExportError):
                raise
            raise ExportError.build("export metadata preprocess", received=f"{' '.join(str(err).split())[:120]}",
                                    expected="the preprocessing pthkit export writes") from err

    def read_input_spec(self, where: str) -> InputSpec | None:
        if not self.input_spec:
            return None
        from pthkit.input_spec import InputSpec

        spec = InputSpec.from_dict(self.input_spec)
        return spec.with_feature_names(spec.feature_names, source=f"{spec.source} (via {where} metadata)")


def metadata_for(model: Model, *, format: str, precision: str = "fp32", exporter: str | None = None,
                 output_names: list[str] | None = None) -> ExportMetadata:
    """The metadata an export of ``model`` carries."""
    pre = model.preprocess.to_dict() if model.preprocess is not None else None
    if pre is not None:
        pre.pop("inference", None)
    return ExportMetadata(
        architecture=model.architecture, task=model.task, input_spec=model.input_spec.to_dict(), preprocess=pre,
        labels=list(model.labels) if model.labels else None, output_names=output_names or model.output_names,
        precision=precision, format=format, exporter=exporter,
    )
