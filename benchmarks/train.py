"""Fine-tuning benchmarks: (1) throughput of ``pthkit finetune``'s loop vs a plain PyTorch loop, (2) digits accuracy.

    .venv/bin/python benchmarks/train.py                 # both, results to benchmarks/results/train.md
    .venv/bin/python benchmarks/train.py throughput      # only the side-by-side throughput comparison
    .venv/bin/python benchmarks/train.py digits          # only the acceptance run (efficientnet-lite0 on digits)

(1) Same model (the real efficientnet-lite0 ``.pth`` with a new 10-class head), same batch size, same timm
augmentation (``create_transform(is_training=True)``), same DataLoader workers, same images; each repeat trains one
epoch with each loop, alternating, and the medians of the training-loop img/s are compared (target ≥ 0.95×).
pthkit's number is its own per-epoch ``train_img_per_s`` (data loading + forward/backward/step, without validation
and checkpoint writing); the plain loop's is measured the same way over its epoch.

(2) scikit-learn's ``load_digits`` (1797 8×8 images) upscaled to RGB PNGs in class folders; ``pthkit.finetune`` from
the efficientnet-lite0 ``.pth`` (architecture identified from the file) with a stratified 80/20 split.
Target: ≥ 95% validation accuracy.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results" / "train.md"


def make_digits_folder(root: Path, size: int = 64, limit: int | None = None) -> Path:
    """Write sklearn's digits as ``root/<digit>/<i>.png`` RGB images of ``size``×``size`` (bicubic upscaling)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, targets = digits.images, digits.target
    if limit is not None:
        images, targets = images[:limit], targets[:limit]
    for i, (img, t) in enumerate(zip(images, targets)):
        d = root / str(int(t))
        d.mkdir(parents=True, exist_ok=True)
        arr = (img / 16.0 * 255).astype(np.uint8)
        Image.fromarray(arr).resize((size, size), Image.BICUBIC).convert("RGB").save(d / f"{i:04d}.png")
    return root


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {dev}; torch {torch.__version__}, torch threads "
            f"{torch.get_num_threads()}; load average {os.getloadavg()[0]:.1f}")


def _date() -> str:
    return subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()


# --- (1) throughput --------------------------------------------------------------------------------------------------


