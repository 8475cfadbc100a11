"""finetune: outputs, reproducibility, resume after kill -9, DDP with 2 CPU processes, freeze/early stop, bad images.

Tiny model (timm ``test_efficientnet``, ~100k parameters) on 32 px images of 3 classes, so each run takes seconds.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pthkit.errors import LoadError, TrainingError
from pthkit.tasks.finetune import CHECKPOINT_NAME, FinetuneResult, _cosine_warmup, finetune, load_training_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared tiny-data helpers
from _train_data import CLASSES, TINY_ARCH, make_image_folder, make_tiny_weights

HERE = Path(__file__).parent
ARGS = dict(arch=TINY_ARCH, batch_size=4, size=32, workers=0, seed=0, progress=False, lr=1e-3)
# One thread: on a shared 2-core machine OpenMP spinning makes 2 threads ~30× slower for a model this small.
DROP = {"drop_rate": 0.3, "drop_path_rate": 0.2}
SUB_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p)}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    return make_tiny_weights(root / "w.pth"), make_image_folder(root / "data", per_class=8, size=32)


def _weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].numel())
    assert worst <= atol, f"weights differ by {worst}"


def test_finetune_writes_bundle_logs_and_checkpoint(tmp_path, setup_data):
    weights, data = setup_data
    r = finetune(weights, data, tmp_path / "out", epochs=2, keep_checkpoint=True, **ARGS)
    out = tmp_path / "out"
    assert r.classes == list(CLASSES) and r.epochs_run == 2 and not r.resumed
    assert [h["epoch"] for h in r.history] == [1, 2]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in r.history)
    assert r.history[0]["train_images"] == 18 and r.history[0]["val_images"] == 6
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    csv_rows = (out / "metrics.csv").read_text().splitlines()
    assert csv_rows[0].startswith("epoch,step,frozen,train_loss") and len(csv_rows) == 3
    state = load_training_checkpoint(out / CHECKPOINT_NAME)  # weights_only=True inside
    assert state["epoch"] == 2 and state["batch_in_epoch"] == 0 and state["global_step"] == 10
    assert {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(state)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["label_names"] == list(CLASSES) and cfg["num_classes"] == 3
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    section = cfg["pthkit"]
    assert section["training"]["epochs"] == 2 and section["metrics"]["epoch"] == r.best_epoch
    assert len(section["source_sha256"]) == 64 and section["arch"] == TINY_ARCH
    # the bundle is the best epoch's weights, loadable by pthkit and by timm
    import timm

    from pthkit.bundle import load_bundle

    model, pre, _ = load_bundle(out, device="cpu")
    assert list(pre.label_names) == list(CLASSES)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x))
    _assert_same_weights(_weights_of(out), load_file(str(out / "checkpoints" / "best.safetensors")), atol=0)


def test_the_finished_folder_keeps_one_copy_of_the_weights_with_normal_modes(tmp_path, setup_data):
    """It used to keep checkpoints/last.pt and checkpoints/best.safetensors beside model.safetensors (5x the
    weights), with the weights files 0600 and a new folder 0700."""
    weights, data = setup_data
    out = tmp_path / "new" / "out"
    old_umask = os.umask(0o022)
    try:
        finetune(weights, data, out, epochs=1, **ARGS)
    finally:
        os.umask(old_umask)
    files = {p.relative_to(out).as_posix(): p for p in out.rglob("*")}
    assert set(files) == {"model.safetensors", "config.json", "metrics.jsonl", "metrics.csv"}
    weights_bytes = files["model.safetensors"].stat().st_size
    assert sum(p.stat().st_size for p in files.values()) < weights_bytes * 1.2
    assert {oct(p.stat().st_mode & 0o777) for p in files.values()} == {"0o644"}
    assert oct(out.stat().st_mode & 0o777) == "0o755"
    with pytest.raises(TrainingError) as err:  # a finished run without its checkpoint: say why resume cannot work
        finetune(weights, data, out, resume=True, epochs=2, **ARGS)
    assert "--keep-checkpoint" in str(err.value)


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path, setup_data):
    weights, data = setup_data
    with pytest.raises(TrainingError):  # nothing to resume
        finetune(weights, data, tmp_path / "none", resume=True, **ARGS)
    assert not (tmp_path / "none").exists()
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"x")
    with pytest.raises(TrainingError):  # an earlier run's folder, without --resume or --overwrite
        finetune(weights, data, tmp_path / "run", **ARGS)
    with pytest.raises(TrainingError):  # a checkpoint that is not one
        finetune(weights, data, tmp_path / "run", resume=True, **ARGS)
    assert (tmp_path / "run" / CHECKPOINT_NAME).read_bytes() == b"x"  # left as it was
    with pytest.raises(TrainingError):
        finetune(weights, data, tmp_path / "x", amp="fp8", **ARGS)  # type: ignore[arg-type]
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("option", [{"size": 0}, {"size": (32, 0)}, {"workers": -1}, {"epochs": 0},
                                    {"freeze_epochs": 5, "epochs": 2}, {"monitor": "accuracy"}])
def test_refuses_bad_options_before_anything_runs(tmp_path, setup_data, option):
    """--size 0 used to be silently ignored and --workers -1 used to crash inside the DataLoader."""
    weights, data = setup_data
    with pytest.raises(TrainingError):
        finetune(weights, data, tmp_path / "a", **{**ARGS, **option})
    assert not (tmp_path / "a").exists()


_KILLED_RUN = textwrap.dedent("""
    import sys, time
    import pthkit.data.splits as D
    _get = D.ImageItemsDataset.__getitem__
    def slow(self, key):  # slow the data down so the parent can kill the run mid-epoch
        time.sleep(0.03)
        return _get(self, key)
    D.ImageItemsDataset.__getitem__ = slow
    from pthkit.tasks.finetune import finetune
    finetune(sys.argv[1], sys.argv[2], sys.argv[3], arch=sys.argv[4], epochs=3, batch_size=4, size=32, workers=0,
             seed=0, progress=False, lr=1e-3, save_every_steps=1, arch_kwargs=eval(sys.argv[5]))
