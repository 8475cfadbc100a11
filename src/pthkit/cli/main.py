"""The ``pthkit`` console script.

One typer app; each command group lives in its own module and registers itself on the app. Errors are mapped to
one line in one place (:func:`main`). Importing this module must stay cheap: no torch, no timm (``pthkit --help`` is
instant); commands import the API inside their bodies.
"""

from __future__ import annotations

import os
import sys
import warnings
from importlib import import_module

import typer

from pthkit.errors import PthkitError

DEBUG_ENV = "PTHKIT_DEBUG"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


# Exit codes outside the error classes (those come from ``exit_code`` on each class in pthkit.errors).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


_MEANINGS = {
    3: "input not found", 4: "unsafe file (code would run; --trust only for files you trust)",
    5: "weights file or bundle unreadable", 6: "architecture unknown, unbuildable or not identified",
    7: "weights do not fit the architecture", 8: "data, image or preprocessing value invalid",
    9: "export failed or its outputs differ from torch's", 11: "fine-tuning could not start or continue",
}


def exit_code_table() -> list[tuple[int, str]]:
    """(code, meaning) for every exit code, read from the error classes (``exit_code``), so ``--help`` cannot drift."""
    from pthkit import errors

    by_code: dict[int, list[str]] = {}
    for name in errors.__all__:
        cls = getattr(errors, name, None)
        if (isinstance(cls, type) and issubclass(cls, errors.PthkitError) and cls is not errors.PthkitError
                and "exit_code" in vars(cls)):
            by_code.setdefault(cls.exit_code, []).append(name)
    rows = [(0, "success"), (1, "other error; predict: some inputs could not be read (see --allow-failures)"),
            (EXIT_USAGE, "usage: unknown option or bad option value")]
    rows += [(code, f"{_MEANINGS.get(code, 'error')} ({', '.join(names)})")
             for code, names in sorted(by_code.items()) if code > EXIT_USAGE]
    rows.append((EXIT_INTERRUPTED, "interrupted (Ctrl-C)"))
    rows.append((EXIT_BROKEN_PIPE, "output pipe closed early (e.g. `| head`)"))
    return rows


def _epilog() -> str:
    lines = [f"Errors print one line; set {DEBUG_ENV}=1 to see the traceback.", "Exit codes:"]
    lines += [f"{code:>4}  {what}" for code, what in exit_code_table()]
    return "\n\n".join(lines)


app = typer.Typer(
    name="pthkit",
    help="Make a pretrained PyTorch weights file usable: inspect, scan, identify, load, predict, fine-tune, bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_epilog(),
)

# Each module defines ``register(app)``. Order is the order of `pthkit --help`.
_COMMAND_MODULES = (
    "pthkit.cli.read_cmds",  # inspect, scan
    "pthkit.cli.arch_cmds",  # architectures, identify, load
    "pthkit.cli.predict_cmds",  # predict
    "pthkit.cli.train_cmds",  # finetune, evaluate, bundle
    "pthkit.cli.serve_cmds",  # serve
    "pthkit.cli.export_cmds",  # export
)


def _register_all() -> None:
    """Register every command module that is installed.

    A command module that does not exist at all (``ModuleNotFoundError`` naming exactly that module) is skipped, so a
    partial install or a checkout in progress still runs the other commands. Any other import failure — including a
    missing module *inside* an existing command module — is a real bug and propagates.
    """
    for name in _COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            if _debug():
                print(f"pthkit: command module {name} is not installed; its commands are unavailable", file=sys.stderr)
            continue
        module.register(app)


_register_all()


def _error_line(text: str) -> None:
    """Print one line on stderr with every terminal control character shown as an escape (error details come from
    files: names, paths, values), and never more than one line."""
    from pthkit.cli._safe_text import safe_text

    print(safe_text(text, newlines=False), file=sys.stderr)


