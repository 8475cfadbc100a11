"""The ``pthkit`` console script.

One typer app; each command group lives in its own module and registers itself on the app. Errors are mapped to
one line in one place (:func:`main`). Importing this module must stay cheap: no torch, no timm (``pthkit --help`` is
instant); commands import the API inside their bodies.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module

import typer

from pthkit.errors import PthkitError

DEBUG_ENV = "PTHKIT_DEBUG"


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


app = typer.Typer(
    name="pthkit",
    help="Make a pretrained PyTorch weights file usable: inspect, scan, identify, load, predict, fine-tune, bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=f"Errors print one line; set {DEBUG_ENV}=1 to see the traceback.",
)

# Each module defines ``register(app)``. Order is the order of `pthkit --help`.
_COMMAND_MODULES = (
    "pthkit.cli.read_cmds",  # inspect, scan
    "pthkit.cli.arch_cmds",  # architectures, identify, load
    "pthkit.cli.predict_cmds",  # predict
    "pthkit.cli.train_cmds",  # finetune, evaluate, bundle
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
        err.show()  # type: ignore[attr-defined]  # "Usage: … / Error: …" from the framework
        return int(getattr(err, "exit_code", 2))
    if isinstance(err, tuple(abort_types)):
        print("Aborted.", file=sys.stderr)
        return 1
    return None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every error to one line on stderr and a non-zero exit code."""
    try:
        result = app(args=argv, standalone_mode=False)
    except PthkitError as err:
        if _debug():
            raise
        # Exactly one line: what was received, what was expected, what to do (the message says all three).
        print(f"Error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `pthkit inspect --json | head`: the reader went away. Point stdout at devnull so the interpreter's final
        # flush does not raise again, and exit quietly (what the Python docs recommend for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except SystemExit as exc:  # sys.exit inside commands
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as err:  # noqa: BLE001 - the CLI never shows a raw traceback unless asked
        code = _cli_exception_exit_code(err)
        if code is not None:
            return code
        if _debug():
            raise
        message = " ".join(str(err).split())
        print(
            f"Error: unexpected {type(err).__name__}: {message} (a bug in pthkit; set {DEBUG_ENV}=1 for the traceback"
            " and report it)",
            file=sys.stderr,
        )
        return 1
    return result if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
