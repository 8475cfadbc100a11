"""Servers for the serve tests: real ``pthkit serve`` processes on 127.0.0.1, one per model, started once.

Each server is a subprocess (``python -m pthkit serve …``) so the tests see what a user sees: the port opens once the
model is loaded and warmed up, stderr has one log line per request, SIGTERM ends it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("litserve")
requests = pytest.importorskip("requests")

START_TIMEOUT = 180.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                raise
        return int(self.process.returncode)


def start_server(model: str | Path, workdir: Path, *args: str) -> Server:
    """Start ``pthkit serve MODEL ARGS`` on a free loopback port; return once ``/health`` answers 200."""
    port = free_port()
    log_path = workdir / f"serve-{port}.log"
    env = dict(os.environ)
    env.setdefault("PTHKIT_CACHE_DIR", str(workdir / "cache"))
    env["PYTHONUNBUFFERED"] = "1"
    cmd = [sys.executable, "-m", "pthkit", "serve", str(model), "--host", "127.0.0.1", "--port", str(port), *args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env,
                                   start_new_session=True)
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"pthkit serve exited with {process.returncode}:\n{server.log()[-3000:]}")
        try:
            if requests.get(server.url + "/health", timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.25)
    kill_group(process)
    raise RuntimeError(f"pthkit serve did not become healthy in {START_TIMEOUT:.0f}s:\n{server.log()[-3000:]}")


def kill_group(process: subprocess.Popen) -> None:
    """Last resort: end the server's whole process group (its LitServe workers too)."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


@pytest.fixture(scope="session")
def serve_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="session")
def image_weights(serve_dir: Path) -> Path:
    """A small random timm classifier (10 classes), saved as a plain state dict."""
    import timm
    import torch

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=10).eval()
    path = serve_dir / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


IMAGE_ARCH = "timm:test_efficientnet"


@pytest.fixture(scope="session")
def image_server(serve_dir: Path, image_weights: Path) -> Iterator[Server]:
    server = start_server(image_weights, serve_dir, "--arch", IMAGE_ARCH, "--max-upload-mb", "1",
                          "--max-batch-size", "16", "--batch-timeout-ms", "20")
    try:
        yield server
    finally:
        try:
            server.stop()
        finally:
            kill_group(server.process)


@pytest.fixture(scope="session")
def coffee() -> Path:
    from pthkit.samples import skimage_photo

    return skimage_photo("coffee.png")
