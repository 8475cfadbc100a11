"""Benchmark: what does `pthkit inspect` cost on a ~1 GB checkpoint, next to `torch.load` (default and mmap=True)?

    .venv/bin/python benchmarks/read.py [--size-gb 1.0] [--repeats 3] [--out benchmarks/results/read.md]

Writes a ViT-L-like state dict (24 identical blocks shapes, fp32) of about ``--size-gb`` with ``torch.save`` into a
temporary folder (deleted afterwards), then runs, each in its own fresh subprocess so peak RSS is per run:

- ``python -c "import torch"``                                         (the import baseline)
- ``pthkit inspect FILE``  (console script, output to /dev/null)
- ``torch.load(FILE, weights_only=True)``                              (reads every byte into RAM)
- ``torch.load(FILE, weights_only=True, mmap=True)``                  (maps the file; touches nothing afterwards)

round-robin, ``--repeats`` times, and reports medians of wall time and peak RSS (``os.wait4`` rusage of that child:
``ru_maxrss``; this process never imports torch, so it adds nothing to the children's peaks). RSS "above baseline" subtracts the median RSS of the bare ``import torch`` process; both are shown.
The file is in the page cache for every run (it was just written): this measures CPU and memory, not the disk.
"""

from __future__ import annotations

import argparse
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


def build_checkpoint(path: Path, size_gb: float) -> int:
    """A ViT-L/16-shaped fp32 state dict (dim 1024, mlp 4096), as many blocks as fit ``size_gb``; returns bytes."""
    import torch

    dim, mlp = 1024, 4096
    per_block = 3 * dim * dim + 3 * dim + dim * dim + dim + mlp * dim + mlp + dim * mlp + dim + 4 * dim
    blocks = max(1, round(size_gb * 1e9 / 4 / per_block))
    gen = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {
        "cls_token": torch.randn(1, 1, dim, generator=gen),
        "pos_embed": torch.randn(1, 197, dim, generator=gen),
        "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16, generator=gen),
        "patch_embed.proj.bias": torch.zeros(dim),
    }
    for i in range(blocks):
        p = f"blocks.{i}."
        sd[p + "norm1.weight"] = torch.ones(dim)
        sd[p + "norm1.bias"] = torch.zeros(dim)
        sd[p + "attn.qkv.weight"] = torch.randn(3 * dim, dim, generator=gen)
        sd[p + "attn.qkv.bias"] = torch.zeros(3 * dim)
        sd[p + "attn.proj.weight"] = torch.randn(dim, dim, generator=gen)
        sd[p + "attn.proj.bias"] = torch.zeros(dim)
        sd[p + "norm2.weight"] = torch.ones(dim)
        sd[p + "norm2.bias"] = torch.zeros(dim)
        sd[p + "mlp.fc1.weight"] = torch.randn(mlp, dim, generator=gen)
        sd[p + "mlp.fc1.bias"] = torch.zeros(mlp)
        sd[p + "mlp.fc2.weight"] = torch.randn(dim, mlp, generator=gen)
        sd[p + "mlp.fc2.bias"] = torch.zeros(dim)
    sd["norm.weight"] = torch.ones(dim)
    sd["norm.bias"] = torch.zeros(dim)
    sd["head.weight"] = torch.randn(1000, dim, generator=gen)
    sd["head.bias"] = torch.zeros(1000)
    torch.save({"epoch": 300, "model": sd}, path)
    return path.stat().st_size


def commands(path: Path) -> dict[str, list[str]]:
    py = sys.executable
    f = repr(str(path))
    return {
        "import torch (baseline)": [py, "-c", "import torch"],
        "pthkit inspect": [str(PTHKIT), "inspect", str(path)],
        "torch.load": [py, "-c", f"import torch; sd = torch.load({f}, weights_only=True)"],
        "torch.load(mmap=True)": [py, "-c", f"import torch; sd = torch.load({f}, weights_only=True, mmap=True)"],
    }