def plain_loop_epoch(weights: Path, data: Path, *, size: int, batch_size: int, workers: int, device: str) -> float:
    """The plain PyTorch recipe: timm model + ImageFolder + the same timm augmentation + AdamW; img/s of one epoch."""
    import timm
    import torch
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    from pthkit.loading import load_model

    torch.manual_seed(0)
    model, _ = load_model(weights, "timm:efficientnet_lite0", num_classes=10, partial=True, device=device)
    model.train()
    dev = torch.device(device)
    cfg = timm.data.resolve_data_config({}, model=model)
    tf = create_transform((3, size, size), is_training=True, interpolation=cfg["interpolation"], mean=cfg["mean"],
                          std=cfg["std"], hflip=0.0, scale=(0.6, 1.0), color_jitter=0.0)
    ds = ImageFolder(str(data / "train"), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         pin_memory=dev.type == "cuda", persistent_workers=workers > 0, drop_last=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    crit = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    n = 0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        if dev.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        loss = crit(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += y.numel()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def pthkit_epoch(weights: Path, data: Path, out: Path, *, size: int, batch_size: int, workers: int,
                 device: str) -> float:
    from pthkit.tasks.finetune import finetune

    r = finetune(weights, data, out, arch="timm:efficientnet_lite0", epochs=1, batch_size=batch_size, size=size,
                 workers=workers, hflip=0.0, crop_scale_min=0.6, color_jitter=0.0, progress=False, overwrite=True,
                 device=device)
    return float(r.history[0]["train_img_per_s"])


def throughput(repeats: int, *, size: int, batch_size: int, images: int, workers: int, device: str) -> dict:
    from pthkit.samples import efficientnet_lite0_weights

    weights = efficientnet_lite0_weights()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_digits_folder(root / "data" / "train", size=size, limit=images)
        make_digits_folder(root / "data" / "val", size=size, limit=20)
        # warm-up (imports, identification caches, allocator)
        plain_loop_epoch(weights, root / "data", size=size, batch_size=batch_size, workers=workers, device=device)
        plain, tool = [], []
        for i in range(repeats):
            tool.append(pthkit_epoch(weights, root / "data", root / f"out{i}", size=size, batch_size=batch_size,
                                     workers=workers, device=device))
            plain.append(plain_loop_epoch(weights, root / "data", size=size, batch_size=batch_size, workers=workers,
                                          device=device))
            print(f"repeat {i + 1}: pthkit {tool[-1]:.1f} img/s, plain {plain[-1]:.1f} img/s", flush=True)
    mp, mt = statistics.median(plain), statistics.median(tool)
    return {"plain": plain, "pthkit": tool, "median_plain": mp, "median_pthkit": mt, "ratio": mt / mp,
            "size": size, "batch_size": batch_size, "images": images, "workers": workers, "repeats": repeats,
            "device": device}


# --- (2) digits acceptance -------------------------------------------------------------------------------------------


def digits(*, size: int, epochs: int, batch_size: int, workers: int, device: str, out: Path | None) -> dict:
    from pthkit.samples import efficientnet_lite0_weights
    from pthkit.tasks.finetune import finetune

    with tempfile.TemporaryDirectory() as tmp:
        data = make_digits_folder(Path(tmp) / "digits", size=size)
        out_dir = out or Path(tmp) / "run"
        t0 = time.perf_counter()
        r = finetune(efficientnet_lite0_weights(), data, out_dir, epochs=epochs, batch_size=batch_size, size=size,
                     lr=3e-3, backbone_lr_scale=1 / 3, warmup_epochs=0.5, hflip=0.0, crop_scale_min=0.6,
                     color_jitter=0.0, workers=workers, device=device, progress=sys.stderr.isatty(), overwrite=True,
                     seed=0)
        wall = time.perf_counter() - t0
    best = r.best or {}
    return {"val_acc": best.get("val_acc"), "best_epoch": r.best_epoch, "epochs": r.epochs_run, "wall_s": wall,
            "arch": r.architecture, "history": r.history, "size": size, "batch_size": batch_size, "device": device,
            "train_img_per_s": statistics.median(h["train_img_per_s"] for h in r.history)}


def _write(new: dict) -> None:
    import json

    store = RESULTS.with_suffix(".json")
    results = json.loads(store.read_text()) if store.is_file() else {}
    results.update(new)  # keep the other part's latest numbers when only one part was run
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text(json.dumps(results, indent=1, default=str) + "\n", encoding="utf-8")
    lines = ["# Fine-tuning benchmarks (`benchmarks/train.py`)", ""]
    t = results.get("throughput")
    if t:
        lines += [
            "## Training throughput: `pthkit finetune` loop vs a plain PyTorch loop", "",
            f"Run {t['date']} on {t['machine']}.", "",
            f"efficientnet-lite0 (real `.pth`, new 10-class head), {t['images']} digits images at {t['size']} px, "
            f"batch {t['batch_size']}, same timm augmentation, {t['workers']} loader workers, device {t['device']}; "
            f"one epoch per repeat, alternating, {t['repeats']} repeats. Command: `OMP_NUM_THREADS=1 python "
            f"benchmarks/train.py throughput --repeats {t['repeats']} --workers {t['workers']} --size {t['size']} "
            f"--images {t['images']}`.", "",
            "| loop | img/s per repeat | median img/s |", "|---|---|---|",
            f"| plain PyTorch | {', '.join(f'{v:.1f}' for v in t['plain'])} | {t['median_plain']:.1f} |",
            f"| pthkit finetune | {', '.join(f'{v:.1f}' for v in t['pthkit'])} | {t['median_pthkit']:.1f} |", "",
            f"**Ratio pthkit / plain: {t['ratio']:.3f}×** (target ≥ 0.95×).", "",
        ]
    d = results.get("digits")
    if d:
        lines += [
            "## Acceptance: efficientnet-lite0 `.pth` fine-tuned on scikit-learn digits", "",
            f"Run {d['date']} on {d['machine']}.", "",
            f"1797 digits upscaled to {d['size']}×{d['size']} RGB PNGs, stratified 80/20 split (seed 0), "
            f"architecture identified from the file as `{d['arch']}`, batch {d['batch_size']}, device {d['device']}. "
            "Recipe: AdamW, head lr 3e-3, backbone lr 1e-3 (`--backbone-lr-scale 0.333`), warm-up 0.5 epoch then "
            "cosine, weight decay 0.05, label smoothing 0.1, random-resized-crop scale 0.6–1, no flip (digits), no "
            "colour jitter; normalization inferred from the file (0.5/0.5). Command: `OMP_NUM_THREADS=1 "
            "python benchmarks/train.py digits --epochs 5 --workers 1 --size 64` (same as `pthkit finetune "
            "efficientnet-lite0-57934424.pth DIGITS --out RUN --epochs 5 --size 64 --lr 3e-3 --backbone-lr-scale 0.333 "
            "--warmup-epochs 0.5 --hflip 0 --crop-scale-min 0.6 --color-jitter 0 --workers 1`).",
            "", f"**Best validation accuracy: {d['val_acc']:.4f}** (epoch {d['best_epoch']} of {d['epochs']}; "
            f"target ≥ 0.95). Wall time {d['wall_s']:.0f} s end to end (identification, image check, training, "
            f"validation, checkpoints, bundle); median {d['train_img_per_s']:.0f} training img/s.", "",
            "| epoch | train loss | train acc | val loss | val acc | img/s | s |", "|---|---|---|---|---|---|---|",
        ]
        for h in d["history"]:
            lines.append(f"| {h['epoch']} | {h['train_loss']:.4f} | {h['train_acc']:.4f} | {h.get('val_loss', 0):.4f} "
                         f"| {h.get('val_acc', 0):.4f} | {h['train_img_per_s']:.0f} | {h['time_s']:.0f} |")
        lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", choices=("all", "throughput", "digits"), default="all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--images", type=int, default=320, help="training images per throughput epoch")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="keep the digits run's folder here")
    a = p.parse_args(argv)
    results: dict = {}
    if a.what in ("all", "throughput"):
        results["throughput"] = throughput(a.repeats, size=a.size, batch_size=a.batch_size, images=a.images,
                                           workers=a.workers, device=a.device)
        results["throughput"].update(date=_date(), machine=_machine())
        print(results["throughput"])
    if a.what in ("all", "digits"):
        results["digits"] = digits(size=a.size, epochs=a.epochs, batch_size=a.batch_size, workers=a.workers,
                                   device=a.device, out=a.out)
        results["digits"].update(date=_date(), machine=_machine())
        print({k: v for k, v in results["digits"].items() if k != "history"})
    _write(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
