"""``pthkit serve`` end to end on 127.0.0.1: every endpoint, every error status, concurrency, request logs."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.serve.conftest import IMAGE_ARCH, Server

requests = pytest.importorskip("requests")


def _post_file(server: Server, data: bytes, name: str = "x.png", **form: str) -> requests.Response:
    return requests.post(server.url + "/predict", files={"file": (name, data)}, data=form, timeout=60)


def _reference(weights: Path, image: Path, top_k: int) -> list[tuple[int, float]]:
    """What ``pthkit predict`` computes for ``image``: load_model + resolve_preprocess + predict, in this process."""
    from pthkit.loading import load_model
    from pthkit.preprocess import resolve_preprocess
    from pthkit.tasks.predict import predict

    model, report = load_model(weights, IMAGE_ARCH, device="cpu")
    pre = resolve_preprocess(model, arch=report.architecture, checkpoint=report.checkpoint)
    (row,) = list(predict(model, pre, [image], top_k=top_k))
    return [(c.index, c.score) for c in row.classes]


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(buf, format="PNG")
    return buf.getvalue()


def _bomb_png() -> bytes:
    """A valid 1x1 PNG whose header claims 100000 x 100000 pixels (PIL refuses it as a decompression bomb)."""
    data = bytearray(_png(1, 1))
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), width (4), height (4)
    data[ihdr + 8:ihdr + 16] = struct.pack(">II", 100_000, 100_000)
    crc = zlib.crc32(bytes(data[ihdr + 4:ihdr + 8 + 13])) & 0xFFFFFFFF
    data[ihdr + 8 + 13:ihdr + 8 + 17] = struct.pack(">I", crc)
    return bytes(data)


# --- endpoints -------------------------------------------------------------------------------------------------------


def test_health_is_200_once_warm(image_server: Server):
    response = requests.get(image_server.url + "/health", timeout=10)
    assert response.status_code == 200


def test_predict_equals_pthkit_predict(image_server: Server, image_weights: Path, coffee: Path):
    response = _post_file(image_server, coffee.read_bytes(), "coffee.png", top_k="5")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == IMAGE_ARCH
    assert body["ok"] is True and body["mode"] == "softmax" and body["path"] == "coffee.png"
    assert isinstance(body["elapsed_ms"], float) and body["elapsed_ms"] > 0
    got = [(c["index"], c["score"]) for c in body["classes"]]
    want = _reference(image_weights, coffee, 5)
    assert [i for i, _ in got] == [i for i, _ in want]
    for (_, a), (_, b) in zip(got, want):
        assert a == pytest.approx(b, abs=1e-5)
    assert set(body["classes"][0]) == {"index", "label", "score"}


def test_json_base64_and_top_k(image_server: Server, coffee: Path):
    encoded = base64.b64encode(coffee.read_bytes()).decode()
    a = requests.post(image_server.url + "/predict", json={"image": encoded, "top_k": 3}, timeout=60)
    b = requests.post(image_server.url + "/predict?top_k=2", json={"image": "data:image/png;base64," + encoded},
                      timeout=60)
    c = _post_file(image_server, coffee.read_bytes(), "coffee.png", top_k="3")
    assert a.status_code == b.status_code == c.status_code == 200
    assert len(a.json()["classes"]) == 3 and len(b.json()["classes"]) == 2
    assert a.json()["classes"] == c.json()["classes"]
    assert b.json()["classes"] == a.json()["classes"][:2]


def test_info_describes_model_preprocessing_and_batching(image_server: Server):
    info = requests.get(image_server.url + "/info", timeout=10).json()
    import pthkit

    assert info["pthkit_version"] == pthkit.__version__
    assert info["model"]["architecture"] == IMAGE_ARCH
    pre = info["model"]["preprocess"]
    assert pre["input_size"][0] == 3 and set(pre["sources"]) >= {"mean", "std", "input_size"}
    assert "architecture" in info["model"]["describe"] or IMAGE_ARCH in info["model"]["describe"]
    assert info["batching"] == {"max_batch_size": 16, "batch_timeout_ms": 20.0, "workers": 1}
    assert info["backend"] == "torch" and info["input"]["kind"] == "image"
    assert info["limits"]["max_upload_mb"] == 1.0


def test_page_docs_and_openapi(image_server: Server):
    page = requests.get(image_server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for marker in ('id="drop"', 'id="classes"', "<details", "fetch(\"info\")", 'id="rows"'):
        assert marker in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets
    assert requests.get(image_server.url + "/docs", timeout=10).status_code == 200
    spec = requests.get(image_server.url + "/openapi.json", timeout=10).json()
    assert {"/predict", "/health", "/info", "/"} <= set(spec["paths"])
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)


# --- bad input never gives a 500 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "status", "words"),
    [
        (lambda: b"just some text, not an image\n" * 10, 400, "not an image"),
        (lambda: _png(64, 48)[:60], 400, "truncated"),
        (_bomb_png, 400, "decompression bomb"),
        (lambda: b"", 400, "empty"),
        (lambda: b"\x89PNG" + b"\0" * (1024 * 1024 + 10), 413, "upload limit"),
    ],
    ids=["text", "truncated", "bomb", "empty", "too-large"],
)
def test_bad_uploads(image_server: Server, make, status: int, words: str):
    response = _post_file(image_server, make(), "bad.png")
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": b"{not json", "headers": {"content-type": "application/json"}}, 400),
        ({"json": [1, 2, 3]}, 400),
        ({"json": {"picture": "abc"}}, 400),
        ({"json": {"image": "%%%not-base64%%%"}}, 400),
        ({"json": {"image": 12}}, 400),
        ({"json": {"inputs": [[1.0, 2.0]]}}, 400),  # rows sent to an image model
        ({"files": {"other": ("a.png", b"x")}}, 400),  # no field named file
        ({"data": b"\0" * (2 * 1024 * 1024), "headers": {"content-type": "application/json"}}, 413),
    ],
    ids=["bad-json", "not-object", "no-field", "bad-base64", "image-not-string", "rows-to-image", "no-file-field",
         "too-large-json"],
)
def test_malformed_requests(image_server: Server, kwargs: dict, status: int):
    response = requests.post(image_server.url + "/predict", timeout=60, **kwargs)
    assert response.status_code == status, response.text
    assert response.json()["error"]


@pytest.mark.parametrize("top_k", ["0", "-3", "abc", "100000"])
def test_bad_top_k(image_server: Server, coffee: Path, top_k: str):
    response = _post_file(image_server, coffee.read_bytes(), "coffee.png", top_k=top_k)
    assert response.status_code == 400 and "top_k" in response.json()["error"]


def test_a_bad_request_does_not_fail_its_batch(image_server: Server, coffee: Path):
    """Requests batched together with a broken upload are still answered (LitServe fails whole batches on raise)."""
    good = coffee.read_bytes()
    payloads = [good if i % 3 else b"not an image" for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda d: _post_file(image_server, d, "p.png"), payloads))
    assert [r.status_code for r in responses] == [200 if i % 3 else 400 for i in range(12)]
    assert len({json.dumps(r.json()["classes"]) for r in responses if r.status_code == 200}) == 1


# --- load, logs --------------------------------------------------------------------------------------------------------


def test_48_parallel_requests_are_all_answered(image_server: Server, coffee: Path):
    data = coffee.read_bytes()
    with ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(lambda i: _post_file(image_server, data, f"c{i}.png"), range(48)))
    assert [r.status_code for r in responses] == [200] * 48
    first = responses[0].json()["classes"]
    for r in responses:
        for a, b in zip(r.json()["classes"], first):
            assert a["index"] == b["index"] and a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_one_log_line_per_request(image_server: Server):
    before = image_server.log().count('"GET /health"')
    for _ in range(3):
        requests.get(image_server.url + "/health", timeout=10)
    requests.post(image_server.url + "/predict", json={"nothing": 1}, timeout=10)
    import time

    time.sleep(0.3)
    log = image_server.log()
    assert log.count('"GET /health"') == before + 3
    assert '"POST /predict" 400' in log and "error=" in log
