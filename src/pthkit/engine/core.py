"""The inference engine: an :class:`InputSource`'s batches through a :class:`Backend`, in input order.

One loop for ``predict``, ``evaluate``, fine-tuning's validation, ``serve`` and the Ray workers. Per batch: move the
tensors to the backend's device (non-blocking; pinned by the source on CUDA), apply the source's batch step
(``Batch.finish``: uint8 → float + normalization once per batch), run the backend inside ``torch.inference_mode``
(and ``torch.autocast`` with ``amp``), and hand the outputs through as the backend returned them (tensor, tuple or
dict). Failed inputs stay in their batch (``Batch.failed``), so callers emit them in place.

The engine changes no global state: no ``torch.set_num_threads`` (thread policy is the caller's; the CLI's is
:func:`pthkit.engine.threads.cli_thread_policy`), and grad mode / autocast are entered per batch, never left on
while the caller holds a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pthkit.engine.backends import as_backend
from pthkit.engine.progress import ProgressBar, RunCounters, publish
from pthkit.engine.types import AMP_MODES, AmpMode, Backend, Batch, InputSource, Outputs
from pthkit.errors import PreprocessError

__all__ = ["Collected", "Engine", "EngineRun", "LoaderSource", "RunInterrupted", "collect", "evaluate_batches",
           "first_tensor"]


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``str()`` is ``"interrupted after N of M images"`` and ``counters`` has the numbers."""

    def __init__(self, counters: RunCounters) -> None:
        super().__init__(counters.note())
        self.counters = counters


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PreprocessError.build("batch_size", received=repr(batch_size), expected="an integer >= 1")
    return batch_size


def _check_amp(amp: object) -> AmpMode | None:
    if amp is not None and amp not in AMP_MODES:
        raise PreprocessError.build("amp", received=repr(amp), expected="bf16, fp16 or None")
    return amp  # type: ignore[return-value]


def _autocast(device: torch.device, amp: AmpMode | None) -> contextlib.AbstractContextManager[Any]:
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


class EngineRun(Iterator[tuple[Batch, Outputs | None]]):
    """The iterator :meth:`Engine.run` returns: ``(batch, outputs)`` pairs; ``outputs`` is ``None`` for a batch whose
    inputs all failed. ``counters`` say how far it got; Ctrl-C raises :class:`RunInterrupted`."""

    def __init__(self, engine: Engine, source: InputSource) -> None:
        self.source = source
        self.counters = RunCounters(len(source), engine.unit)
        self._engine = engine
        self._gen: Iterator[tuple[Batch, Outputs | None]] | None = None

    def __iter__(self) -> EngineRun:
        return self

    def __next__(self) -> tuple[Batch, Outputs | None]:
        if self._gen is None:
            publish(self.counters)
            self._gen = self._engine._iterate(self.source, self.counters)
        try:
            return next(self._gen)
        except KeyboardInterrupt as err:
            if isinstance(err, RunInterrupted):
                raise
            raise RunInterrupted(self.counters) from err

    def close(self) -> None:
        """Stop early: the source's decode pool / workers are shut down."""
        if self._gen is not None:
            self._gen.close()  # type: ignore[attr-defined]


class Engine:
    """Batches of any :class:`InputSource` through a :class:`Backend` (see the module docstring).

    Args:
        backend: a backend, or an ``nn.Module`` (wrapped in :class:`~pthkit.engine.TorchBackend`, which never changes
            it; build the backend yourself for ``device``/``compile``/``features``).
        batch_size: inputs per backend call.
        amp: ``"bf16"``/``"fp16"`` autocast around each call (torch backends), ``None`` for the model's dtype.
        progress: show a progress bar on stderr (``True``), or use this :class:`ProgressBar`.
        unit: what the inputs are called in the progress note (``"images"``, ``"rows"``).

    Raises (at construction, not at the first batch):
        PreprocessError: a bad ``batch_size``/``amp``, or a ``backend`` that is neither a module nor a backend.
    """

    def __init__(self, backend: Backend | nn.Module, *, batch_size: int = 32, amp: AmpMode | None = None,
                 progress: bool | ProgressBar | None = None, unit: str = "inputs", label: str = "predict") -> None:
        self.batch_size = _check_batch_size(batch_size)
        self.amp = _check_amp(amp)
        self.backend: Backend = as_backend(backend)
        self.progress = progress
        self.unit = unit
        self.label = label

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend.describe(), "batch_size": self.batch_size, "amp": self.amp}

    def run(self, source: InputSource) -> EngineRun:
        """``(batch, outputs)`` for every batch of ``source``, in input order (lazy: nothing runs until iterated)."""
        if not isinstance(source, InputSource):
            raise PreprocessError.build("inputs", received=type(source).__name__,
                                        expected="an InputSource (len(), name(i), batches(batch_size))")
        return EngineRun(self, source)

    def forward(self, tensors: torch.Tensor, finish: Any = None) -> Outputs:
        """Run one batch (moved to the backend's device, ``finish`` applied) and return the outputs as they are."""
        device = self.backend.device
        with torch.inference_mode():
            x = tensors.to(device, non_blocking=device.type == "cuda")
            if finish is not None:
                x = finish(x)
            with _autocast(device, self.amp):
                return self.backend(x)

    def _iterate(self, source: InputSource, counters: RunCounters) -> Iterator[tuple[Batch, Outputs | None]]:
        bar: ProgressBar | None
        if isinstance(self.progress, ProgressBar):
            bar = self.progress
        else:
            bar = ProgressBar(self.label, len(source), enabled=bool(self.progress))
        try:
            for batch in source.batches(self.batch_size):
                out = self.forward(batch.tensors, batch.finish) if batch.tensors is not None else None
                counters.add(len(batch.indices) + len(batch.failed), len(batch.failed))
                bar.advance(len(batch.indices) + len(batch.failed))
                yield batch, out
        finally:
            if bar is not self.progress:
                bar.close()


