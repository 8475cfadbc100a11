"""``--backend onnxruntime|openvino|auto``: run a torch model through a faster runtime, only when it gives the same
answers.

:func:`apply_backend` exports the model to ONNX once, cached by the weights' sha256 (plus what shapes the graph:
architecture, constructor arguments, input size, torch and pthkit versions) under ``$PTHKIT_CACHE_DIR/exports``
(default ``~/.cache/pthkit/exports``), checks parity on the packaged calibration images and sets ``model.runner``
(``model.module`` is kept). The decision and its parity numbers go to ``model.evidence`` (``--explain``) and to the
runner's ``describe()``.

- ``onnxruntime`` / ``openvino``: that runtime; a parity failure raises :class:`~pthkit.errors.ParityError` (asked
  for explicitly, it is never swapped for something else silently).
- ``auto``: every runtime that is installed, exports and passes parity is timed on a small batch against torch; the
  fastest wins (torch included). When none passes (or the export fails) it stays on torch and says why, in
  ``model.evidence`` and ``model.warnings``. The decision is cached next to the export, so a warm start costs a
  hash and a session load.
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pthkit.errors import ExportError, ParityError, PreprocessError

if TYPE_CHECKING:
    from pthkit.export.parity import ParityReport
    from pthkit.model import Model

__all__ = ["BACKENDS", "apply_backend", "cache_root", "export_key", "cached_onnx"]

BACKENDS: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "auto")
# Images per timed batch and timed repetitions for the auto race (after one warm-up).
_TIMING_BATCH = 8
_TIMING_REPEATS = 3
_DECISION_VERSION = 1


def cache_root() -> Path:
    """``$PTHKIT_CACHE_DIR/exports``, else ``$XDG_CACHE_HOME/pthkit/exports``, else ``~/.cache/pthkit/exports``."""
    env = os.environ.get("PTHKIT_CACHE_DIR")
    if env:
        base = Path(env).expanduser()
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pthkit"
    return base / "exports"


def _weights_digest(model: Model) -> str:
    """sha256 of the weights file when the model came from one, else of the module's tensors (bundles, modules)."""
    digest = model.source.sha256() if model.source.kind == "weights" else None
    if digest is not None:
        return digest
    assert model.module is not None
    h = hashlib.sha256()
    for name, tensor in sorted(model.module.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_key(model: Model) -> str:
    """The cache key of ``model``'s ONNX export (see the module docstring)."""
    from pthkit.export.metadata import current_version

    shape = list(model.preprocess.input_size) if model.preprocess is not None else model.input_spec.to_dict()["shape"]
    facts = {"weights": _weights_digest(model), "arch": model.architecture, "kwargs": repr(sorted(model.arch_kwargs.items())),
             "key_map": repr(sorted(model.key_map.items())), "input": shape, "task": model.task,
             "torch": torch.__version__, "pthkit": current_version()}
    return hashlib.sha256(json.dumps(facts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def cached_onnx(model: Model) -> tuple[Path, list[str]]:
    """The model's ONNX export from the cache, exporting it on a miss; ``(path, evidence lines)``."""
    from pthkit.export.api import cpu_eval_module, example_input, output_names_for
    from pthkit.export.metadata import metadata_for
    from pthkit.export.onnx_export import export_onnx, write_metadata

    folder = cache_root() / export_key(model)
    path = folder / "model.onnx"
    if path.is_file() and (folder / "done").is_file():
        return path, [f"ONNX export from the cache ({folder})"]
    folder.mkdir(parents=True, exist_ok=True)
    module = cpu_eval_module(model)
    example = example_input(model)
    names = output_names_for(model, module, example)
    started = time.perf_counter()
    tmp = folder / f"model.{os.getpid()}.onnx"
    info = export_onnx(module, example, tmp, output_names=names)
    write_metadata(tmp, metadata_for(model, format="onnx", exporter=f"torch.onnx ({info.exporter})",
                                     output_names=names).to_strings())
    os.replace(tmp, path)
    if info.external_data:
        os.replace(tmp.with_name(tmp.name + ".data"), path.with_name(path.name + ".data"))
    (folder / "done").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), encoding="utf-8")
    lines = [f"exported to ONNX with the {info.exporter} exporter in {time.perf_counter() - started:.1f} s, cached "
             f"in {folder}"] + info.notes
    return path, lines


def _make_runner(name: str, path: Path) -> Any:
    if name == "onnxruntime":
        from pthkit.engine.backends_onnx import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path)
    from pthkit.engine.backends_openvino import OpenVINOBackend

    return OpenVINOBackend(path)


def _parity(model: Model, runner: Any) -> ParityReport:
    from pthkit.engine import TorchBackend
    from pthkit.export.parity import check_parity, parity_inputs

    assert model.module is not None
    return check_parity(TorchBackend(model.module), runner, parity_inputs(model), format=runner.name)


def _throughput(fn: Any, batch: torch.Tensor) -> float:
    """Images (or rows) per second: median of a few timed calls after one warm-up."""
    with torch.inference_mode():
        for _ in range(2):  # warm-up: first calls allocate and pick kernels
            fn(batch)
        times = []
        for _ in range(_TIMING_REPEATS):
            start = time.perf_counter()
            fn(batch)
            times.append(time.perf_counter() - start)
    return len(batch) / max(statistics.median(times), 1e-9)


