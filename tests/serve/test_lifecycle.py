"""Start-up: unsafe or unreadable files refused before anything starts; /health 503 until a worker is ready.

The SIGTERM test runs at the end of test_rows.py, on that module's server."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
from tests.serve.conftest import IMAGE_ARCH, free_port

requests = pytest.importorskip("requests")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > pwned.txt",))


def _serve_cli(model: Path, workdir: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``pthkit serve MODEL ARGS`` in this process (it must refuse before starting anything): (exit code, stderr)."""
    from pthkit.cli.main import main

    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        code = main(["serve", str(model), "--port", str(free_port()), *args])
    finally:
        os.chdir(cwd)
    return code, capsys.readouterr().err


def test_hostile_file_is_refused_with_the_scan_verdict(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from pthkit.errors import UnsafeCheckpointError

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as fh:
        pickle.dump({"weight": _Evil()}, fh)
    code, stderr = _serve_cli(evil, tmp_path, capsys, "--arch", IMAGE_ARCH)
    assert code == UnsafeCheckpointError.exit_code and code != 0
    err = " ".join(stderr.split())
    assert "malicious-looking" in err and ("os.system" in err or "posix.system" in err), err
    assert "--trust" in err and "Traceback" not in stderr
    assert not (tmp_path / "pwned.txt").exists()


def test_unreadable_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(4096))
    code, stderr = _serve_cli(junk, tmp_path, capsys, "--arch", IMAGE_ARCH)
    assert code != 0 and stderr.startswith("Error: ") and "Traceback" not in stderr


def test_health_is_503_until_a_worker_is_ready(image_weights: Path):
    """Before any inference worker reports ready, /health answers 503 (LitServe checks the workers' status)."""
    from fastapi.testclient import TestClient

    from pthkit.serve import ServeConfig, ServePlan, build_server

    server, _ = build_server(ServeConfig(plan=ServePlan(source=str(image_weights), arch=IMAGE_ARCH, device="cpu")))
    client = TestClient(server.app)  # no lifespan: no worker was started
    server.workers_setup_status = {}
    assert client.get("/health").status_code == 503
    server.workers_setup_status = {0: "starting"}
    assert client.get("/health").status_code == 503
    server.workers_setup_status = {0: "ready"}
    assert client.get("/health").status_code == 200
