"""The console script: cheap start-up (no torch for --help), one `Error:` line per failure, PTHKIT_DEBUG tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import typer

from pthkit.cli import main as main_mod
from pthkit.errors import CorruptCheckpointError

PTHKIT = Path(sys.executable).with_name("pthkit")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PTHKIT_DEBUG"}
    env.update(extra)
    return env


# --- start-up --------------------------------------------------------------------------------------------------------


def test_help_does_not_import_torch():
    code = textwrap.dedent(
        """
        import sys
        from pthkit.cli.main import app, main
        codes = [main(["--help"]), main(["inspect", "--help"]), main(["scan", "--help"])]
        heavy = sorted(m for m in ("torch", "timm", "torchvision", "numpy", "PIL") if m in sys.modules)
        print("CODES", codes)
        print("HEAVY", heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CODES [0, 0, 0]" in out.stdout
    assert "HEAVY []" in out.stdout, out.stdout


def test_help_is_fast():
    # Best of two runs: the first may pay for cold disk caches on a busy machine.
    times = []
    for _ in range(2):
        start = time.perf_counter()
        out = subprocess.run([str(PTHKIT), "--help"], capture_output=True, text=True, env=_env(), timeout=60)
        times.append(time.perf_counter() - start)
        assert out.returncode == 0, out.stderr
        assert "inspect" in out.stdout and "scan" in out.stdout
    assert min(times) < 1.5, times


# --- error mapping ---------------------------------------------------------------------------------------------------


@pytest.fixture()
def failing_app(monkeypatch):
    app = typer.Typer()

    @app.command()
    def boom(kind: str) -> None:
        if kind == "pthkit":
            raise CorruptCheckpointError.build(
                "weights file", received="a truncated zip", expected="a complete file", hint="Download it again."
            )
        raise ValueError("something\nbroke")

    @app.command()
    def ok() -> None:
        pass

    monkeypatch.setattr(main_mod, "app", app)
    monkeypatch.delenv("PTHKIT_DEBUG", raising=False)
    return app


def test_pthkit_error_is_one_line_and_exit_code(failing_app, capsys):
    assert main_mod.main(["boom", "pthkit"]) == CorruptCheckpointError.exit_code == 5
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "Error: weights file: received a truncated zip; expected a complete file. Download it again."
    ]


