"""pthkit export on the command line: the report, --report FILE.json, and a non-zero exit beyond tolerance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.export.conftest import small_model

from pthkit.cli.main import main


@pytest.fixture(autouse=True)
def _open_small_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """pthkit.open returns the small test model for any MODEL argument (loading is tested elsewhere)."""
    monkeypatch.setattr("pthkit.api.open", lambda *a, **k: small_model())


def test_export_pt2_with_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, report = tmp_path / "m.pt2", tmp_path / "r.json"
    code = main(["export", "w.pth", "--format", "pt2", "--out", str(out), "--report", str(report)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert out.is_file() and json.loads(report.read_text())["passed"] is True
    assert "parity of the pt2 export" in err and "batch 7" in err


def test_export_beyond_tolerance_exits_non_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import pthkit.export.api as api

    real = api.runner_for
    monkeypatch.setattr(api, "runner_for", lambda p, f, pr="fp32": (lambda x, r=real(p, f, pr): r(x) * 1.05))
    args = ["export", "w.pth", "--format", "pt2", "--out", str(tmp_path / "m.pt2")]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 9, err
    assert "FAILED" in err and err.strip().splitlines()[-1].startswith("Error: pt2 export parity")
    assert main([*args, "--allow-mismatch"]) == 0
    assert "--allow-mismatch" in capsys.readouterr().err


def test_export_refuses_an_unknown_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "w.pth", "--format", "tflite"]) == 9
    assert "--format" in capsys.readouterr().err
