"""Batched prediction over image files: decode in threads (CPU) or DataLoader workers, run the model in batches.

What makes it fast (measured in ``benchmarks/predict.py``):

- on CPU, decoding runs in threads of this process (PIL releases the GIL) at a lower priority, a batch ahead of
  the model, which gets fewer intra-op threads while other processes hold cores (see ``_CpuPlan``); the
  per-image part ends at a uint8 tensor and the float conversion + normalization run once per batch;
- on GPU (or with ``workers=N``), decoding runs in DataLoader worker processes (one torch thread each);
- large JPEGs are decoded at a reduced size (libjpeg DCT scaling, see :func:`pthkit.images.open_image`) when the
  preprocessing resizes them far down anyway;
- ``torch.inference_mode``, channels_last memory format, optional bf16/fp16 autocast and ``torch.compile``.

Outputs: softmax top-k (default), sigmoid labels over a threshold (multi-label), raw logits, and pooled features
(the classifier's input), one :class:`Prediction` per input in input order; a failed image gives a Prediction with
``error`` set and the run goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from pthkit.errors import InputNotFoundError, PreprocessError
from pthkit.images import expand_inputs
from pthkit.images.dataset import (
    Batch,
    ImageListDataset,
    collate_samples,
    draft_size_for,
    split_transform,
    worker_init,
)
from pthkit.labels import resolve_label_names

__all__ = [
    "OutputMode",
    "AmpMode",
    "ClassScore",
    "Prediction",
    "predict",
    "auto_workers",
    "auto_decode_threads",
    "save_features",
    "FeatureExtractor",
]

OutputMode = Literal["softmax", "sigmoid", "logits"]
AmpMode = Literal["bf16", "fp16"]
OUTPUT_MODES: tuple[str, ...] = ("softmax", "sigmoid", "logits")
AMP_MODES: tuple[str, ...] = ("bf16", "fp16")

# Below this many inputs, starting worker processes costs more than decoding in the main process.
_MIN_INPUTS_FOR_WORKERS = 16
_MAX_WORKERS = 8
# From this many inputs on, a CPU run decodes in threads beside the model (below: inline, in the main thread).
_MIN_INPUTS_FOR_THREADS = 2


@dataclass(frozen=True)
class ClassScore:
    """One class of a prediction: its output index, name (or ``None``) and score (probability, or logit)."""

    index: int
    label: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "score": round(self.score, 6)}

    def __str__(self) -> str:
        name = self.label if self.label is not None else f"class {self.index}"
        return f"{name} ({self.score:.3f})"


@dataclass
class Prediction:
    """What the model said about one input.

    ``classes``: the top-k classes (softmax probabilities, or logits in ``"logits"`` mode), or every class whose
    sigmoid probability reaches the threshold (``"sigmoid"`` mode), best first. ``logits`` holds the full output
    vector in ``"logits"`` mode (as a list; ``raw_logits`` keeps it as an array in every mode); ``features`` the pooled
    embedding when asked. ``error`` is set (and the rest empty)
    when the input could not be read.
    """

    path: str
    index: int
    mode: str = "softmax"
    classes: list[ClassScore] = field(default_factory=list)
    logits: list[float] | None = None
    features: np.ndarray | None = None
    error: str | None = None
    raw_logits: np.ndarray | None = field(default=None, repr=False)
    """The model's output vector (float32) in every mode, for checks such as ``check_predictions_sane``."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def top1(self) -> ClassScore | None:
        return self.classes[0] if self.classes else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "ok": self.ok}
        if self.error is not None:
            out["error"] = self.error
            return out
        out["mode"] = self.mode
        out["classes"] = [c.to_dict() for c in self.classes]
        if self.logits is not None:
            out["logits"] = [round(v, 6) for v in self.logits]
        if self.features is not None:
            out["features_dim"] = int(self.features.shape[-1])
        return out

    def __str__(self) -> str:
        if self.error is not None:
            return f"{self.path}: FAILED {self.error}"
        return f"{self.path}: " + ", ".join(str(c) for c in self.classes)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers(num_inputs: int, device_type: str = "cpu") -> int:
    """DataLoader workers for ``num_inputs`` images: none for a handful; else, when the model runs on the CPU too, a
    quarter of the cores (at least 1: with reduced-size JPEG decoding, decoding costs far less than the model), and
    one per core (up to 8) when the model runs on an accelerator.

    Measured on the 2-core machine (benchmarks/predict.py, quiet): 1 worker + 2 model threads ≈ 2 workers + 2 threads
    (38-43 vs 36-41 img/s), both far above 1 model thread (27-31 img/s), so the model keeps every core.
    """
    if num_inputs < _MIN_INPUTS_FOR_WORKERS:
        return 0
    cores = _cores()
    if device_type == "cpu":
        return max(1, min(_MAX_WORKERS, cores // 4))
    return max(1, min(cores, _MAX_WORKERS))


def auto_decode_threads() -> int:
    """Decoding threads for a CPU run: half the cores, at least 1 (PIL's decode and resize release the GIL)."""
    return max(1, min(_MAX_WORKERS, _cores()))


# Niceness added to each decoding thread (Linux). Measured (lite0, 80 images, 2 cores, img/s): idle machine, decoding
# alternating with a 2-thread model 50, niced-5 decoding beside it 56 (niced 19: 57); one core held by another
# process: 28.6 (niced 19: 27.0) vs 28.4.
DECODE_NICENESS = 5


def _lower_priority() -> None:
    """Make the calling decoding thread yield to the model's threads (Linux: a thread is a schedulable task).

    Decoding then fills the cores' idle moments (the model's serial parts and barriers) instead of preempting the
    model's OpenMP threads, which would stall every thread of the model at its next barrier. Hand-written: neither
    concurrent.futures nor torch sets thread priorities. Best effort: skipped where it is not supported.
    """
    if not sys.platform.startswith("linux"):
        return  # elsewhere setpriority(PRIO_PROCESS, thread id) is not per-thread
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + DECODE_NICENESS)
    except (OSError, AttributeError):
        pass


def _thread_batches(dataset: ImageListDataset, batch_size: int, threads: int, plan: "_CpuPlan") -> Iterator[Batch]:
    """Batches of ``dataset`` decoded by a pool of (lower-priority) threads, in order, a batch ahead of the consumer.

    Why threads and not DataLoader worker processes on CPU: no worker process to start (a fixed cost that is a large
    part of a short run), no pickling of tensors between processes, and the first batch can start as soon as its own
    images are decoded. The per-image work is PIL code (JPEG decode, resize, crop) that releases the GIL, so the
    threads run beside the model's intra-op threads.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = len(dataset)
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="pthkit-decode", initializer=_lower_priority)
    futures: dict[int, Any] = {}
    submitted = 0
    try:
        for start in range(0, n, batch_size):
            end = min(n, start + batch_size)
            ahead = plan.ahead(batch_size, threads)
            while submitted < min(n, end + ahead):  # this batch, and `ahead` images beyond it
                futures[submitted] = pool.submit(dataset.__getitem__, submitted)
                submitted += 1
            samples = []
            for i in range(start, end):
                samples.append(futures.pop(i).result())
                if submitted < min(n, end + ahead):
                    futures[submitted] = pool.submit(dataset.__getitem__, submitted)
                    submitted += 1
            yield collate_samples(samples)
    finally:  # also when the caller stops early: drop what is queued, wait only for what is running
        pool.shutdown(wait=True, cancel_futures=True)


def _machine_busy() -> tuple[float, float] | None:
    """(CPU seconds used by all processes, by this process) so far, or ``None`` where ``/proc/stat`` is missing."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), time.process_time()


class _CpuPlan:
    """How many intra-op threads the model gets on a CPU run, re-decided before every batch.

    The model gets every thread torch is set to use, except while other processes hold cores: then only the cores
    they leave free. A model with as many OpenMP threads as cores while another process holds one stalls at every
    barrier waiting for a thread that is not scheduled (measured 2.5-3x slower on the 2-core machine under load:
    lite0 11 img/s with 2 threads vs 29 with 1). Decoding threads run beside the model at a lower priority
    (``DECODE_NICENESS``) and decode up to a batch ahead.

    The other processes' CPU use is read from ``/proc/stat`` minus this process's own CPU time over the previous
    batch (free, no probing; elsewhere the thread count is left alone). Hand-written: no library picks intra-op
    threads at run time.
    """

    def __init__(self, threads: int, adapt: bool) -> None:
        self.full = max(1, threads)
        self.current = self.full
        self.cores = _cores()
        # /proc/stat counts every CPU of the machine: only meaningful when this process may run on all of them
        self.adapt = adapt and self.full > 1 and self.cores == (os.cpu_count() or self.cores)
        self._last: tuple[float, float, float] | None = None
        self._sample()

    def _sample(self) -> float | None:
        """Cores used by other processes since the previous sample (``None`` the first time / when unknown)."""
        if not self.adapt:
            return None
        now = _machine_busy()
        if now is None:
            self.adapt = False
            return None
        wall = time.perf_counter()
        last, self._last = self._last, (wall, *now)
        if last is None or wall - last[0] < 0.05:
            return None
        return max(0.0, (now[0] - last[1]) - (now[1] - last[2])) / (wall - last[0])

    def ahead(self, batch_size: int, decode_threads: int) -> int:
        """Images to decode beyond the batch being assembled."""
        return batch_size + decode_threads

    def before_forward(self) -> None:
        others = self._sample()
        if others is not None:
            self.current = max(1, min(self.full, round(self.cores - others)))
        if torch.get_num_threads() != self.current:
            torch.set_num_threads(self.current)


class FeatureExtractor:
    """Run a classifier and also return its pooled embedding (the classifier's input).

    timm models: ``forward_features`` then ``forward_head(pre_logits=True)`` (timm's documented API). Other models
    (torchvision …): a forward hook captures the input of the last ``nn.Linear`` — the classifier in every
    torchvision classification model; hand-written because torchvision has no pre-logits API.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._timm = callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_head", None))
        self._captured: torch.Tensor | None = None
        self._hook = None
        if not self._timm:
            linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
            if not linears:
                raise PreprocessError.build(
                    "features", received=f"a {type(model).__name__} without an nn.Linear classifier",
                    expected="a timm model or a classifier ending in nn.Linear",
                    hint="Drop --features or load a classification model.",
                )
            self._hook = linears[-1].register_forward_hook(self._capture)

    def _capture(self, _module: nn.Module, args: tuple[Any, ...], _out: Any) -> None:
        self._captured = args[0]

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self._timm:
            feats = self.model.forward_features(x)
            pooled = self.model.forward_head(feats, pre_logits=True)
            return self.model.forward_head(feats), pooled.flatten(1)
        self._captured = None
        logits = self.model(x)
        if self._captured is None:
            raise PreprocessError.build(
                "features", received="a model whose last nn.Linear did not run", expected="a classifier head",
                hint="Drop --features.",
            )
        return logits, self._captured.flatten(1)

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def _resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is None:
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
        device = "auto"
    try:
        from pthkit.loading.device import resolve_device
    except ImportError:  # pragma: no cover - the loading package is part of pthkit
        return torch.device("cpu" if device == "auto" else device)
    return resolve_device(device)


def _transform_of(preprocess: Any) -> Callable[[Image.Image], torch.Tensor]:
    if hasattr(preprocess, "transform") and callable(preprocess.transform):
        return preprocess.transform()
    if callable(preprocess):
        return preprocess
    raise PreprocessError.build(
        "preprocess", received=type(preprocess).__name__,
        expected="a pthkit Preprocess (resolve_preprocess) or a callable PIL image -> tensor",
        hint="Build it with pthkit.resolve_preprocess(model).",
    )


def _autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager[Any]:
    if amp is None:
        return contextlib.nullcontext()
    if amp not in AMP_MODES:
        raise PreprocessError.build("amp", received=repr(amp), expected="bf16, fp16 or None")
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX512-BF16 or AMX); elsewhere bf16 autocast is slow."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(check() for check in checks if callable(check))


def _input_name(item: Any, index: int) -> str:
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<image {index}>"
    return str(item)


def predict(
    model: nn.Module,
    preprocess: Any,
    inputs: Sequence[str | os.PathLike[str] | Image.Image] | str | os.PathLike[str],
    *,
    batch_size: int = 32,
    workers: int | None = None,
    top_k: int = 5,
    mode: OutputMode = "softmax",
    threshold: float = 0.5,
    features: bool = False,
    amp: AmpMode | None = None,
    channels_last: bool = True,
    compile: bool = False,  # noqa: A002 - the name matches torch.compile and the CLI flag
    device: str | torch.device | None = None,
    progress: bool = False,
    labels: Sequence[str] | str | os.PathLike[str] | None = None,
    draft: bool = True,
    threads: int | None = None,
) -> Iterator[Prediction]:
    """Predict every input; yields one :class:`Prediction` per input, in input order, as batches finish.

    Args:
        model: a classification model (``load_model``'s result); put in eval mode here.
        preprocess: a :class:`pthkit.preprocess.Preprocess` (its ``transform()`` is used, and its ``resize_size``
            sets reduced-size JPEG decoding) or any callable PIL RGB image → CHW float tensor.
        inputs: paths, folders, globs, ``@list.txt``, ``-`` (see :func:`pthkit.images.expand_inputs`) or PIL images.
        batch_size: images per forward pass.
        workers: DataLoader worker processes (0 = decode in the main thread). ``None`` (default): for a CPU model,
            decoding threads in this process, sharing the cores with the model batch by batch (see ``_CpuPlan``);
            for a GPU model, :func:`auto_workers` processes.
        top_k: classes kept per input in ``"softmax"`` / ``"logits"`` modes.
        mode: ``"softmax"`` (single-label probabilities), ``"sigmoid"`` (multi-label: every class with probability
            ≥ ``threshold``) or ``"logits"`` (raw outputs, full vector kept).
        features: also return the pooled embedding (input of the classifier) in ``Prediction.features``.
        amp: ``"bf16"`` / ``"fp16"`` autocast (CPU or GPU); ``None`` runs in the model's dtype.
        channels_last: use the channels_last memory format (faster convolutions on CPU and GPU).
        compile: ``torch.compile`` the model first (slow start, faster long runs; needs a C++ compiler on CPU).
        device: where to run; ``None`` = where the model's weights are.
        progress: show a progress bar on stderr.
        labels: class names (a list or a file) overriding the preprocess/bundle names and ImageNet's.
        draft: allow reduced-size JPEG decoding (``False`` decodes every image in full).
        threads: torch intra-op threads during this run (restored after). ``None``: torch's setting, lowered for a
            batch while other processes hold cores (CPU model, ``workers=None``; measured 2.5-3x faster then).

    Raises:
        InputNotFoundError: no inputs. (A missing or unreadable *single* input is reported in its Prediction.)
        PreprocessError: invalid ``mode``/``amp``/``top_k``, or ``labels`` that do not match the model's outputs.
    """
    if mode not in OUTPUT_MODES:
        raise PreprocessError.build("output mode", received=repr(mode), expected="softmax, sigmoid or logits")
    if top_k < 1:
        raise PreprocessError.build("top_k", received=str(top_k), expected="an integer ≥ 1")
    if batch_size < 1:
        raise PreprocessError.build("batch_size", received=str(batch_size), expected="an integer ≥ 1")
    if amp is not None and amp not in AMP_MODES:
        raise PreprocessError.build("amp", received=repr(amp), expected="bf16, fp16 or None")

    if isinstance(inputs, (str, os.PathLike)) or (
        isinstance(inputs, Sequence) and not all(isinstance(i, Image.Image) for i in inputs)
    ):
        items: list[Any] = []
        for item in [inputs] if isinstance(inputs, (str, os.PathLike)) else inputs:
            items.extend([item] if isinstance(item, Image.Image) else expand_inputs([item]))
    else:
        items = list(inputs)
    if not items:
        raise InputNotFoundError.build("images", received="no inputs", expected="at least one image")

    dev = _resolve_device(model, device)
    model = model.eval().to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    extractor = FeatureExtractor(model) if features else None
    forward: Callable[[torch.Tensor], Any] = extractor if extractor is not None else model
    if compile:
        forward = torch.compile(forward)

    per_image, batch_tail = split_transform(_transform_of(preprocess))
    dataset = ImageListDataset(items, per_image, draft_size=draft_size_for(preprocess) if draft else None)
    plan: _CpuPlan | None = None
    if workers is None and dev.type == "cpu" and len(items) >= _MIN_INPUTS_FOR_THREADS:
        plan = _CpuPlan(threads if threads is not None else torch.get_num_threads(), adapt=threads is None)
        loader: Any = _thread_batches(dataset, batch_size, auto_decode_threads(), plan)
    else:
        n_workers = auto_workers(len(items), dev.type) if workers is None else max(0, int(workers))
        n_workers = min(n_workers, (len(items) + batch_size - 1) // batch_size)  # an idle worker only costs start-up
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=n_workers,
            collate_fn=collate_samples,
            pin_memory=dev.type == "cuda",
            worker_init_fn=worker_init if n_workers else None,
            prefetch_factor=4 if n_workers else None,
        )
    known = getattr(preprocess, "label_names", None)
    names: list[str] | None = None
    names_resolved = False
    k = top_k

    bar = _progress(len(items)) if progress else None
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))  # for this run only; restored below
    try:
        with torch.inference_mode():
            for batch in loader:
                batch: Batch
                rows: dict[int, Prediction] = {
                    idx: Prediction(path=_input_name(items[idx], idx), index=idx, mode=mode, error=err)
                    for idx, err in batch.failed
                }
                if batch.tensors is not None:
                    x = batch.tensors.to(dev, non_blocking=True)
                    if channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    if batch_tail is not None:  # uint8 -> float, normalize: once per batch, on the model's device
                        x = batch_tail(x)
                    param = next(model.parameters(), None)
                    if amp is None and param is not None and param.is_floating_point() and x.dtype != param.dtype:
                        x = x.to(param.dtype)
                    if plan is not None:
                        plan.before_forward()
                    with _autocast(dev, amp):
                        out = forward(x)
                    logits, pooled = out if extractor is not None else (out, None)
                    if isinstance(logits, (tuple, list)):  # models returning (logits, aux)
                        logits = logits[0]
                    logits = logits.float().flatten(1).cpu()
                    if not names_resolved:
                        names, _ = resolve_label_names(logits.shape[1], labels=labels, known=known)
                        names_resolved = True
                        k = min(top_k, logits.shape[1])
                    pooled_np = pooled.float().cpu().numpy() if pooled is not None else None
                    rows.update(_interpret(logits, batch.indices, items, names, mode, k, threshold, pooled_np))
                for idx in sorted(rows):
                    yield rows[idx]
                if bar is not None:
                    bar[0].advance(bar[1], len(batch.indices) + len(batch.failed))
    finally:
        if torch.get_num_threads() != previous_threads:
            torch.set_num_threads(previous_threads)
        if bar is not None:
            bar[0].stop()
        if extractor is not None:
            extractor.close()


def _interpret(
    logits: torch.Tensor,
    indices: list[int],
    items: Sequence[Any],
    names: list[str] | None,
    mode: str,
    k: int,
    threshold: float,
    pooled: np.ndarray | None,
) -> dict[int, Prediction]:
    def label(i: int) -> str | None:
        return names[i] if names is not None and i < len(names) else None

    rows: dict[int, Prediction] = {}
    if mode == "sigmoid":
        probs = torch.sigmoid(logits)
    elif mode == "softmax":
        probs = torch.softmax(logits, dim=1)
    else:
        probs = logits
    top_vals, top_idx = probs.topk(k, dim=1) if mode != "sigmoid" else (None, None)
    raw = logits.numpy()
    for row, idx in enumerate(indices):
        if mode == "sigmoid":
            over = (probs[row] >= threshold).nonzero().flatten().tolist()
            over.sort(key=lambda i: -float(probs[row, i]))
            classes = [ClassScore(i, label(i), float(probs[row, i])) for i in over]
        else:
            classes = [
                ClassScore(int(i), label(int(i)), float(v))
                for v, i in zip(top_vals[row].tolist(), top_idx[row].tolist())  # type: ignore[index]
            ]
        rows[idx] = Prediction(
            path=_input_name(items[idx], idx),
            index=idx,
            mode=mode,
            classes=classes,
            logits=logits[row].tolist() if mode == "logits" else None,
            features=pooled[row] if pooled is not None else None,
            raw_logits=raw[row],
        )
    return rows


def _progress(total: int) -> tuple[Any, Any]:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True,
    )
    task = bar.add_task("predict", total=total)
    bar.start()
    return bar, task


def save_features(predictions: Sequence[Prediction], path: str | os.PathLike[str]) -> list[Path]:
    """Write the features of the successful predictions to ``.npy`` or ``.safetensors``; returns the files written.

    Row ``i`` is the ``i``-th successful input. ``.safetensors`` stores the paths in its metadata (``"paths"``, a
    JSON list); ``.npy`` gets a ``<name>.paths.txt`` beside it with one path per line.

    Raises:
        PreprocessError: unknown extension, or no prediction carries features.
    """
    path = Path(path)
    rows = [p for p in predictions if p.ok and p.features is not None]
    suffix = path.suffix.lower()
    if suffix not in (".npy", ".safetensors"):
        raise PreprocessError.build(
            "features file", received=repr(str(path)), expected="a name ending in .npy or .safetensors",
            hint="e.g. --features out.npy",
        )
    if not rows:
        raise PreprocessError.build(
            "features", received="no successful prediction with features", expected="at least one image that decoded",
        )
    array = np.stack([p.features for p in rows]).astype(np.float32)  # type: ignore[misc]
    paths = [p.path for p in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npy":
        np.save(path, array)
        sidecar = path.with_name(path.stem + ".paths.txt")
        sidecar.write_text("".join(p + "\n" for p in paths), encoding="utf-8")
        return [path, sidecar]
    from safetensors.numpy import save_file

    save_file({"features": array}, str(path), metadata={"paths": json.dumps(paths), "format": "pthkit-features"})
    return [path]