def test_unexpected_error_is_one_line_marked_as_bug(failing_app, capsys):
    assert main_mod.main(["boom", "other"]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: unexpected ValueError: something broke")
    assert "PTHKIT_DEBUG=1" in lines[0]


def test_debug_variable_shows_the_traceback(failing_app, monkeypatch):
    monkeypatch.setenv("PTHKIT_DEBUG", "1")
    with pytest.raises(CorruptCheckpointError, match="truncated zip"):
        main_mod.main(["boom", "pthkit"])


def test_usage_error_exit_code(failing_app, capsys):
    assert main_mod.main(["no-such-command"]) == 2
    assert main_mod.main(["ok"]) == 0


def test_every_error_class_has_its_own_documented_exit_code(capsys):
    from pthkit import errors

    expected = {"InputNotFoundError": 3, "UnsafeCheckpointError": 4, "CheckpointError": 5, "CorruptCheckpointError": 5,
                "BundleError": 5, "ArchitectureError": 6, "IdentificationError": 6, "LoadError": 7,
                "PreprocessError": 8, "ImageError": 8, "DatasetError": 8, "ExportError": 9, "TrainingError": 11}
    assert {name: getattr(errors, name).exit_code for name in expected} == expected
    table = dict(main_mod.exit_code_table())
    for code in (2, 3, 4, 5, 6, 7, 8, 9, 11, 130):
        assert code in table
    assert main_mod.main(["--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "Exit codes:" in shown and "130 interrupted" in shown and "7 weights do not fit" in shown


def test_ctrl_c_exits_130_with_one_line_naming_the_progress(monkeypatch, capsys):
    app = typer.Typer()

    @app.command()
    def slow() -> None:
        raise KeyboardInterrupt

    @app.command()
    def other() -> None:
        pass

    import types

    monkeypatch.setattr(main_mod, "app", app)
    monkeypatch.delitem(sys.modules, "pthkit.engine.progress", raising=False)
    monkeypatch.setitem(sys.modules, "pthkit.engine", types.SimpleNamespace(current_progress=lambda: (40, 120, "images")))
    assert main_mod.main(["slow"]) == 130
    assert capsys.readouterr().err.splitlines() == ["Interrupted after 40 of 120 images."]
    monkeypatch.setitem(sys.modules, "pthkit.engine", types.SimpleNamespace())
    assert main_mod.main(["slow"]) == 130
    assert capsys.readouterr().err.splitlines() == ["Interrupted."]


# --- optional command modules ----------------------------------------------------------------------------------------


def test_missing_command_module_is_skipped(monkeypatch, capsys):
    fresh = typer.Typer()
    monkeypatch.setattr(main_mod, "app", fresh)
    monkeypatch.setattr(main_mod, "_COMMAND_MODULES", ("pthkit.cli.no_such_cmds_module", "pthkit.cli.read_cmds"))
    monkeypatch.delenv("PTHKIT_DEBUG", raising=False)
    main_mod._register_all()  # the missing module is skipped; the next one still registers
    assert {c.name or c.callback.__name__ for c in fresh.registered_commands} >= {"inspect", "scan"}
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("PTHKIT_DEBUG", "1")
    monkeypatch.setattr(main_mod, "app", typer.Typer())
    main_mod._register_all()
    assert "pthkit.cli.no_such_cmds_module" in capsys.readouterr().err


def test_import_error_inside_a_command_module_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "pthkit_broken_cmds_for_test.py").write_text("import pthkit_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(main_mod, "_COMMAND_MODULES", ("pthkit_broken_cmds_for_test",))
    with pytest.raises(ModuleNotFoundError, match="pthkit_no_such_dependency_xyz"):
        main_mod._register_all()


# --- bad files: exactly one `Error:` line, no traceback, non-zero exit ------------------------------------------------

PNG_BYTES = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c63f8ff"
                          "ff3f0005fe02fea7d6a4a20000000049454e44ae426082")
LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 46830571\n"
)


def _bad_file(tmp_path: Path, kind: str, lite0_path: Path) -> Path:
    path = tmp_path / f"{kind}.pth"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-zip":
        import torch

        full = tmp_path / "full.pth"
        torch.save({"w": torch.arange(1000, dtype=torch.float32)}, full)
        data = full.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-legacy":
        data = lite0_path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "corrupted":
        import torch

        full = tmp_path / "full.pth"
        torch.save({"w": torch.arange(1000, dtype=torch.float32)}, full)
        data = bytearray(full.read_bytes())
        for i in range(40, 400):  # smash the pickle inside the zip
            data[i] ^= 0xA5
        path.write_bytes(bytes(data))
    elif kind == "png":
        path.write_bytes(PNG_BYTES)
    elif kind == "lfs-pointer":
        path.write_text(LFS_POINTER)
    elif kind == "missing":
        pass
    else:  # pragma: no cover
        raise AssertionError(kind)
    return path


BAD_KINDS = ["empty", "truncated-zip", "truncated-legacy", "corrupted", "png", "lfs-pointer", "missing"]
# the key phrase each message must contain (what was received / what to do)
BAD_PHRASES = {"png": "png", "lfs-pointer": "lfs", "missing": "no such file"}


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_bad_file_inspect_gives_one_error_line(kind, tmp_path, lite0_path, capsys, monkeypatch):
    monkeypatch.delenv("PTHKIT_DEBUG", raising=False)
    path = _bad_file(tmp_path, kind, lite0_path)
    code = main_mod.main(["inspect", str(path)])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code != 0
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    assert "unexpected" not in lines[0], f"untyped error leaked from the reader: {lines[0]}"
    assert "Traceback" not in captured.err + captured.out
    if kind in BAD_PHRASES:
        assert BAD_PHRASES[kind] in lines[0].lower()


def test_bad_file_through_the_console_script(tmp_path, lite0_path):
    # End to end through the installed entry point: real stderr, real exit code (one subprocess: torch import is slow).
    path = _bad_file(tmp_path, "lfs-pointer", lite0_path)
    out = subprocess.run([str(PTHKIT), "inspect", str(path)], capture_output=True, text=True, env=_env(), timeout=120)
    assert out.returncode != 0
    assert len(out.stderr.splitlines()) == 1 and out.stderr.startswith("Error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""


def test_bad_file_debug_raises_for_the_traceback(tmp_path, lite0_path, monkeypatch):
    from pthkit.errors import CheckpointError

    path = _bad_file(tmp_path, "png", lite0_path)
    monkeypatch.setenv("PTHKIT_DEBUG", "1")
    with pytest.raises(CheckpointError):  # propagates out of main(): Python prints the traceback
        main_mod.main(["inspect", str(path)])


# --- flags mean the same everywhere -----------------------------------------------------------------------------------


def test_size_and_top_k_flags_are_the_same_on_every_command():
    """--size (224 or H,W) and --top-k (--top a hidden alias) used to differ between identify, predict and the rest."""
    from pthkit.cli._options import SizeOpt

    size_help = SizeOpt.__metadata__[0].help
    group = typer.main.get_command(main_mod.app)
    seen_size, seen_top = [], []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for param in command.params:
            if param.param_type_name != "option":
                continue
            if "--size" in param.opts:
                seen_size.append(name)
                assert param.help == size_help, name
            if "--top" in param.opts:
                seen_top.append(name)
                assert param.hidden and any("--top-k" in p.opts for p in command.params), name
    assert {"predict", "evaluate", "finetune", "bundle"} <= set(seen_size)
    assert {"identify", "predict"} <= set(seen_top)
