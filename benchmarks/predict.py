"""How fast is `pthkit predict` compared with the usual ways, and what does reduced-size decoding / bf16 cost in accuracy?

One folder of JPEGs of mixed sizes (60% under 0.5 MP, 30% near 2 MP, 10% near 12 MP, made from the installed
packages' sample photos), two models (torchvision resnet18, random init; the real efficientnet-lite0 .pth loaded by
pthkit), side by side in one run, interleaved, repeated; medians reported:

  (a) the classic per-image loop: PIL open, Resize((224, 224)), ToTensor, Normalize, batch 1, no_grad;
  (b) timm's inference.py recipe: timm ImageDataset + create_transform (eval, same values as pthkit resolved) +
      DataLoader with 2 workers, same batch size;
  (c) pthkit.tasks.predict.predict with its defaults, after the CLI's thread policy
      (pthkit.engine.threads.cli_thread_policy, as `pthkit predict` runs it; CLI start-up cost measured separately);
  (d) the model-only ceiling: preprocessed tensors already in memory, same batch size, channels_last, inference_mode,
      the faster of 1 thread and all threads.

Also: peak memory of (c) (a fresh process), top-1 agreement of reduced-size JPEG decoding vs full decoding, and of
bf16 autocast vs fp32, on the real model. Results go to benchmarks/results/predict.md.

    .venv/bin/python benchmarks/predict.py [--repeats 3] [--batch-size 32] [--models resnet18,lite0] [--copies 1]

``--copies 3`` uses 240 images in the same size mix (start-up costs amortize over more batches).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import _predict_data  # noqa: E402

IMAGES = HERE / "_work" / "predict_images"
RESULTS = HERE / "results" / "predict.md"
START_LOAD = os.getloadavg()[0]


# --- models and preprocessing ----------------------------------------------------------------------------------------


def load(name: str):
    """(model in eval mode, pthkit Preprocess, description)."""
    from pthkit.preprocess import resolve_preprocess

    if name == "resnet18":
        import torchvision

        torch.manual_seed(0)
        model = torchvision.models.resnet18().eval()  # random init: speed does not depend on the weights
        return model, resolve_preprocess(model, arch="torchvision:resnet18"), "torchvision resnet18 (random init)"
    from pthkit.loading import load_model
    from pthkit.samples import efficientnet_lite0_weights

    model, report = load_model(efficientnet_lite0_weights())
    pre = resolve_preprocess(model, arch=report.architecture, checkpoint=report.checkpoint)
    return model, pre, f"efficientnet-lite0 .pth (real weights, loaded as {report.architecture})"


# --- the four ways ---------------------------------------------------------------------------------------------------


def run_classic(model, pre, paths, batch_size):
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose([
        transforms.Resize(pre.crop_size), transforms.ToTensor(), transforms.Normalize(pre.mean, pre.std),
    ])
    top = []
    with torch.no_grad():
        for p in paths:
            x = tf(Image.open(p).convert("RGB")).unsqueeze(0)
            top.append(int(torch.softmax(model(x), 1).argmax()))
    return top


def run_timm(model, pre, paths, batch_size):
    from timm.data import ImageDataset, create_transform

    tf = create_transform(input_size=pre.input_size, crop_pct=pre.crop_pct, interpolation=pre.interpolation,
                          mean=pre.mean, std=pre.std)
    dataset = ImageDataset(str(IMAGES), transform=tf)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=2, shuffle=False)
    top = []
    with torch.no_grad():
        for x, _ in loader:
            top += torch.softmax(model(x), 1).topk(5).indices[:, 0].tolist()
    return top


def run_pthkit(model, pre, paths, batch_size, **kwargs):
    """pthkit's predict as ``pthkit predict`` runs it: the CLI's thread policy (decided once: the cores other jobs
    leave free), then the library with its defaults (which never changes threads itself)."""
    from pthkit.engine.threads import cli_thread_policy
    from pthkit.tasks.predict import predict

    previous = torch.get_num_threads()
    cli_thread_policy()
    try:
        return [p.classes[0].index for p in predict(model, pre, [str(IMAGES)], batch_size=batch_size, **kwargs)]
    finally:
        torch.set_num_threads(previous)


def preprocessed(pre, paths):
    from pthkit.images import open_image

    tf = pre.transform()
    return torch.stack([tf(open_image(p)) for p in paths])


def run_ceiling(model, tensors, batch_size, amp=None):
    """The best of 1 thread and all threads (which is faster depends on the load from other jobs)."""
    previous = torch.get_num_threads()
    best = None
    for threads in sorted({1, previous}):
        torch.set_num_threads(threads)
        seconds, top = timed(_ceiling, model, tensors, batch_size, amp)
        best = min(best or (seconds, top), (seconds, top), key=lambda st: st[0])
    torch.set_num_threads(previous)
    return best


def _ceiling(model, tensors, batch_size, amp=None):
    m = model.to(memory_format=torch.channels_last)
    top = []
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if amp == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), ctx:
        for i in range(0, len(tensors), batch_size):
            x = tensors[i:i + batch_size].contiguous(memory_format=torch.channels_last)
            top += torch.softmax(m(x).float(), 1).topk(5).indices[:, 0].tolist()
    return top


def timed(fn, *args, **kwargs) -> tuple[float, list[int]]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


# --- child process: peak memory of (c) -------------------------------------------------------------------------------


def child_peak(name: str, batch_size: int, copies: int) -> dict:
    global IMAGES
    IMAGES = images_dir(copies)
    model, pre, _ = load(name)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    paths = _predict_data.build(IMAGES, copies)
    run_pthkit(model, pre, paths, batch_size)
    return {
        "rss_before_mb": before / 1024,
        "peak_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def images_dir(copies: int) -> Path:
    return HERE / "_work" / ("predict_images" if copies == 1 else f"predict_images_x{copies}")


def breakdown(model, pre, paths) -> dict[str, float]:
    """Milliseconds per image, 1 thread, one after the other: decode (reduced-size), resize + crop (PIL), uint8 ->
    normalized float (per batch), model forward (batch size 32, channels_last)."""
    from pthkit.images import open_image
    from pthkit.data.images import draft_size_for, split_transform

    per_image, tail = split_transform(pre.transform())
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        imgs = [open_image(p, draft_size=draft_size_for(pre)) for p in paths]
        t1 = time.perf_counter()
        parts = [per_image(im) for im in imgs]
        t2 = time.perf_counter()
        x = tail(torch.stack(parts).contiguous(memory_format=torch.channels_last))
        t3 = time.perf_counter()
        _ceiling(model, x[:32], 32)
        t4 = time.perf_counter()
        _ceiling(model, x, 32)
        t5 = time.perf_counter()
    finally:
        torch.set_num_threads(previous)
    n = len(paths)
    return {"decode": (t1 - t0) / n * 1e3, "resize_crop": (t2 - t1) / n * 1e3, "normalize": (t3 - t2) / n * 1e3,
            "model_1thread": (t5 - t4) / n * 1e3}


def measure_peak(name: str, batch_size: int, copies: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child-peak", name, "--batch-size", str(batch_size),
                          "--copies", str(copies)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_cli(batch_size: int) -> float:
    from pthkit.samples import efficientnet_lite0_weights

    exe = Path(sys.executable).with_name("pthkit")
    start = time.perf_counter()
    subprocess.run([str(exe), "predict", str(efficientnet_lite0_weights()), str(IMAGES), "--json",
                    "--batch-size", str(batch_size), "--allow-failures"], capture_output=True, check=True)
    return time.perf_counter() - start


def agreement(a: list[int], b: list[int]) -> float:
    return sum(x == y for x, y in zip(a, b)) / max(1, len(a))


# --- main ------------------------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--models", default="resnet18,lite0")
    parser.add_argument("--copies", type=int, default=1, help="80 x COPIES images in the same size mix")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (markdown)")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write the results file")
    parser.add_argument("--child-peak", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_peak:
        print(json.dumps(child_peak(args.child_peak, args.batch_size, args.copies)))
        return 0

    global IMAGES
    IMAGES = images_dir(args.copies)
    paths = _predict_data.build(IMAGES, args.copies)
    mp = [(lambda s: int(s[0]) * int(s[1]))(p.stem.split("_")[1].split("x")) / 1e6 for p in paths]
    bs = args.batch_size
    rows = []
    extra: list[str] = []
    for name in args.models.split(","):
        model, pre, desc = load(name)
        tensors = preprocessed(pre, paths)
        # warm-up: first forward passes (oneDNN primitive creation) and file cache
        _ceiling(model, tensors[:bs], bs)
        run_pthkit(model, pre, paths[:4], 4, workers=0)
        times: dict[str, list[float]] = {"a": [], "b": [], "c": [], "d": []}
        tops: dict[str, list[int]] = {}
        for rep in range(args.repeats):  # interleaved, so load from other processes hits every method alike
            for key, fn in (("a", lambda: run_classic(model, pre, paths, bs)),
                            ("b", lambda: run_timm(model, pre, paths, bs)),
                            ("c", lambda: run_pthkit(model, pre, paths, bs)),
                            ("d", lambda: run_ceiling(model, tensors, bs))):
                seconds, top = fn() if key == "d" else timed(fn)
                times[key].append(seconds)
                tops[key] = top
                print(f"{name} rep {rep} ({key}) {len(paths) / seconds:7.1f} img/s", flush=True)
        ips = {k: len(paths) / statistics.median(v) for k, v in times.items()}
        # Load from other jobs on this shared machine changes between repeats, so the ratios are taken within each
        # repeat (the four ways run back to back) and their median reported.
        ratios = {f"c/{k}": statistics.median(times[k][i] / times["c"][i] for i in range(args.repeats))
                  for k in ("a", "b", "d")}
        ratio_range = {f"c/{k}": (min(times[k][i] / times["c"][i] for i in range(args.repeats)),
                                  max(times[k][i] / times["c"][i] for i in range(args.repeats))) for k in ("a", "b", "d")}
        peak = measure_peak(name, bs, args.copies)
        row = {"model": desc, "ips": ips, "ratios": ratios, "ratio_range": ratio_range, "peak": peak,
               "breakdown": breakdown(model, pre, paths),
               "load": os.getloadavg()[0], "per_rep": {k: [len(paths) / t for t in v] for k, v in times.items()}}
        if name == "lite0":
            # accuracy side of the speed levers, on the real weights
            full = run_pthkit(model, pre, paths, bs, draft=False)
            row["draft_agree"] = agreement(tops["c"], full)
            from pthkit.samples import demo_photos
            from pthkit.tasks.predict import predict

            sample = [str(p) for p in demo_photos()]
            big = []
            from PIL import Image

            big_dir = HERE / "_work" / "predict_samples_x4"
            big_dir.mkdir(parents=True, exist_ok=True)
            for p in sample:  # the sample photos enlarged 4x: the size where draft decoding kicks in
                out = big_dir / (Path(p).stem + ".jpg")
                if not out.exists():
                    im = Image.open(p).convert("RGB")
                    im.resize((im.width * 4, im.height * 4), Image.BICUBIC).save(out, quality=92)
                big.append(str(out))
            a = [p.classes[0].index for p in predict(model, pre, big, workers=0)]
            b = [p.classes[0].index for p in predict(model, pre, big, workers=0, draft=False)]
            row["draft_agree_samples"] = (agreement(a, b), len(a))
            t16, top16 = timed(run_pthkit, model, pre, paths, bs, amp="bf16")
            t32 = statistics.median(times["c"])
            row["bf16"] = {"agree": agreement(tops["c"], top16), "ips": len(paths) / t16, "ips_fp32": len(paths) / t32}
            d16, dtop16 = run_ceiling(model, tensors, bs, amp="bf16")
            row["bf16"]["ceiling_ips"] = len(paths) / d16
            cli = statistics.median(measure_cli(bs) for _ in range(max(1, args.repeats - 1)))
            row["cli"] = {"wall": cli, "api": t32}
        rows.append(row)
        print(json.dumps(row, indent=1, default=str), flush=True)

    text = render(rows, paths, mp, bs, args.repeats)
    print(text)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"written to {args.out}")
    return 0


def render(rows, paths, mp, bs, repeats) -> str:
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    small = sum(m < 0.5 for m in mp)
    mid = sum(0.5 <= m < 5 for m in mp)
    large = sum(m >= 5 for m in mp)
    lines = [
        "# Benchmark: prediction throughput (`benchmarks/predict.py`)",
        "",
        f"- Date: {now}; machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; shared with other jobs "
        "(load average shown per model), so absolute numbers are noisy.",
        f"- Images: {len(paths)} JPEGs made from the packages' sample photos: {small} under 0.5 MP, {mid} near 2 MP, "
        f"{large} near 12 MP ({sum(mp):.0f} MP in all). Batch size {bs}; {repeats} interleaved repeats, medians.",
        f"- Command: `.venv/bin/python benchmarks/predict.py --repeats {repeats} --batch-size {bs} --copies "
        f"{len(paths) // 80}`; load average (1 min) at the start: {START_LOAD:.2f}.",
        "- (a) classic per-image loop (PIL, Resize((224,224)), batch 1); (b) timm inference.py recipe (ImageDataset + "
        "create_transform + DataLoader, 2 workers); (c) `pthkit.tasks.predict.predict` defaults after the CLI thread policy (`cli_thread_policy`, once); (d) model only "
        "(tensors in memory, channels_last, inference_mode, best of 1 and all threads).",
        "",
        "| model | (a) classic | (b) timm recipe | (c) pthkit | (d) model only | (c)/(a) | (c)/(b) | (c)/(d) | "
        "peak RSS (c) main / children | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        i, q, rr = r["ips"], r["ratios"], r["ratio_range"]
        lines.append(
            f"| {r['model']} | {i['a']:.1f} | {i['b']:.1f} | {i['c']:.1f} | {i['d']:.1f} | "
            f"{q['c/a']:.2f}x ({rr['c/a'][0]:.2f}-{rr['c/a'][1]:.2f}) | {q['c/b']:.2f}x ({rr['c/b'][0]:.2f}-{rr['c/b'][1]:.2f}) | "
            f"{q['c/d']:.2f} ({rr['c/d'][0]:.2f}-{rr['c/d'][1]:.2f}) | {r['peak']['peak_main_mb']:.0f} MB / "
            f"{r['peak']['peak_worker_mb']:.0f} MB | {r['load']:.1f} |"
        )
    lines.append("")
    lines.append("Images per second: medians over the repeats. Ratios: median of the per-repeat ratios (range in "
                 "brackets), since load from other jobs changes between repeats. Per repeat (img/s):")
    lines.append("")
    for r in rows:
        per = r["per_rep"]
        lines.append(f"- {r['model']}: " + "; ".join(
            f"({k}) " + ", ".join(f"{v:.1f}" for v in per[k]) for k in ("a", "b", "c", "d")))
    lines += ["", "Where the time goes (ms per image, 1 thread, steps one after the other; (c) overlaps "
              "them on the cores):", ""]
    for r in rows:
        b = r["breakdown"]
        lines.append(f"- {r['model']}: decode (reduced-size JPEG) {b['decode']:.1f}, resize + crop (PIL) "
                     f"{b['resize_crop']:.1f}, uint8 -> normalized float (per batch) {b['normalize']:.2f}, "
                     f"model forward {b['model_1thread']:.1f}")
    for r in rows:
        if "draft_agree" in r:
            lines += [
                "",
                f"## Accuracy of the speed levers ({r['model']})",
                "",
                f"- Reduced-size JPEG decoding vs full decoding, top-1 agreement: {r['draft_agree']:.1%} on the "
                f"{len(paths)} benchmark images; {r['draft_agree_samples'][0]:.1%} on the {r['draft_agree_samples'][1]} "
                "sample photos enlarged 4x (where draft decoding applies).",
                f"- bf16 autocast vs fp32, top-1 agreement: {r['bf16']['agree']:.1%}; (c) {r['bf16']['ips']:.1f} img/s "
                f"in bf16 vs {r['bf16']['ips_fp32']:.1f} in fp32; model-only ceiling in bf16 "
                f"{r['bf16']['ceiling_ips']:.1f} img/s.",
                f"- CLI: `pthkit predict FILE FOLDER --json` takes {r['cli']['wall']:.1f} s wall vs {r['cli']['api']:.1f} s "
                f"for the API call alone: {r['cli']['wall'] - r['cli']['api']:.1f} s of start-up (Python + torch "
                "import, reading, identifying and loading the file, resolving preprocessing).",
            ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