def measure(cmd: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of one fresh process running ``cmd``."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)  # rusage of exactly this child
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed ({proc.returncode}): {' '.join(cmd)}\n{err}")
    return elapsed, usage.ru_maxrss * 1024  # Linux reports KiB


def mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "read.md")
    parser.add_argument("--build-only", type=Path, help=argparse.SUPPRESS)  # internal: write the file and exit
    args = parser.parse_args(argv)
    if args.build_only:
        build_checkpoint(args.build_only, args.size_gb)
        return 0

    load_before = f"{os.getloadavg()[0]:.1f}"
    tmp = Path(tempfile.mkdtemp(prefix="pthkit-bench-read-"))
    try:
        ckpt = tmp / "vit_large_like.pth"
        t0 = time.perf_counter()
        # Built in a child process: this process must stay small and never import torch, because Linux carries a
        # parent's peak RSS at fork/exec time into the child's ru_maxrss, which would swamp every measurement.
        subprocess.run([sys.executable, __file__, "--size-gb", str(args.size_gb), "--build-only", str(ckpt)],
                       check=True)
        size = ckpt.stat().st_size
        print(f"wrote {ckpt} ({mb(size)}) in {time.perf_counter() - t0:.1f} s", flush=True)
        cmds = commands(ckpt)
        results: dict[str, list[tuple[float, int]]] = {name: [] for name in cmds}
        for rep in range(args.repeats):
            for name, cmd in cmds.items():  # round-robin so drift hits every command alike
                results[name].append(measure(cmd))
                print(f"  run {rep + 1}: {name:<26} {results[name][-1][0]:6.2f} s  {mb(results[name][-1][1])}",
                      flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    med = {n: (statistics.median(t for t, _ in r), statistics.median(m for _, m in r)) for n, r in results.items()}
    base_t, base_rss = med["import torch (baseline)"]
    ref_t = med["torch.load(mmap=True)"][0]
    rows = []
    for name, (t, rss) in med.items():
        above = max(0, rss - base_rss)
        work = max(0.0, t - base_t)
        rows.append(
            f"| {name} | {t:.2f} s | {t / ref_t:.2f}× | {work:.2f} s | {mb(rss)} | {mb(above)} | "
            f"{100 * above / size:.1f}% |"
        )
    inspect_t, inspect_rss = med["pthkit inspect"]
    rss_ok = (inspect_rss - base_rss) < 0.10 * size
    time_ok = inspect_t <= 1.5 * ref_t
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    torch_version = subprocess.run([sys.executable, "-c", "import torch; print(torch.__version__)"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    text = "\n".join(
        [
            "# Reading a ~1 GB checkpoint: `pthkit inspect` vs `torch.load`",
            "",
            f"- Date: {date}; machine: {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
            f"Python {platform.python_version()}, torch {torch_version}",
            f"- File: ViT-L-like fp32 state dict inside `{{'epoch', 'model'}}`, `torch.save` zip format, {mb(size)}; "
            "in the page cache for every run.",
            f"- Each cell: median of {args.repeats} runs, each a fresh process (round-robin). Time is wall time of the "
            "whole process, Python and `import torch` included. Peak RSS is `ru_maxrss` of that process (`os.wait4`); "
            "'above baseline' subtracts the median peak RSS of a bare `python -c 'import torch'`.",
            "- `torch.load(mmap=True)` maps the file and touches nothing afterwards, so its RSS is a floor, not a load.",
            f"- Command: `.venv/bin/python benchmarks/read.py --size-gb {args.size_gb} --repeats {args.repeats}`",
            "",
            "| command | time | vs mmap load | time above baseline | peak RSS | RSS above baseline | of file size |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Targets: inspect peak RSS above baseline under 10% of the file: "
            f"{mb(inspect_rss - base_rss)} vs {mb(0.1 * size)} → {'met' if rss_ok else 'NOT met'}; "
            f"inspect time within 1.5× of `torch.load(mmap=True)`: {inspect_t:.2f} s vs {1.5 * ref_t:.2f} s → "
            f"{'met' if time_ok else 'NOT met'} (above the import baseline: {inspect_t - base_t:.2f} s vs "
            f"{ref_t - base_t:.2f} s).",
            f"- Load average during the run: {load_before} before, {os.getloadavg()[0]:.1f} after "
            "(shared machine: other jobs were running).",
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
