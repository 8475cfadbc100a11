"""The engine's seams: what a batch is, what runs a batch (:class:`Backend`), what yields batches (:class:`InputSource`).

These are the interfaces other runtimes and input kinds plug into: a torch module (:class:`~pthkit.engine.TorchBackend`),
an ONNX Runtime or OpenVINO session (``pthkit.engine.backends_onnx`` …) are backends; image files (decoded in a thread
pool or DataLoader workers, :class:`pthkit.data.images.ImageSource`) and tensors/tables (``pthkit.data.tables``) are
input sources. :class:`~pthkit.engine.Engine` joins them: batches in input order, outputs handed through as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import torch

__all__ = ["AMP_MODES", "AmpMode", "Backend", "Batch", "InputSource", "Outputs"]

AmpMode = Literal["bf16", "fp16"]
AMP_MODES: tuple[str, ...] = ("bf16", "fp16")

Outputs = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor] | dict[str, torch.Tensor]
"""What a backend returns for a batch: one tensor, or a tuple/list/dict of tensors (first axis = batch), as the model
returned them. The engine never interprets outputs; the row builders (``pthkit.tasks.predict``, ``pthkit.tasks.outputs``)
do."""


class Batch(NamedTuple):
    """A collated batch of an :class:`InputSource`.

    ``tensors`` stacks the inputs that loaded (``None`` when none did); ``indices`` are their positions in the source
    (same order as ``tensors``' first axis); ``targets`` their labels (``-1`` when unlabelled); ``failed`` the
    ``(index, one-line error)`` of the inputs that did not load. ``finish`` is a batch-level step the engine applies
    after moving ``tensors`` to the backend's device (image sources: uint8 → float + normalization, once per batch);
    ``None`` when ``tensors`` are ready as they are.
    """

    tensors: torch.Tensor | None
    indices: list[int]
    targets: torch.Tensor
    failed: list[tuple[int, str]]
    finish: Callable[[torch.Tensor], torch.Tensor] | None = None


@runtime_checkable
class Backend(Protocol):
    """What runs a batch: torch eager/compiled (:class:`~pthkit.engine.TorchBackend`), ONNX Runtime, OpenVINO …

    - ``name``: ``"torch"``, ``"onnxruntime"``, ``"openvino"`` …
    - ``device``: where input batches must be (the engine moves each batch there before ``finish`` and the call).
    - ``__call__(batch)``: outputs for a float batch (first axis = batch), as torch tensors (CPU is fine), without
      gradients. Called inside ``torch.inference_mode()`` (and ``torch.autocast`` when the engine has ``amp``).
      Must not change the caller's model or global settings (thread counts, warning filters).
    - ``describe()``: JSON-able facts for ``--explain``: name, device, precision, threads, parity (when checked) …
    """

    name: str
    device: torch.device

    def __call__(self, batch: torch.Tensor) -> Outputs: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class InputSource(Protocol):
    """What the engine reads: a known number of inputs, each with a display name, delivered in batches in order.

    ``batches(batch_size)`` yields :class:`Batch` es covering indices ``0 .. len-1`` in increasing order, each index
    exactly once (in ``indices`` or in ``failed``). Image files: :class:`pthkit.data.images.ImageSource`; arrays and
    tables: ``pthkit.data.tables``.
    """

    def __len__(self) -> int: ...

    def name(self, index: int) -> str: ...

    def batches(self, batch_size: int) -> Iterator[Batch]: ...