def _show_usage_error(err: Exception) -> None:
    """The framework's "Usage: … / Error: …" text, with control characters escaped (it quotes the values given)."""
    import io

    from pthkit.cli._safe_text import safe_text

    buffer = io.StringIO()
    show = getattr(err, "show", None)
    if callable(show):
        show(file=buffer)
    else:  # a bare TyperException
        buffer.write(f"Error: {err}\n")
    sys.stderr.write(safe_text(buffer.getvalue()))
    sys.stderr.flush()


_FORMATWARNING = warnings.formatwarning


def _safe_formatwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                        line: str | None = None) -> str:
    """``warnings.formatwarning`` for the CLI: the same text, control characters escaped (warnings name files)."""
    from pthkit.cli._safe_text import safe_text

    return safe_text(_FORMATWARNING(message, category, filename, lineno, line))


def _cli_exception_exit_code(err: Exception) -> int | None:
    """Handle the CLI framework's own exceptions (usage errors, Exit, Abort); None for anything else.

    typer >= 0.2x vendors click (``typer.TyperException`` is the base of its usage errors) while older typer uses
    click itself, so both families are recognised.
    """
    usage_types: list[type] = [typer.TyperException]
    exit_types: list[type] = [typer.Exit]
    abort_types: list[type] = [typer.Abort]
    try:
        import click

        usage_types.append(click.ClickException)
        exit_types.append(click.exceptions.Exit)
        abort_types.append(click.exceptions.Abort)
    except ImportError:  # pragma: no cover - click is optional with newer typer
        pass
    if isinstance(err, tuple(exit_types)):
        return int(getattr(err, "exit_code", 1))
    if isinstance(err, tuple(usage_types)):
        _show_usage_error(err)  # "Usage: … / Error: …" from the framework
        return int(getattr(err, "exit_code", 2))
    if isinstance(err, tuple(abort_types)):  # click turns Ctrl-C during a prompt into Abort
        _error_line(f"Interrupted{_progress_note()}.")
        return EXIT_INTERRUPTED
    return None


def _progress_note() -> str:
    """`` after N of M images`` when a running loop published its counters (``pthkit.engine`` progress), else ""."""
    engine = sys.modules.get("pthkit.engine.progress") or sys.modules.get("pthkit.engine")
    current = getattr(engine, "current_progress", None)
    if not callable(current):
        return ""
    try:
        done, total, unit = current()
    except Exception:  # noqa: BLE001 - a note on the way out must never raise
        return ""
    if total:
        return f" after {done} of {total} {unit}"
    return f" after {done} {unit}" if done else ""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every error to one line on stderr and a non-zero exit code.

    Python warnings shown while it runs have their control characters escaped, like every other line it prints.
    """
    previous = warnings.formatwarning
    warnings.formatwarning = _safe_formatwarning  # only formats what is shown; recorded warnings are untouched
    try:
        return _main(argv)
    finally:
        if warnings.formatwarning is _safe_formatwarning:
            warnings.formatwarning = previous


def _main(argv: list[str] | None) -> int:
    try:
        result = app(args=argv, standalone_mode=False)
    except PthkitError as err:
        if _debug():
            raise
        # Exactly one line: what was received, what was expected, what to do (the message says all three).
        _error_line(f"Error: {err}")
        return err.exit_code
    except KeyboardInterrupt:
        _error_line(f"Interrupted{_progress_note()}.")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `pthkit inspect --json | head`: the reader went away. Point stdout at devnull so the interpreter's final
        # flush does not raise again, and exit quietly (what the Python docs recommend for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except SystemExit as exc:  # sys.exit inside commands
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as err:  # noqa: BLE001 - the CLI never shows a raw traceback unless asked
        code = _cli_exception_exit_code(err)
        if code is not None:
            return code
        if _debug():
            raise
        message = " ".join(str(err).split())
        _error_line(
            f"Error: unexpected {type(err).__name__}: {message} (a bug in pthkit; set {DEBUG_ENV}=1 for the traceback"
            " and report it)"
        )
        return 1
    if result == EXIT_INTERRUPTED:  # typer turns Ctrl-C inside a command into a bare 130: add the one line
        _error_line(f"Interrupted{_progress_note()}.")
    return result if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
