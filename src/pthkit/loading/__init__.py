"""Build an architecture and load a weights file into it, explaining every key: ``load_model`` → ``LoadReport``.

- :func:`load_model` — file or :class:`~pthkit.checkpoint.types.Checkpoint` → ``(model, LoadReport)``.
- :func:`check_fit` — the same matching without copying: does this file fit that architecture, and where not?
- :func:`load_state_into` — the matching core on any ``nn.Module`` and tensor dict (no registry needed).
- :func:`resolve_device` / :func:`resolve_dtype` — ``"auto"`` → cuda > mps > cpu; dtype names.
"""

from __future__ import annotations

from pthkit.loading.api import check_fit, identification_error, load_model
from pthkit.loading.device import DTYPE_NAMES, resolve_device, resolve_dtype
from pthkit.loading.keymap import read_key_map, write_key_map
from pthkit.loading.match import guess_head_keys, load_state_into
from pthkit.loading.report import CAUSES, KeyIssue, LoadReport

__all__ = [
    "load_model",
    "check_fit",
    "load_state_into",
    "LoadReport",
    "KeyIssue",
    "CAUSES",
    "resolve_device",
    "resolve_dtype",
    "DTYPE_NAMES",
    "read_key_map",
    "write_key_map",
    "guess_head_keys",
    "identification_error",
]
