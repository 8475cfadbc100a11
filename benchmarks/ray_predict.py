"""Ray Data batch prediction vs local ``predict`` on the same folder, side by side in one run.

    python benchmarks/ray_predict.py [--copies 3] [--repeats 3] [--model resnet18] [--batch-size 32]

On the benchmark JPEG folder (80 × copies mixed-size JPEGs from the installed packages' sample photos; 60% under
0.5 MP, 30% near 2 MP, 10% near 12 MP), with a random-init timm model saved as a bundle (224 px):

- local ``Model.predict`` after the CLI's thread policy (what ``pthkit predict`` runs);
- ``pthkit.integrations.ray.predict_dataset`` on a local cluster (``ray.init(num_cpus=<cores>)``, started once and
  reported separately) with 1 and then 2 actors (one CPU each, so Ray gives each actor one torch thread);

interleaved (local, 1 actor, 2 actors, then again) so that the machine's load, which other jobs change, falls on
every configuration alike. Each run is timed whole (a Ray run includes starting its actors and loading the model in
each), and split into the time to the first batch of rows and the steady rate after it. Also measured: the model
alone on random input (1 thread, the same batch size), the ceiling of one actor. Medians of ``--repeats``; the load
average is read before every run. Writes the measured part of benchmarks/results/ray.md; text after the
``<!-- plan -->`` line of that file (the written cluster plan) is kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _predict_data  # noqa: E402
from _machine import cpu_name, memory_gib  # noqa: E402

PLAN_MARKER = "<!-- plan -->"


@dataclass
class Runs:
    """The timings of one configuration: whole-run images/s, time to first rows (s), steady images/s, load."""

    name: str
    rate: list[float] = field(default_factory=list)
    first: list[float] = field(default_factory=list)
    steady: list[float] = field(default_factory=list)
    load: list[float] = field(default_factory=list)

    def add(self, n: int, started: float, first_at: float, first_rows: int, ended: float, load: float) -> None:
        self.rate.append(n / (ended - started))
        self.first.append(first_at - started)
        rest = ended - first_at
        self.steady.append((n - first_rows) / rest if rest > 0 and n > first_rows else float("nan"))
        self.load.append(load)


def _model(folder: Path, arch: str) -> Path:
    import timm
    import torch

    from pthkit.api import open as open_model
    from pthkit.bundle import save_bundle

    out = folder / f"{arch}-bundle"
    if not (out / "model.safetensors").exists():
        torch.manual_seed(0)
        weights = folder / f"{arch}.pth"
        torch.save(timm.create_model(arch).state_dict(), weights)
        handle = open_model(weights, arch=f"timm:{arch}", device="cpu", check=False)
        assert handle.module is not None
        save_bundle(handle.module, out, architecture=f"timm:{arch}", preprocess=handle.preprocess)
    return out


def _model_only(model: Path, batch_size: int) -> float:
    """Images/s of the model alone on random 224 px input, 1 thread (one Ray actor's ceiling)."""
    import torch

    from pthkit.api import open as open_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        module = open_model(model, device="cpu").module
        assert module is not None
        x = torch.randn(batch_size, 3, 224, 224)
        with torch.inference_mode():
            module(x)
            rates = []
            for _ in range(3):
                t = time.perf_counter()
                module(x)
                rates.append(batch_size / (time.perf_counter() - t))
        return statistics.median(rates)
    finally:
        torch.set_num_threads(before)


def _local(handle: Any, paths: list[str], batch_size: int, runs: Runs) -> None:
    load = os.getloadavg()[0]
    t = time.perf_counter()
    first_at, n, failed = 0.0, 0, 0
    for row in handle.predict(paths, batch_size=batch_size):
        n += 1
        failed += not row.ok
        if n == 1:
            first_at = time.perf_counter()
    runs.add(n, t, first_at, 1, time.perf_counter(), load)
    assert n == len(paths) and not failed, f"{failed} of {n} images failed: the benchmark folder is broken"


def _ray(paths: list[str], model: Path, actors: int, batch_size: int, runs: Runs) -> None:
    from pthkit.integrations.ray import predict_dataset, read_inputs

    load = os.getloadavg()[0]
    t = time.perf_counter()
    out = predict_dataset(read_inputs(paths), model, num_actors=actors, batch_size=batch_size,
                          open_options={"device": "cpu"})
    n, first_at, first_rows, failed = 0, 0.0, 0, 0
    for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
        n += batch.num_rows
        failed += batch.num_rows - sum(bool(v) for v in batch.column("ok").to_pylist())
        if not first_rows:
            first_at, first_rows = time.perf_counter(), batch.num_rows
    runs.add(n, t, first_at, first_rows, time.perf_counter(), load)
    assert n == len(paths) and not failed, f"{failed} of {n} images failed: the benchmark folder is broken"


def _fmt(values: list[float], digits: int = 1) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="resnet18", help="a timm architecture (random init)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "ray.md")
    args = parser.parse_args()
    wall = time.perf_counter()
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

    work = HERE / "_work"
    paths = [str(p) for p in _predict_data.build(work / "jpegs", copies=args.copies)]
    megapixels = 0.0
    for p in paths:
        w, h = (int(v) for v in Path(p).stem.rsplit("_", 1)[1].split("x"))
        megapixels += w * h / 1e6
    model = _model(work, args.model)
    n = len(paths)

    from pthkit.api import open as open_model
    from pthkit.engine.threads import cli_thread_policy

    threads = cli_thread_policy()  # what `pthkit predict` decides before a run
    handle = open_model(model, device="cpu")
    ceiling = _model_only(model, args.batch_size)

    import ray
    import ray.data

    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t
    ray.data.DataContext.get_current().enable_progress_bars = False
    configs = [Runs("local `pthkit predict` (`Model.predict`)"), Runs("Ray Data, 1 actor"), Runs("Ray Data, 2 actors")]
    _ray(paths[:8], model, 1, args.batch_size, Runs("warm-up"))  # first-use costs of Ray Data, not of a config
    for r in range(args.repeats):
        _local(handle, paths, args.batch_size, configs[0])
        _ray(paths, model, 1, args.batch_size, configs[1])
        _ray(paths, model, 2, args.batch_size, configs[2])
        print(f"repeat {r + 1}: " + "; ".join(f"{c.name}: {c.rate[-1]:.2f} img/s" for c in configs), flush=True)
    ray.shutdown()
    load_end = os.getloadavg()

    local = statistics.median(configs[0].rate)
    lines = [
        "# Ray Data batch prediction vs local predict (`benchmarks/ray_predict.py`)",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M %Z')}; machine: {cpu_name()}, {os.cpu_count()} cores, "
        f"{memory_gib():.0f} GiB; Python {platform.python_version()}, Ray {ray.__version__}; shared with other "
        f"jobs: 1-min load average before each run {min(min(c.load) for c in configs):.1f}-"
        f"{max(max(c.load) for c in configs):.1f}, at the end {load_end[0]:.1f} / {load_end[1]:.1f} / "
        f"{load_end[2]:.1f} (1 / 5 / 15 min).",
        f"- {n} JPEGs ({megapixels:.0f} MP in all: 60% under 0.5 MP, 30% near 2 MP, 10% near 12 MP), timm "
        f"{args.model} (random init, 224 px), batch {args.batch_size}; {args.repeats} interleaved repeats, medians.",
        f"- Local: {threads.threads} torch thread(s) ({threads.reason}) and the engine's decoding workers. Ray: a "
        f"local cluster of {os.cpu_count()} CPUs; an actor takes 1 CPU, so 1 torch thread and 1 decoding thread; "
        f"each run starts its actors (model loaded in each) and is timed from `predict_dataset` to the last row.",
        f"- Cluster start (`ray.init`, once): {start_s:.1f} s, not counted below. Model alone, 1 thread, "
        f"batch {args.batch_size}, random input: {ceiling:.1f} images/s (one actor's ceiling).",
        "",
        "| run | images/s (median) | vs local | time to first rows, s | steady images/s after them | "
        "images/s per repeat | load before each |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in configs:
        med = statistics.median(c.rate)
        lines.append(f"| {c.name} | {med:.2f} | {med / local:.2f}× | {statistics.median(c.first):.1f} | "
                     f"{statistics.median(c.steady):.2f} | {_fmt(c.rate, 2)} | {_fmt(c.load)} |")
    ray1, ray2 = (statistics.median(c.rate) for c in configs[1:])
    lines += [
        "",
        f"Ray's overhead against local (local time / Ray time): 1 actor {ray1 / local:.2f}×, 2 actors "
        f"{ray2 / local:.2f}×; 2 actors vs 1: {ray2 / ray1:.2f}×. Whole benchmark: "
        f"{time.perf_counter() - wall:.0f} s wall.",
        "",
    ]
    plan = ""
    if args.out.exists():
        old = args.out.read_text(encoding="utf-8")
        if PLAN_MARKER in old:
            plan = old[old.index(PLAN_MARKER):]
    text = "\n".join(lines) + ("\n" + plan if plan else "")
    args.out.parent.mkdir(exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
