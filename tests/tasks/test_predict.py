"""pthkit.tasks.predict: batched prediction, every output mode, features, label sources, failures in place."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from pthkit.errors import InputNotFoundError, PreprocessError
from pthkit.preprocess.types import Preprocess
from pthkit.tasks.predict import Prediction, auto_workers, predict, save_features

PRE = Preprocess(input_size=(3, 64, 64), crop_pct=1.0)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=10).eval()


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    paths = []
    rng = np.random.default_rng(0)
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (48 + 8 * i, 80, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def _direct_logits(model: torch.nn.Module, paths: list[Path]) -> torch.Tensor:
    tf = PRE.transform()
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in paths])
    with torch.inference_mode():
        return model(x)


def test_softmax_topk_in_input_order_with_failures_in_place(model, images, tmp_path: Path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    inputs = [images[0], bad, images[1], tmp_path / "missing.png", images[2]]
    preds = list(predict(model, PRE, inputs, batch_size=2, top_k=3, workers=0))
    assert [p.path for p in preds] == [str(p) for p in inputs]
    assert [p.ok for p in preds] == [True, False, True, False, True]
    assert "not an image" in (preds[1].error or "") and "no such file" in (preds[3].error or "")
    expected = torch.softmax(_direct_logits(model, [images[0], images[1], images[2]]), 1)
    for pred, probs in zip([preds[0], preds[2], preds[4]], expected):
        assert len(pred.classes) == 3
        top = probs.topk(3)
        assert [c.index for c in pred.classes] == top.indices.tolist()
        assert [c.score for c in pred.classes] == pytest.approx(top.values.tolist(), abs=1e-5)
        assert all(c.label is None for c in pred.classes)  # 10 outputs, no names known
    assert preds[1].to_dict() == {"path": str(bad), "ok": False, "error": preds[1].error}


def test_workers_give_the_same_answers(model, images):
    inline = list(predict(model, PRE, images, batch_size=2, workers=0, mode="logits"))
    pooled = list(predict(model, PRE, images, batch_size=2, workers=2, mode="logits"))
    for a, b in zip(inline, pooled):
        assert a.path == b.path
        assert a.logits == pytest.approx(b.logits, abs=1e-5)


def test_logits_mode_keeps_the_full_vector(model, images):
    preds = list(predict(model, PRE, images[:2], mode="logits", top_k=2, channels_last=False))
    direct = _direct_logits(model, images[:2])
    for pred, row in zip(preds, direct):
        assert pred.logits == pytest.approx(row.tolist(), abs=1e-4)
        assert pred.classes[0].score == pytest.approx(float(row.max()), abs=1e-4)
        assert pred.to_dict()["logits"] == pytest.approx(row.tolist(), abs=1e-4)


def test_multi_label_threshold(model, images):
    everything = list(predict(model, PRE, images[:1], mode="sigmoid", threshold=0.0))[0]
    assert len(everything.classes) == 10
    scores = [c.score for c in everything.classes]
    assert scores == sorted(scores, reverse=True)
    direct = torch.sigmoid(_direct_logits(model, images[:1]))[0]
    assert everything.classes[0].score == pytest.approx(float(direct.max()), abs=1e-5)
    nothing = list(predict(model, PRE, images[:1], mode="sigmoid", threshold=1.01))[0]
    assert nothing.ok and nothing.classes == []
    middle = float(direct.median())
    some = list(predict(model, PRE, images[:1], mode="sigmoid", threshold=middle))[0]
    assert {c.index for c in some.classes} == {i for i, v in enumerate(direct.tolist()) if v >= middle}


def test_features_timm_are_pre_logits(model, images, tmp_path: Path):
    preds = list(predict(model, PRE, images[:3], features=True))
    tf = PRE.transform()
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images[:3]])
    with torch.inference_mode():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    got = np.stack([p.features for p in preds])
    assert got.shape == (3, model.num_features)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)

    npy = save_features(preds, tmp_path / "emb.npy")
    np.testing.assert_allclose(np.load(npy[0]), got)
    assert npy[1].read_text().splitlines() == [str(p) for p in images[:3]]

    from safetensors import safe_open

    (st,) = save_features(preds, tmp_path / "emb.safetensors")
    with safe_open(str(st), "np") as fh:
        np.testing.assert_allclose(fh.get_tensor("features"), got)
        assert json.loads(fh.metadata()["paths"]) == [str(p) for p in images[:3]]


def test_features_torchvision_hook_captures_classifier_input(images):
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    tv = mobilenet_v3_small(num_classes=7).eval()
    captured = {}
    handle = tv.classifier[-1].register_forward_hook(lambda m, a, o: captured.setdefault("x", a[0].clone()))
    tf = PRE.transform()
    x = torch.stack([tf(Image.open(p).convert("RGB")) for p in images[:2]])
    with torch.inference_mode():
        tv(x)
    handle.remove()
    preds = list(predict(tv, PRE, images[:2], features=True, channels_last=False))
    got = np.stack([p.features for p in preds])
    assert got.shape == (2, 1024)
    np.testing.assert_allclose(got, captured["x"].numpy(), atol=1e-4)
    assert len(tv.classifier[-1]._forward_hooks) == 0  # the hook is removed after the run


def test_save_features_rejects_other_suffix(model, images, tmp_path: Path):
    preds = list(predict(model, PRE, images[:1], features=True))
    with pytest.raises(PreprocessError, match=r"\.npy or \.safetensors"):
        save_features(preds, tmp_path / "emb.csv")


def test_label_sources(model, images, tmp_path: Path):
    names = [f"c{i}" for i in range(10)]
    labelled = Preprocess(input_size=(3, 64, 64), crop_pct=1.0, label_names=names)
    pred = next(predict(model, labelled, images[:1], top_k=1))
    assert pred.classes[0].label == names[pred.classes[0].index]

    lab = tmp_path / "labels.json"
    lab.write_text(json.dumps([f"x{i}" for i in range(10)]))
    pred = next(predict(model, labelled, images[:1], top_k=1, labels=lab))  # the user's file wins
    assert pred.classes[0].label == f"x{pred.classes[0].index}"

    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    with pytest.raises(PreprocessError, match="2 names"):
        list(predict(model, PRE, images[:1], labels=short))


def test_imagenet_names_for_1000_class_heads(images):
    torch.manual_seed(0)
    big = timm.create_model("test_resnet", num_classes=1000).eval()
    pred = next(predict(big, PRE, images[:1], top_k=2))
    from pthkit.labels import imagenet_labels

    assert pred.classes[0].label == imagenet_labels()[pred.classes[0].index]


def test_bf16_autocast_close_to_fp32(model, images):
    fp32 = list(predict(model, PRE, images, mode="logits"))
    bf16 = list(predict(model, PRE, images, mode="logits", amp="bf16"))
    for a, b in zip(fp32, bf16):
        assert np.allclose(a.logits, b.logits, atol=0.15, rtol=0.1)


def test_in_memory_images_and_prediction_str(model):
    img = Image.new("RGB", (70, 50), (10, 200, 30))
    pred = next(predict(model, PRE, [img], top_k=1))
    assert pred.path == "<image 0>" and isinstance(pred, Prediction)
    assert str(pred).startswith("<image 0>: class ")


def test_bad_arguments(model, images):
    with pytest.raises(PreprocessError, match="softmax, sigmoid or logits"):
        list(predict(model, PRE, images, mode="argmax"))  # type: ignore[arg-type]
    with pytest.raises(PreprocessError, match="bf16, fp16"):
        list(predict(model, PRE, images, amp="int8"))  # type: ignore[arg-type]
    with pytest.raises(InputNotFoundError, match="no inputs"):
        list(predict(model, PRE, []))


def test_auto_workers():
    assert auto_workers(3) == 0
    assert 1 <= auto_workers(1000) <= 8
    assert 1 <= auto_workers(1000, "cuda") <= 8


def test_threads_are_never_changed_by_the_library(model, images, monkeypatch):
    """Thread policy is the caller's: predict never calls torch.set_num_threads (``threads=`` warns and is ignored)."""
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    before = torch.get_num_threads()
    with pytest.warns(DeprecationWarning, match="threads"):
        gen = predict(model, PRE, images, batch_size=2, threads=1)
    rows = list(gen)
    assert len(rows) == len(images) and calls == [] and torch.get_num_threads() == before