def _decision_file(path: Path) -> Path:
    return path.parent / f"decision-v{_DECISION_VERSION}-t{torch.get_num_threads()}.json"


def apply_backend(model: Model, backend: str) -> None:
    """Run ``model`` with ``backend`` (see the module docstring): sets ``model.runner``, appends evidence.

    Raises:
        PreprocessError: an unknown backend name.
        ExportError: ``onnxruntime``/``openvino`` asked for and the model cannot be exported, or the extra is missing.
        ParityError: ``onnxruntime``/``openvino`` asked for and the export disagrees with torch.
    """
    if backend not in BACKENDS:
        raise PreprocessError.build("--backend", received=repr(backend), expected=" | ".join(BACKENDS))
    if backend == "torch":
        return
    if model.module is None:
        _exported_source(model, backend)
        return
    if backend == "auto":
        _auto(model)
        return
    path, lines = cached_onnx(model)
    runner = _make_runner(backend, path)
    report = _parity(model, runner)
    if not report.passed:
        raise ParityError.build(f"--backend {backend}", received=report.summary(),
                                expected="outputs equal to torch within tolerance",
                                hint="Use --backend torch (or auto, which falls back by itself).")
    runner.parity = report.to_dict()
    model.runner = runner
    model.evidence += lines
    model.evidence.append(f"backend {backend} (given): {report.summary()}")


def _exported_source(model: Model, backend: str) -> None:
    """An exported file already runs with its runner; ``openvino`` may run an ``.onnx`` too."""
    current = model.runner.name if model.runner is not None else "none"
    if backend == "openvino" and current != "openvino" and model.source.path is not None:
        model.runner = _make_runner("openvino", model.source.path)
        model.evidence.append(f"backend openvino (given) runs {model.source.path.name}")
    elif backend == "auto":
        model.evidence.append(f"backend auto: {current} (an exported file: no torch model to compare or race)")
    elif backend != current:
        raise ExportError.build(f"--backend {backend}", received=f"an exported {model.source.kind} file",
                                expected=f"--backend {current} or auto for this file")


def _auto(model: Model) -> None:
    """Race the runtimes that pass parity against torch; keep the fastest; say why."""
    try:
        path, lines = cached_onnx(model)
    except Exception as err:  # noqa: BLE001 - any export failure means: stay on torch, and say why
        why = " ".join(str(err).split())[:200]
        model.evidence.append(f"backend auto: torch (the ONNX export failed: {why})")
        model.warnings.append(f"--backend auto stayed on torch: the ONNX export failed ({why})")
        return
    model.evidence += lines
    decision_path = _decision_file(path)
    decision = _read_decision(decision_path)
    if decision is None:
        decision = _race(model, path)
        decision_path.write_text(json.dumps(decision, indent=1), encoding="utf-8")
        cached = ""
    else:
        cached = " (decision cached)"
    chosen = decision["chosen"]
    speeds = ", ".join(f"{k} {v:.0f}/s" for k, v in decision["speed"].items())
    for name, why in decision["rejected"].items():
        model.evidence.append(f"backend auto: {name} rejected ({why})")
    if chosen == "torch":
        reason = decision.get("reason") or "torch was fastest"
        model.evidence.append(f"backend auto: torch{cached}: {reason} [{speeds}]")
        if decision["rejected"] and not decision["speed"].keys() - {"torch"}:
            model.warnings.append(f"--backend auto stayed on torch: {reason}")
        return
    runner = _make_runner(chosen, path)
    runner.parity = decision["parity"][chosen]
    model.runner = runner
    model.evidence.append(f"backend auto: {chosen}{cached}, fastest that passed parity [{speeds}]; "
                          f"{decision['summary'][chosen]}")


def _read_decision(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == _DECISION_VERSION else None


def _race(model: Model, path: Path) -> dict[str, Any]:
    from pthkit.engine import TorchBackend
    from pthkit.export.parity import parity_inputs

    assert model.module is not None
    batch = parity_inputs(model)[0][1][:_TIMING_BATCH]
    decision: dict[str, Any] = {"version": _DECISION_VERSION, "rejected": {}, "speed": {}, "parity": {},
                                "summary": {}}
    decision["speed"]["torch"] = _throughput(TorchBackend(model.module), batch)
    for name in ("onnxruntime", "openvino"):
        try:
            runner = _make_runner(name, path)
            report = _parity(model, runner)
        except Exception as err:  # noqa: BLE001 - a missing extra or a runtime that cannot run the graph
            decision["rejected"][name] = " ".join(str(err).split())[:160]
            continue
        if not report.passed:
            decision["rejected"][name] = report.summary()
            continue
        decision["parity"][name] = report.to_dict()
        decision["summary"][name] = report.summary()
        decision["speed"][name] = _throughput(runner, batch)
    passing = {k: v for k, v in decision["speed"].items()}
    chosen = max(passing, key=lambda k: passing[k])
    decision["chosen"] = chosen
    if chosen == "torch":
        decision["reason"] = ("no runtime passed parity" if len(passing) == 1 and decision["rejected"]
                              else "torch was fastest on this machine")
    return decision