""")


def test_resume_after_kill_9_mid_epoch_matches_an_uninterrupted_run(tmp_path, setup_data):
    weights, data = setup_data
    # dropout and drop-path: the resumed run must also restore the RNG streams they consume
    ref = finetune(weights, data, tmp_path / "ref", epochs=3, save_every_steps=1, arch_kwargs=DROP, **ARGS)

    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_RUN, str(weights), str(data), str(out), TINY_ARCH,
                             repr(DROP)],
                            env=SUB_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    ckpt = out / CHECKPOINT_NAME
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists() and load_training_checkpoint(ckpt)["global_step"] >= 7:  # epoch 2, step 2 of 5
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[0].decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = load_training_checkpoint(ckpt)
    assert 0 < state["batch_in_epoch"] < 5 and state["global_step"] < 15, "expected a mid-epoch checkpoint"
    assert not (out / "model.safetensors").exists()

    resumed = finetune(weights, data, out, resume=True, **ARGS)
    assert resumed.resumed and resumed.epochs_run == 3
    assert [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    for a, b in zip(ref.history, resumed.history):
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    assert resumed.best_epoch == ref.best_epoch
    _assert_same_weights(_weights_of(tmp_path / "ref"), _weights_of(out))


@pytest.mark.timeout(180)
def test_ddp_two_cpu_processes_train_and_only_rank0_writes(tmp_path, setup_data):
    """The multi-node command line (two torchrun agents, --nnodes 2, c10d rendezvous at --rdzv-endpoint), as two
    "nodes" on localhost with one gloo process each."""
    import socket

    weights, data = setup_data
    out = tmp_path / "ddp"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**SUB_ENV, "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "pthkit-test",
           "-m", "pthkit.cli.train_cmds", "finetune", str(weights), str(data), "--out", str(out), "--arch", TINY_ARCH,
           "--epochs", "2", "--batch-size", "8", "--size", "32", "--workers", "0", "--json"]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=150) for node in nodes]
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    printed = [stdout for stdout, _ in outputs if stdout.strip()]
    assert len(printed) == 1  # printed once, by rank 0 (on whichever node the rendezvous made rank 0)
    result = json.loads(printed[0])
    assert result["world_size"] == 2 and result["epochs_run"] == 2
    first = result["history"][0]
    # 9 images per rank in batches of 4: 4 + 4 (+ a batch of 1 dropped: BatchNorm cannot train on it)
    assert first["train_images"] == 16 and first["step"] == 2
    assert first["val_images"] == 6  # all-reduced over both ranks, no padding
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pthkit"]["world_size"] == 2 and cfg["label_names"] == list(CLASSES)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert not list(out.rglob("*.tmp*"))


def test_freeze_epochs_train_only_the_head_first(tmp_path, setup_data):
    weights, data = setup_data
    finetune(weights, data, tmp_path / "f", epochs=1, freeze_epochs=1, **ARGS)
    trained = _weights_of(tmp_path / "f")
    original = torch.load(weights, weights_only=True)
    frozen_same = [k for k in trained if not k.startswith("classifier") and "running" not in k
                   and "num_batches" not in k and torch.equal(trained[k], original[k])]
    assert len(frozen_same) == sum(1 for k in trained if not k.startswith("classifier") and "running" not in k
                                   and "num_batches" not in k)
    assert trained["classifier.weight"].shape == (3, original["classifier.weight"].shape[1])
    assert json.loads((tmp_path / "f" / "metrics.jsonl").read_text())["frozen"] is True


def test_early_stopping_bad_image_class_weights_accumulation_and_bf16(tmp_path, setup_data):
    weights, _ = setup_data
    data = make_image_folder(tmp_path / "data", per_class=8, size=32)
    (data / "b_green" / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00broken")
    r = finetune(weights, data, tmp_path / "o", epochs=6, patience=1, **{**ARGS, "lr": 1e-12},
                 class_weights="balanced", accum_steps=2, amp="bf16")
    assert r.stopped_early and r.epochs_run == 2 and r.best_epoch == 1  # nothing can improve at lr 1e-12
    assert [p for p, _ in r.skipped] == [str(data / "b_green" / "zz_broken.png")]
    assert r.history[0]["step"] == 3  # 5 batches, accumulated by 2 → 3 optimizer steps
    cfg = json.loads((tmp_path / "o" / "config.json").read_text())
    assert cfg["pthkit"]["data"]["skipped"][0]["path"].endswith("zz_broken.png")


def _digits_folder(root: Path, size: int) -> Path:
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for i, (img, t) in enumerate(zip(d.images, d.target)):
        (root / str(int(t))).mkdir(parents=True, exist_ok=True)
        arr = (img / 16.0 * 255).astype(np.uint8)
        Image.fromarray(arr).resize((size, size), Image.BICUBIC).convert("RGB").save(root / str(int(t)) / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_acceptance_efficientnet_lite0_on_digits_reaches_95_percent(tmp_path, lite0_path):
    """The real efficientnet-lite0 .pth (identified from the file) fine-tuned on sklearn digits at 64 px."""
    data = _digits_folder(tmp_path / "digits", 64)
    r = finetune(lite0_path, data, tmp_path / "run", epochs=5, batch_size=32, size=64, lr=3e-3,
                 backbone_lr_scale=1 / 3, warmup_epochs=0.5, hflip=0.0, crop_scale_min=0.6, color_jitter=0.0,
                 workers=1, seed=0, progress=False)
    assert r.architecture.endswith("efficientnet_lite0")
    assert r.best is not None and r.best["val_acc"] >= 0.95, r.history
    assert r.best["val_images"] == 359  # stratified 20% of 1797, rounded per class


def test_finetune_accepts_a_model_object(tmp_path, setup_data):
    import timm

    _, data = setup_data
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=10)
    r = finetune(model, data, tmp_path / "m", epochs=1, **{**ARGS, "arch": None})
    assert r.architecture == TINY_ARCH and r.classes == list(CLASSES)
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["architecture"] == "test_efficientnet" and cfg["num_classes"] == 3


def test_refuses_an_out_path_that_is_a_file_and_weights_that_do_not_fit_arch(tmp_path, setup_data):
    """--out FILE used to crash with FileExistsError; a wrong --arch used to train from scratch silently."""
    weights, data = setup_data
    (tmp_path / "file").write_text("x")
    with pytest.raises(TrainingError):
        finetune(weights, data, tmp_path / "file", **ARGS)
    args = {**ARGS, "arch": "timm:test_resnet"}
    with pytest.raises(LoadError):  # refused by the strict load, before any data is read or any epoch runs
        finetune(weights, data, tmp_path / "wrong", epochs=1, **args)
    assert not (tmp_path / "wrong").exists()


def test_summary_without_validation_images_says_so(tmp_path):
    r = FinetuneResult(out_dir=tmp_path, architecture="timm:x", classes=["a", "b"], best_epoch=1, best_metric=None,
                       monitor="val_acc", history=[{"epoch": 1, "train_loss": 0.7}], epochs_run=1,
                       stopped_early=False, resumed=False)
    assert "no validation images" in str(r) and "nan" not in str(r)


class _TinyNet(torch.nn.Module):
    """A user class with neither num_classes nor reset_classifier (like torchvision's heads): 2 outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.layer1 = torch.nn.Linear(8, 50)
        self.layer2 = torch.nn.Linear(50, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(torch.relu(self.layer1(self.features(x))))


def test_a_class_without_reset_classifier_gets_its_head_replaced_before_training(tmp_path, setup_data):
    """torchvision-style models kept their 2 (or 1000) outputs for 3 classes and failed only when bundling."""
    _, data = setup_data
    torch.manual_seed(0)
    model = _TinyNet()
    backbone = model.features[0].weight.detach().clone()
    r = finetune(model, data, tmp_path / "t", epochs=1, **{**ARGS, "arch": None, "lr": 1e-12})
    assert r.head_change == "layer2: 50 → 2 replaced by 50 → 3"
    assert any(line.startswith("classifier head: layer2: 50 → 2 replaced") for line in r.evidence)
    assert model.layer2.out_features == 3 and r.history[0]["train_images"] == 18
    assert torch.allclose(model.features[0].weight, backbone, atol=1e-6)  # loaded, not re-initialized
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["num_classes"] == 3 and cfg["pthkit"]["head"]["out_features"] == 3
    assert "num_classes" not in cfg["pthkit"]["arch_kwargs"]  # the class would refuse it when rebuilt


def test_resume_applies_a_longer_epochs_and_refuses_other_changed_options(tmp_path, setup_data):
    """--resume used to ignore every other argument silently (e.g. --epochs)."""
    weights, data = setup_data
    out = tmp_path / "r"
    first = finetune(weights, data, out, epochs=1, keep_checkpoint=True, **ARGS)
    assert first.epochs_run == 1
    for changed in ({"lr": 0.5}, {"batch_size": 2}, {"seed": 1}, {"arch": "timm:test_resnet"}):
        with pytest.raises(TrainingError) as err:
            finetune(weights, data, out, resume=True, keep_checkpoint=True, **{**ARGS, **changed})
        assert "may change only" in str(err.value)
    with pytest.raises(TrainingError):  # fewer epochs than already trained
        finetune(weights, data, out, resume=True, **{**ARGS, "epochs": 0})
    more = finetune(weights, data, out, resume=True, epochs=3, **ARGS)  # the same values as stored are fine
    assert more.resumed and more.epochs_run == 3 and [h["epoch"] for h in more.history] == [1, 2, 3]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["pthkit"]["training"]["epochs"] == 3


# --- schedule and progress bar ---------------------------------------------------------------------------------------


def test_linear_warmup_then_cosine_to_zero():
    f = _cosine_warmup(4, 14)
    assert [f(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert f(14) == pytest.approx(0.0, abs=1e-12)
    decay = [f(s) for s in range(4, 15)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_no_warmup_starts_at_full_rate():
    f = _cosine_warmup(0, 10)
    assert f(0) == pytest.approx(1.0) and f(10) == pytest.approx(0.0, abs=1e-12)


def test_progress_bar_shows_loss_accuracy_and_throughput(tmp_path, monkeypatch):
    import re

    import pthkit.tasks.finetune as ft

    stats: list[dict[str, str]] = []
    update = ft._Progress.update

    def recording(self, advance, fields=None):
        if fields is not None:
            stats.append(fields)
        update(self, advance, fields)

    monkeypatch.setattr(ft._Progress, "update", recording)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        weights = make_tiny_weights(tmp_path / "w.pth")
        data = make_image_folder(tmp_path / "data", per_class=4, size=32)
        ft.finetune(weights, data, tmp_path / "out", arch=TINY_ARCH, epochs=1, batch_size=4, size=32, workers=0,
                    seed=0, progress=True)
    finally:
        torch.set_num_threads(threads)
    assert stats, "the bar was never given loss/accuracy/throughput"
    last = stats[-1]
    assert re.fullmatch(r"\d+\.\d{4}", last["loss"]) and re.fullmatch(r"[01]\.\d{3}", last["acc"]), last
    assert re.fullmatch(r"\d+", last["img/s"]) and int(last["img/s"]) > 0, last
