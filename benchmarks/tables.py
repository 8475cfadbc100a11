"""Benchmark: a 1,000,000-row × 10-column CSV through the README's MLP, pthkit vs a hand-written pandas + torch loop.

    .venv/bin/python benchmarks/tables.py [--rows 1000000] [--repeats 3] [--batch-size 1024]
                                          [--out benchmarks/results/tables.md]

The MLP is the document's second example, ``nn.Linear(10, 50) → relu → nn.Linear(50, 2)``. One CSV (header, 10
float columns, ``%.6g``) is written to a temporary folder (deleted afterwards). Each contender runs in its own fresh
subprocess (so peak RSS is per run), round-robin, ``--repeats`` times; medians are reported:

- ``pandas loop``: ``pandas.read_csv(path)`` → ``torch.from_numpy(df.to_numpy(np.float32))`` → batches of
  ``--batch-size`` under ``torch.inference_mode()`` → ``torch.cat`` (what a user writes by hand);
- ``pthkit.predict_arrays``: ``pthkit.tasks.outputs.predict_arrays(pthkit.open(model), path)`` (streamed, checked:
  width, numbers, NaN; outputs stacked, no per-row objects);
- ``pthkit.predict rows``: ``Model.predict(path)``, one ``TensorPrediction`` per row, counted and dropped;
- ``pthkit predict CLI``: the console script, ``--save-outputs out.npy`` (whole process: start-up, model load,
  identification skipped with ``--arch``).

Rows/s counts the work after imports and model construction (the CLI: the whole process). Peak RSS is the child's
``ru_maxrss`` (``os.wait4``); "above baseline" subtracts the RSS the child had after its imports, before reading the
file (the CLI: the median of ``python -c "import torch, pthkit"``). Every run uses the same torch thread count,
chosen once by pthkit's CLI policy (``cli_thread_policy``) in the parent and passed as ``--threads`` to each child.
Every contender's outputs are compared with the pandas loop's (max abs difference printed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PTHKIT = Path(sys.executable).with_name("pthkit")

MODEL_PY = '''
import torch
from torch import nn


class MyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Linear(10, 50)
        self.layer2 = nn.Linear(50, 2)

    def forward(self, x):
        return self.layer2(torch.relu(self.layer1(x)))
'''

CHILD = r'''
import json, os, resource, sys, time
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[4]))
sys.path.insert(0, sys.argv[2])
from my_model import MyModel
kind, folder, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
path = os.path.join(folder, "rows.csv")
model = MyModel()
model.load_state_dict(torch.load(os.path.join(folder, "my_model.pth"), weights_only=True))
model.eval()
if kind == "pandas":
    import pandas as pd
else:
    import pyarrow.compute, pyarrow.csv  # pthkit imports them lazily; imported here as the loop imports pandas
    import pthkit
    from pthkit.tasks.outputs import predict_arrays
    handle = pthkit.open(model)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if kind == "pandas":
    df = pd.read_csv(path)
    x = torch.from_numpy(df.to_numpy(np.float32))
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            outs.append(model(x[i:i + batch]))
    out = torch.cat(outs).numpy()
    n = len(out)
elif kind == "arrays":
    out = predict_arrays(handle, path, batch_size=batch)["output"]
    n = len(out)
else:
    n = 0
    first = []
    for p in handle.predict(path, batch_size=batch):
        if n < 1000:
            first.append(p.outputs["output"])
        n += 1
    out = np.asarray(first, dtype=np.float32)
dt = time.perf_counter() - t0
np.save(os.path.join(folder, f"out-{kind}.npy"), out[:1000])
print(json.dumps({"rows": n, "seconds": dt, "base_kb": base}))
'''


def write_inputs(folder: Path, rows: int) -> None:
    import numpy as np
    import torch

    (folder / "my_model.py").write_text(MODEL_PY, encoding="utf-8")
    sys.path.insert(0, str(folder))
    from my_model import MyModel  # type: ignore[import-not-found]

    torch.manual_seed(0)
    torch.save(MyModel().state_dict(), folder / "my_model.pth")
    rng = np.random.default_rng(0)
    header = ",".join(f"f{i}" for i in range(10))
    with open(folder / "rows.csv", "w", encoding="ascii") as fh:
        fh.write(header + "\n")
        for start in range(0, rows, 100_000):
            block = rng.normal(size=(min(100_000, rows - start), 10)).astype(np.float32)
            np.savetxt(fh, block, delimiter=",", fmt="%.6g")


def run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[str, int, float]:
    """Run a child with os.wait4 (peak RSS of that child alone): (stdout, peak KB, wall s)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    out = proc.stdout.read() if proc.stdout else b""  # type: ignore[union-attr]
    err = proc.stderr.read() if proc.stderr else b""  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {' '.join(args)}\n{err.decode()[-2000:]}")
    return out.decode(), int(usage.ru_maxrss), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tables.md")
    ns = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from pthkit.engine.threads import cli_thread_policy

    decision = cli_thread_policy(apply=False)
    threads = decision.threads
    folder = Path(tempfile.mkdtemp(prefix="pthkit-bench-tables-"))
    env = dict(os.environ, PTHKIT_CACHE_DIR=str(folder / "cache"))
    try:
        write_inputs(folder, ns.rows)
        size_mb = (folder / "rows.csv").stat().st_size / 1e6
        results: dict[str, list[dict[str, float]]] = {k: [] for k in ("pandas", "arrays", "rows", "cli", "baseline")}
        for _ in range(ns.repeats):
            for kind in ("pandas", "arrays", "rows"):
                out, peak_kb, _wall = run_measured([sys.executable, "-c", CHILD, kind, str(folder),
                                                    str(ns.batch_size), str(threads)], env)
                data = json.loads(out.strip().splitlines()[-1])
                results[kind].append({"rows_s": data["rows"] / data["seconds"], "seconds": data["seconds"],
                                      "peak_mb": peak_kb / 1024, "above_mb": (peak_kb - data["base_kb"]) / 1024})
            out, peak_kb, wall = run_measured([sys.executable, "-c", "import torch, pthkit.cli.main"], env)
            results["baseline"].append({"peak_mb": peak_kb / 1024, "seconds": wall})
            cli_env = dict(env, OMP_NUM_THREADS=str(threads))
            _out, peak_kb, wall = run_measured(
                [str(PTHKIT), "predict", str(folder / "my_model.pth"), str(folder / "rows.csv"), "--arch",
                 f"{folder / 'my_model.py'}:MyModel", "--save-outputs", str(folder / "out-cli.npy"), "--batch-size",
                 str(ns.batch_size)], cli_env)
            results["cli"].append({"rows_s": ns.rows / wall, "seconds": wall, "peak_mb": peak_kb / 1024})
        import numpy as np

        ref = np.load(folder / "out-pandas.npy")
        diffs = {k: float(np.abs(np.load(folder / f"out-{k}.npy") - ref).max()) for k in ("arrays", "rows")}
        diffs["cli"] = float(np.abs(np.load(folder / "out-cli.npy")[:1000] - ref).max())
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    base_mb = med("baseline", "peak_mb")
    loop = med("pandas", "rows_s")
    lines = [
        "# Tables: 1,000,000-row CSV through the README's MLP",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()} "
        f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end), Python "
        f"{platform.python_version()}; {ns.rows:,} rows × 10 float columns ({size_mb:.0f} MB CSV), batch "
        f"{ns.batch_size}, torch threads {threads} ({decision.reason}), medians of {ns.repeats} round-robin runs, "
        "each in a fresh process. Reproduce: `.venv/bin/python benchmarks/tables.py`.",
        "",
        "| contender | rows/s | vs pandas loop | time (s) | peak RSS (MB) | RSS above baseline (MB) | max abs diff vs loop |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {"pandas": "hand-written `pandas.read_csv` + torch batch loop",
             "arrays": "`pthkit.tasks.outputs.predict_arrays` (streamed, checked)",
             "rows": "`Model.predict(path)` (one row object per example)"}
    for kind in ("pandas", "arrays", "rows"):
        rate = med(kind, "rows_s")
        diff = "—" if kind == "pandas" else f"{diffs[kind]:.1e}"
        lines.append(f"| {names[kind]} | {rate:,.0f} | {rate / loop:.2f}× | {med(kind, 'seconds'):.2f} | "
                     f"{med(kind, 'peak_mb'):.0f} | {med(kind, 'above_mb'):.0f} | {diff} |")
    rate = med("cli", "rows_s")
    lines.append(f"| `pthkit predict … --save-outputs out.npy` (whole process) | {rate:,.0f} | {rate / loop:.2f}× | "
                 f"{med('cli', 'seconds'):.2f} | {med('cli', 'peak_mb'):.0f} | "
                 f"{med('cli', 'peak_mb') - base_mb:.0f} (vs `import torch, pthkit`: {base_mb:.0f} MB) | "
                 f"{diffs['cli']:.1e} |")
    lines += [
        "",
        "\"RSS above baseline\" for the in-process contenders is peak RSS minus the RSS after imports and model "
        "construction (pandas and pyarrow libraries loaded by the run count against the run). The pandas loop holds "
        "the whole table (as a DataFrame and a float32 copy); pthkit reads 1 MB blocks (pyarrow's streaming CSV "
        "reader) and holds only the outputs.",
        "",
        "Raw runs: `" + json.dumps({k: [{kk: round(vv, 3) for kk, vv in r.items()} for r in v]
                                    for k, v in results.items()}) + "`",
        "",
    ]
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