def first_tensor(outputs: Outputs) -> torch.Tensor:
    """The main output of a model: the tensor itself, the first of a tuple/list (``(logits, aux)``), or a dict's
    ``"logits"`` entry (else its first value)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict):
        value = outputs.get("logits", next(iter(outputs.values()), None))
    else:
        value = outputs[0] if len(outputs) else None
    if not isinstance(value, torch.Tensor):
        raise PreprocessError.build("model output", received=type(outputs).__name__,
                                    expected="a tensor, or a tuple/dict whose first entry is a tensor")
    return value


@dataclass
class Collected:
    """Every output of a run, concatenated: ``logits`` (N×K float32, CPU) for ``indices``; ``targets`` (N);
    ``failed`` the ``(index, error)`` of inputs that did not load."""

    logits: torch.Tensor
    targets: torch.Tensor
    indices: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def collect(engine: Engine, source: InputSource) -> Collected:
    """Run ``source`` to the end and keep the main output (:func:`first_tensor`, flattened to N×K) of every input."""
    logits: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    indices: list[int] = []
    failed: list[tuple[int, str]] = []
    for batch, out in engine.run(source):
        failed.extend(batch.failed)
        if out is None:
            continue
        logits.append(first_tensor(out).float().flatten(1).cpu())
        targets.append(batch.targets)
        indices.extend(batch.indices)
    return Collected(
        logits=torch.cat(logits) if logits else torch.zeros(0, 0),
        targets=torch.cat(targets) if targets else torch.zeros(0, dtype=torch.long),
        indices=indices, failed=failed,
    )


class LoaderSource:
    """An :class:`InputSource` over an iterable of ``(inputs, targets)`` batches or ``None`` (a batch that failed
    whole), e.g. fine-tuning's validation DataLoader with ``collate_skip_failed``; ``batch_size`` is the loader's."""

    def __init__(self, loader: Iterable[Any], total: int | None = None) -> None:
        self.loader = loader
        if total is None:
            sampler = getattr(loader, "sampler", None)
            total = len(sampler) if sampler is not None and hasattr(sampler, "__len__") else 0
        self.total = total

    def __len__(self) -> int:
        return self.total

    def name(self, index: int) -> str:
        return f"<batch item {index}>"

    def batches(self, batch_size: int) -> Iterator[Batch]:
        start = 0
        for item in self.loader:
            if item is None:
                continue
            x, y = item
            n = int(x.shape[0])
            yield Batch(x, list(range(start, start + n)), torch.as_tensor(y), [])
            start += n


def evaluate_batches(
    model: nn.Module | Backend,
    batches: InputSource | Iterable[Any],
    *,
    batch_size: int = 64,
    amp: AmpMode | None = None,
    device: str | torch.device | None = None,
    channels_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(logits, targets)`` per batch, both on the model's device, for validation loops (fine-tuning, evaluate).

    ``batches``: an :class:`InputSource` (e.g. :class:`pthkit.data.images.ImageSource` with targets) or an iterable
    of ``(x, y)`` / ``None`` batches (a DataLoader). ``logits`` is the main output (:func:`first_tensor`) as float32
    N×K; inputs that failed to load are left out. The model runs in eval mode for each batch and is handed back with
    its ``training`` flags, device and weights unchanged (a training loop can call this between epochs).
    """
    backend = as_backend(model, device=device, channels_last=channels_last) if isinstance(model, nn.Module) else model
    source = batches if isinstance(batches, InputSource) else LoaderSource(batches)
    engine = Engine(backend, batch_size=batch_size, amp=amp, unit="images", label="validate")
    for batch, out in engine.run(source):
        if out is None:
            continue
        yield first_tensor(out).float().flatten(1), batch.targets.to(backend.device)
