"""``--explain``: a concise, human summary of how a model was opened (never the raw config).

:meth:`pthkit.model.Model.describe` says what was loaded, the evidence, the input and the preprocessing; for bundles
this adds the facts their ``config.json`` carries in its ``pthkit`` section, each on one line: where the weights came
from (key map size, source hash), the classifier head replaced, and the training summary. Values from the file are
shown with control characters escaped and never span lines; the caller still prints the text as plain text, not markup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pthkit.cli._safe_text import safe_text

if TYPE_CHECKING:
    from pthkit.model import Model

__all__ = ["explain_text"]


def _training_line(training: dict[str, Any], metrics: dict[str, Any] | None, data: dict[str, Any] | None) -> str:
    parts = [f"{training.get('epochs')} epochs", f"lr {training.get('lr')}", f"batch {training.get('batch_size')}"]
    if isinstance(data, dict):
        parts += [f"{data[k]} {k} images" for k in ("train", "val") if isinstance(data.get(k), int)]
    if isinstance(metrics, dict) and metrics:
        best = [f"{k} {metrics[k]:.4f}" for k in ("val_acc", "val_loss") if isinstance(metrics.get(k), (int, float))]
        parts.append(f"best epoch {metrics.get('epoch')}" + (f" ({', '.join(best)})" if best else ""))
    return "training: " + ", ".join(_one_line(p) for p in parts)


def _one_line(value: object) -> str:
    """A value read from ``config.json`` shown on one line, control characters as escapes (a value holding a newline
    or an escape sequence must not print a line of its own, e.g. a fake "safe")."""
    return safe_text(value, newlines=False)


def explain_text(model: Model) -> str:
    """The ``--explain`` text: :meth:`Model.describe` plus one line per bundle fact (a few dozen lines at most)."""
    lines = model.describe().splitlines()
    section = model.config.get("pthkit") if isinstance(model.config, dict) else None
    if isinstance(section, dict):
        key_map = section.get("key_map")
        if isinstance(key_map, dict):
            lines.append(f"key map: {len(key_map)} renamed keys" if key_map else "key map: none (names matched)")
        sha = section.get("source_sha256")
        if isinstance(sha, str):
            lines.append(f"weights from: {_one_line(section.get('source_path', '?'))} (sha256 {_one_line(sha[:12])}…)")
        if section.get("head_change"):
            lines.append(f"classifier head: {_one_line(section['head_change'])}")
        training = section.get("training")
        if isinstance(training, dict):
            lines.append(_training_line(training, section.get("metrics"), section.get("data")))
        if section.get("version"):
            lines.append(f"bundle written by pthkit {_one_line(section['version'])}")
    return "\n".join(lines)
