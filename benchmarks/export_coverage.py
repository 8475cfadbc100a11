"""Export coverage: every torchvision classification model and >= 100 timm models (one or two per family) exported
to ONNX by ``pthkit.export`` (dynamo exporter, TorchScript fallback), parity checked with ONNX Runtime.

Random init (no downloads). Each model runs in its own subprocess (1 torch thread, ``nice``), bounded by a per-model
timeout; results are appended to ``benchmarks/results/export_coverage.jsonl`` as they finish, and ``benchmarks/results/export_coverage.md``
is rewritten from them (``--report-only`` rewrites it from whatever finished). Parity: max abs/rel difference at
batch 1, 2 and 7 and top-1/top-5 agreement on 16 packaged calibration images (fp32 tolerance as ``pthkit export``).

    nice -n 10 timeout 3600 .venv/bin/python benchmarks/export_coverage.py --deadline-min 55 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JSONL = ROOT / "benchmarks" / "results" / "export_coverage.jsonl"
MD = ROOT / "benchmarks" / "results" / "export_coverage.md"
SIZE_WORDS = ["atto", "femto", "pico", "nano", "tiny", "xxs", "xs", "mini", "small", "lite0", "b0", "s", "050", "075",
              "100", "18", "26", "34", "50"]
# torchvision models run last (largest): minutes each on a 2-core machine.
TV_LAST = ("vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "regnet_y_32gf", "regnet_y_16gf", "regnet_x_32gf",
           "efficientnet_b7", "efficientnet_b6", "efficientnet_v2_l", "convnext_large", "swin_v2_b", "swin_b",
           "maxvit_t", "vit_b_16", "vit_b_32", "wide_resnet101_2", "resnext101_64x4d", "resnext101_32x8d")


def _size_rank(name: str) -> tuple[int, int, str]:
    parts = re.split(r"[_.\-]", name)
    best = min((SIZE_WORDS.index(w) for p in parts for w in SIZE_WORDS if p == w or p.endswith(w)), default=len(SIZE_WORDS))
    return best, len(name), name


def timm_models(count: int) -> list[str]:
    import timm

    families: dict[tuple[str, str], list[str]] = defaultdict(list)
    for module in timm.list_modules():
        for name in timm.list_models(module=module):
            prefix = re.split(r"[_\d]", name)[0] or name
            families[(module, prefix)].append(name)
    chosen_by_module: dict[str, list[str]] = defaultdict(list)
    for (module, _prefix), names in sorted(families.items()):
        ok = []
        for name in sorted(names, key=_size_rank):
            cfg = timm.get_pretrained_cfg(name)
            size = getattr(cfg, "input_size", (3, 224, 224)) if cfg is not None else (3, 224, 224)
            if max(size[1:]) <= 256:
                ok.append(name)
                break
        chosen_by_module[module] += ok
    picked: list[str] = []
    rounds = max(len(v) for v in chosen_by_module.values())
    for r in range(rounds):  # round-robin over modules: every family module once before any gets a second
        for module in sorted(chosen_by_module):
            if r < len(chosen_by_module[module]):
                picked.append(chosen_by_module[module][r])
    return picked[:count]


def torchvision_models() -> list[str]:
    import torchvision

    names = sorted(torchvision.models.list_models(module=torchvision.models))
    return [n for n in names if n not in TV_LAST] + [n for n in TV_LAST if n in names]


def _cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a running process (Linux ``/proc``); 0 where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run_one(lib: str, name: str) -> dict[str, object]:
    import tempfile

    import torch

    torch.set_num_threads(1)
    from pthkit.api import open_module
    from pthkit.engine import TorchBackend
    from pthkit.engine.backends_onnx import OnnxRuntimeBackend
    from pthkit.export.api import example_input, output_names_for
    from pthkit.export.onnx_export import export_onnx
    from pthkit.export.parity import check_parity, parity_inputs
    from pthkit.preprocess.types import Preprocess

    torch.manual_seed(0)
    if lib == "torchvision":
        import torchvision

        module = torchvision.models.get_model(name, weights=None).eval()
        size = (3, 299, 299) if name == "inception_v3" else (3, 224, 224)
    else:
        import timm

        module = timm.create_model(name, pretrained=False).eval()
        size = tuple(module.pretrained_cfg.get("input_size", (3, 224, 224)))
    params = sum(p.numel() for p in module.parameters())
    model = open_module(module)
    model.preprocess = Preprocess(input_size=size, sources={"input_size": "coverage benchmark"})
    model.task = "classify"
    example = example_input(model)
    names = output_names_for(model, module, example)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        t0 = time.perf_counter()
        info = export_onnx(module, example, path, output_names=names)
        export_s = time.perf_counter() - t0
        runner = OnnxRuntimeBackend(path, threads=1)
        inputs = parity_inputs(model)
        inputs = [(f"calibration images ({min(16, len(x))})", x[:16]) for _, x in inputs]
        report = check_parity(TorchBackend(module), runner, inputs, format="onnx", output_names=names)
    worst = max(report.diffs, key=lambda d: d.ratio, default=None)
    agree = report.agreements[0] if report.agreements else None
    return {"lib": lib, "model": name, "params_m": round(params / 1e6, 2), "exporter": info.exporter,
            "passed": report.passed, "export_s": round(export_s, 1),
            "max_abs": worst.max_abs if worst else None, "ratio": worst.ratio if worst else None,
            "top1": agree.top1 if agree else None, "top5": agree.top5_overlap if agree else None,
            "near_ties": agree.near_ties if agree else 0,
            "reason": "; ".join(report.failures) or ("; ".join(info.notes) if info.notes else "")}


def write_md() -> None:
    rows = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()] if JSONL.exists() else []
    latest: dict[tuple[str, str], dict] = {}
    for r in rows:
        latest[(r["lib"], r["model"])] = r
    rows = list(latest.values())
    done = len(rows)
    passed = sum(1 for r in rows if r["passed"])
    by_lib = defaultdict(lambda: [0, 0])
    for r in rows:
        by_lib[r["lib"]][0] += 1
        by_lib[r["lib"]][1] += bool(r["passed"])
    fallback = sum(1 for r in rows if r.get("exporter") == "torchscript")
    lines = ["# ONNX export coverage", "",
             f"Machine: {os.cpu_count()} cores (shared), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             "Random init, fp32, 1 torch thread per model, ONNX Runtime CPU; parity at batch 1, 2, 7 and top-1/top-5 "
             "on 16 calibration images; tolerance max abs ≤ 1e-4 × logits' scale, top-1 100% (near ties excepted).",
             "", f"**Pass rate: {passed}/{done} = {passed / done:.1%}**" if done else "**nothing finished**", ""]
    for lib, (n, p) in sorted(by_lib.items()):
        lines.append(f"- {lib}: {p}/{n} passed")
    lines.append(f"- TorchScript-exporter fallback used for {fallback} model(s) (dynamo exporter failed; reason in the table)")
    lines += ["", "| library | model | params (M) | exporter | export s | max abs (× scale) | top-1 | top-5 | result |"
              " reason |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["lib"], r["model"])):
        ratio = f"{r['max_abs']:.1e} ({r['ratio']:.1e})" if r.get("max_abs") is not None else ""
        top1 = f"{r['top1']:.0%}" if r.get("top1") is not None else ""
        top5 = f"{r['top5']:.0%}" if r.get("top5") is not None else ""
        reason = str(r.get("reason", "")).replace("|", "/")[:160]
        lines.append(f"| {r['lib']} | {r['model']} | {r.get('params_m', '')} | {r.get('exporter', '')} | "
                     f"{r.get('export_s', '')} | {ratio} | {top1} | {top5} | {'pass' if r['passed'] else 'FAIL'} | "
                     f"{reason} |")
    MD.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--one", nargs=2, metavar=("LIB", "NAME"))
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--timm-count", type=int, default=110)
    ap.add_argument("--per-model-s", type=int, default=240, help="CPU seconds per model")
    ap.add_argument("--deadline-min", type=float, default=55.0)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one)))
        return 0
    if args.report_only:
        write_md()
        return 0
    JSONL.parent.mkdir(exist_ok=True)
    done = set()
    if JSONL.exists():
        done = {(json.loads(x)["lib"], json.loads(x)["model"]) for x in JSONL.read_text().splitlines() if x.strip()}
    tv = [("torchvision", n) for n in torchvision_models()]
    tm = [("timm", n) for n in timm_models(args.timm_count)]
    queue = []
    for i in range(max(len(tv), len(tm))):  # interleave so a partial run covers both libraries
        queue += ([tv[i]] if i < len(tv) else []) + ([tm[i]] if i < len(tm) else [])
    queue = [q for q in queue if q not in done]
    print(f"{len(queue)} models to run ({len(tv)} torchvision, {len(tm)} timm)", flush=True)
    end = time.time() + args.deadline_min * 60
    env = dict(os.environ, OMP_NUM_THREADS="1", PTHKIT_CACHE_DIR=os.environ.get("PTHKIT_CACHE_DIR", "/tmp/pthkit-cov"))
    running: list[tuple[subprocess.Popen, tuple[str, str], float]] = []
    while (queue or running) and time.time() < end:
        while queue and len(running) < args.jobs:
            lib, name = queue.pop(0)
            proc = subprocess.Popen([sys.executable, __file__, "--one", lib, name], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)
            running.append((proc, (lib, name), time.time()))
        time.sleep(1)
        for item in list(running):
            proc, (lib, name), started = item
            # CPU seconds, not wall time: on a shared, overloaded machine wall time says nothing about the model.
            timed_out = _cpu_seconds(proc.pid) > args.per_model_s or time.time() - started > 6 * args.per_model_s
            if proc.poll() is None and not timed_out:
                continue
            running.remove(item)
            if timed_out and proc.poll() is None:
                proc.kill()
                proc.communicate()
                row = {"lib": lib, "model": name, "passed": False,
                       "reason": f"timeout: over {args.per_model_s} CPU s (or {6 * args.per_model_s} s wall)"}
            else:
                out, err = proc.communicate()
                try:
                    row = json.loads(out.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    tail = " ".join(err.strip().splitlines()[-1:])[:200] if err else f"exit {proc.returncode}"
                    row = {"lib": lib, "model": name, "passed": False, "reason": f"crashed: {tail}"}
            with JSONL.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"{lib} {name}: {'pass' if row['passed'] else 'FAIL ' + str(row.get('reason'))[:120]}", flush=True)
            write_md()
    for proc, _, _ in running:
        proc.kill()
    print(f"stopped; {len(queue)} not started", flush=True)
    write_md()
    return 0


if __name__ == "__main__":
    sys.exit(main())
