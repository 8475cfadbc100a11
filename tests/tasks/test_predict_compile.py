"""`predict(..., compile=True)` (`pthkit predict --compile`) gives the same answers as eager mode.

torch.compile on CPU builds C++ kernels (about 30 s here), so this runs with the slow tests (`make test-slow`)."""

from __future__ import annotations

import pytest
import timm
import torch

from pthkit.preprocess import resolve_preprocess
from pthkit.samples import demo_photos
from pthkit.tasks.predict import predict


@pytest.mark.slow
def test_compiled_predictions_match_eager():
    torch.manual_seed(0)
    model = timm.create_model("resnet18", num_classes=1000).eval()
    pre = resolve_preprocess(model, arch="timm:resnet18", infer=False)
    photos = [str(p) for p in demo_photos()]
    eager = list(predict(model, pre, photos, top_k=3))
    compiled = list(predict(model, pre, photos, top_k=3, compile=True))
    assert all(r.ok for r in compiled)
    assert [[c.index for c in r.classes] for r in compiled] == [[c.index for c in r.classes] for r in eager]
    for a, b in zip(compiled, eager):
        assert [c.score for c in a.classes] == pytest.approx([c.score for c in b.classes], abs=1e-4)
