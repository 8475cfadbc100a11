"""Model-only throughput: eager PyTorch (channels_last, inference_mode) vs ONNX Runtime vs OpenVINO f32/bf16 (and
ONNX Runtime int8 with --int8), same random input, medians; writes benchmarks/results/runtimes.md.

Random init via timm (no downloads). Each runtime is built through pthkit's own code (export_onnx, the engine's
backends), so the numbers are what ``--backend`` gets.

    .venv/bin/python benchmarks/runtimes.py --models resnet18 efficientnet_b0 mobilenetv3_large_100 \
        vit_small_patch16_224 --batches 1 32 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _median_ips(fn, x: torch.Tensor, repeats: int) -> float:  # type: ignore[no-untyped-def]
    with torch.inference_mode():
        fn(x)
        fn(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t)
    return len(x) / statistics.median(times)


def bench(name: str, batches: list[int], repeats: int, int8: bool) -> list[dict[str, object]]:
    import timm

    from pthkit.engine import TorchBackend
    from pthkit.engine.backends_onnx import OnnxRuntimeBackend
    from pthkit.engine.backends_openvino import OpenVINOBackend
    from pthkit.export.onnx_export import export_onnx

    torch.manual_seed(0)
    module = timm.create_model(name, pretrained=False).eval()
    size = tuple(module.pretrained_cfg.get("input_size", (3, 224, 224)))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        info = export_onnx(module, torch.randn(2, *size), path, output_names=["logits"])
        runtimes = {"eager (channels_last)": TorchBackend(module), "onnxruntime fp32": OnnxRuntimeBackend(path),
                    "openvino f32": OpenVINOBackend(path, precision="f32"),
                    "openvino bf16": OpenVINOBackend(path, precision="bf16")}
        if int8:
            from pthkit.export.quantize import to_int8

            q = Path(tmp) / "q.onnx"
            to_int8(path, q, torch.randn(16, *size))
            runtimes["onnxruntime int8"] = OnnxRuntimeBackend(q, precision="int8")
        for bs in batches:
            x = torch.randn(bs, *size, generator=torch.Generator().manual_seed(1))
            with torch.inference_mode():
                ref = module(x)
            eager = None
            for label, fn in runtimes.items():
                ips = _median_ips(fn, x, repeats)
                with torch.inference_mode():
                    out = fn(x)
                diff = float((out - ref).abs().max())
                top1 = float((out.argmax(1) == ref.argmax(1)).float().mean())
                eager = eager or ips
                rows.append({"model": name, "batch": bs, "runtime": label, "img_s": ips, "vs_eager": ips / eager,
                             "max_abs": diff, "top1": top1, "exporter": info.exporter})
                print(f"{name} b{bs} {label}: {ips:.1f} img/s ({ips / eager:.2f}x), max abs {diff:.1e}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["resnet18", "efficientnet_b0", "mobilenetv3_large_100",
                                                    "vit_small_patch16_224"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--int8", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "runtimes.md"))
    args = ap.parse_args()
    rows = []
    for name in args.models:
        rows += bench(name, args.batches, args.repeats, args.int8)
    load = os.getloadavg()
    lines = ["# Model-only throughput: eager vs ONNX Runtime vs OpenVINO", "",
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load average at the end "
             f"{load[0]:.1f} (a shared machine: absolute numbers are noisy, ratios within one run are the point); "
             f"random init; median of {args.repeats} runs after 2 warm-ups.", "",
             "| model | batch | runtime | img/s | × eager | max abs diff | top-1 equal |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['runtime']} | {r['img_s']:.1f} | {r['vs_eager']:.2f} | "
                     f"{r['max_abs']:.1e} | {r['top1']:.0%} |")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