def test_draft_decoding_agrees_with_full_decoding_on_real_weights(lite0_path, tmp_path: Path):
    """Reduced-size JPEG decoding must not change answers: top-1 agreement >= 99% on enlarged sample photos."""
    from pthkit.loading import load_model
    from pthkit.preprocess import resolve_preprocess
    from pthkit.samples import demo_photos

    model, report = load_model(lite0_path, arch="timm:efficientnet_lite0")
    pre = resolve_preprocess(model, arch=report.architecture, checkpoint=report.checkpoint)
    big = []
    for p in demo_photos():
        im = Image.open(p).convert("RGB")
        for factor in (2, 4, 7):  # 2x: no reduction yet (needs >= 2x the 256 px resize); 4x: 1/2; 7x: 1/4
            out = tmp_path / f"{p.stem}_x{factor}.jpg"
            im.resize((im.width * factor, im.height * factor), Image.BICUBIC).save(out, quality=92)
            big.append(out)
    drafted = list(predict(model, pre, big, workers=0))
    full = list(predict(model, pre, big, workers=0, draft=False))
    agree = sum(a.classes[0].index == b.classes[0].index for a, b in zip(drafted, full)) / len(big)
    assert agree >= 0.99, [(a.path, a.top1, b.top1) for a, b in zip(drafted, full) if a.top1.index != b.top1.index]


def test_threaded_decoding_gives_the_inline_answers_in_order(model, images, tmp_path: Path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    inputs = [images[0], bad, *images[1:]]
    inline = list(predict(model, PRE, inputs, batch_size=2, workers=0, mode="logits"))
    threaded = list(predict(model, PRE, inputs, batch_size=2, mode="logits"))  # CPU, workers=None: threads
    assert [p.path for p in threaded] == [str(p) for p in inputs]
    assert [p.ok for p in threaded] == [True, False, True, True, True, True]
    assert "not an image" in (threaded[1].error or "")
    for a, b in zip(inline, threaded):
        assert a.ok == b.ok
        if a.ok:
            assert a.logits == pytest.approx(b.logits, abs=1e-5)


def test_decoding_threads_run_at_a_lower_priority():
    import sys
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from pthkit.data.images import DECODE_NICENESS
    from pthkit.data.images import lower_priority as _lower_priority

    def niceness() -> int:
        _lower_priority()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    with ThreadPoolExecutor(1) as pool:
        got = pool.submit(niceness).result()
    own = os.getpriority(os.PRIO_PROCESS, 0)
    if sys.platform.startswith("linux"):
        assert got == min(19, own + DECODE_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the calling (model) thread keeps its priority


def test_threaded_decoding_stops_cleanly_when_the_caller_stops(model, images):
    gen = predict(model, PRE, images, batch_size=1)
    first = next(gen)
    gen.close()
    assert first.ok and first.path == str(images[0])
