"""Ray Data batch prediction vs local ``predict`` on the same folder, side by side in one run.

    python benchmarks/ray_predict.py [--copies 2] [--repeats 3]

Measures, on the benchmark JPEG folder (80 × copies mixed-size images, resnet18 random init, 224 px):
- local ``Model.predict`` (the engine's thread pool), images/s;
- ``pthkit.integrations.ray.predict_dataset`` with 1 and 2 actors on a local cluster (``ray.init(num_cpus=N)``),
  images/s of the map stage (cluster start excluded, reported separately), and Ray's overhead against local.
Medians of ``--repeats``; writes benchmarks/results/ray.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _predict_data  # noqa: E402


def _model(folder: Path) -> Path:
    import timm
    import torch

    from pthkit.api import open as open_model
    from pthkit.bundle import save_bundle

    out = folder / "r18-bundle"
    if not out.exists():
        torch.manual_seed(0)
        weights = folder / "r18.pth"
        torch.save(timm.create_model("resnet18").state_dict(), weights)
        handle = open_model(weights, arch="timm:resnet18", device="cpu", check=False)
        assert handle.module is not None
        save_bundle(handle.module, out, architecture="timm:resnet18", preprocess=handle.preprocess)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    work = HERE / "_work"
    paths = [str(p) for p in _predict_data.build(work / "jpegs", copies=args.copies)]
    model = _model(work)
    n = len(paths)

    import pthkit

    handle = pthkit.open(model, device="cpu")
    local = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        rows = list(handle.predict(paths, batch_size=args.batch_size))
        local.append(n / (time.perf_counter() - t))
        assert len(rows) == n

    import ray

    from pthkit.integrations.ray import predict_dataset, read_inputs

    t = time.perf_counter()
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t
    results: dict[int, list[float]] = {}
    for actors in (1, 2):
        results[actors] = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            out = predict_dataset(read_inputs(paths), model, num_actors=actors, batch_size=args.batch_size,
                                  open_options={"device": "cpu"})
            got = out.take_all()
            results[actors].append(n / (time.perf_counter() - t))
            assert len(got) == n
    ray.shutdown()

    med_local = statistics.median(local)
    lines = [
        "# Ray Data batch prediction vs local predict",
        "",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"date {time.strftime('%Y-%m-%d %H:%M')}; load average {os.getloadavg()[0]:.2f} at the end",
        f"- {n} mixed-size JPEGs, timm resnet18 (random init), batch {args.batch_size}, medians of {args.repeats}",
        f"- local cluster start (`ray.init`): {start_s:.1f} s (not counted below)",
        "",
        "| run | images/s (median) | vs local |",
        "|---|---|---|",
        f"| local `Model.predict` | {med_local:.1f} | 1.00× |",
    ]
    for actors, values in results.items():
        med = statistics.median(values)
        lines.append(f"| Ray Data, {actors} actor(s) | {med:.1f} | {med / med_local:.2f}× |")
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ray.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
