"""A non-image model (a user's ``nn.Module`` of 10 features) behind ``pthkit serve``: rows in, outputs out, width
checked (422); then SIGTERM on this module's server: requests in flight are answered and the process exits 0."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.serve.conftest import Server, kill_group, start_server

requests = pytest.importorskip("requests")

MODEL_PY = '''
import torch.nn as nn
import torch.nn.functional as F


class MyModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(10, 50)
        self.fc2 = nn.Linear(50, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))
'''


@pytest.fixture(scope="module")
def rows_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import importlib.util

    import torch

    folder = tmp_path_factory.mktemp("rows")
    code = folder / "my_model.py"
    code.write_text(MODEL_PY, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("serve_test_my_model", code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    model = module.MyModel().eval()
    weights = folder / "my_custom_model.pth"
    torch.save(model.state_dict(), weights)
    return weights, code


@pytest.fixture(scope="module")
def rows_server(rows_model: tuple[Path, Path]) -> Iterator[Server]:
    weights, code = rows_model
    # A long batch wait: the SIGTERM test below needs requests that are still queued when the signal arrives.
    server = start_server(weights, weights.parent, "--arch", f"{code}:MyModel", "--batch-timeout-ms", "800")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            kill_group(server.process)


def _forward(rows_model: tuple[Path, Path], rows: list[list[float]]) -> list[list[float]]:
    import importlib.util

    import torch

    weights, code = rows_model
    spec = importlib.util.spec_from_file_location("serve_test_my_model_ref", code)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.MyModel().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    with torch.no_grad():
        return model(torch.tensor(rows, dtype=torch.float32)).tolist()


def test_rows_give_the_module_outputs(rows_server: Server, rows_model: tuple[Path, Path]):
    rows = [[0.1 * i + j for i in range(10)] for j in range(3)]
    response = requests.post(rows_server.url + "/predict", json={"inputs": rows}, timeout=60)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"].endswith("my_model.py:MyModel") and body["elapsed_ms"] > 0
    assert len(body["rows"]) == 3
    want = _forward(rows_model, rows)
    for got, ref in zip(body["rows"], want):
        # the `pthkit predict --json` shape: a list for one unnamed output, {name: values} otherwise
        values = got["outputs"] if isinstance(got["outputs"], list) else next(iter(got["outputs"].values()))
        assert values == pytest.approx(ref, abs=1e-5)
    info = requests.get(rows_server.url + "/info", timeout=10).json()
    assert info["input"] == {"kind": "rows", "row_width": 10}


@pytest.mark.parametrize(
    ("payload", "status", "words"),
    [
        ({"inputs": [[1.0] * 12]}, 422, "10 features"),
        ({"inputs": [[1.0] * 10, [1.0] * 9]}, 400, "different lengths"),
        ({"inputs": [[1.0] * 9 + ["x"]]}, 400, "finite number"),
        ({"inputs": []}, 400, "non-empty"),
        ({"image": "aGVsbG8="}, 400, "rows of numbers"),
    ],
    ids=["wrong-width", "ragged", "not-a-number", "empty", "image-to-rows-model"],
)
def test_bad_rows(rows_server: Server, payload: dict, status: int, words: str):
    response = requests.post(rows_server.url + "/predict", json=payload, timeout=60)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_page_shows_the_rows_form(rows_server: Server):
    assert 'id="rows-panel"' in requests.get(rows_server.url + "/", timeout=10).text


def test_sigterm_finishes_requests_in_flight_and_exits_0(rows_server: Server):
    """Runs last in this module: it stops the module's server."""
    results: list[int] = []

    def call(i: int) -> None:
        r = requests.post(rows_server.url + "/predict", json={"inputs": [[float(i)] * 10]}, timeout=60)
        results.append(r.status_code)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the requests wait in the batch (800 ms) when the signal arrives
    rows_server.process.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    code = rows_server.process.wait(60)
    assert results == [200] * 6
    assert code == 0, rows_server.log()[-2000:]
    assert "finishing requests in flight" in rows_server.log()
    with pytest.raises(requests.ConnectionError):
        requests.get(rows_server.url + "/health", timeout=5)
