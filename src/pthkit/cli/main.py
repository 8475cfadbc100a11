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

app = typer.Typer(
    name="pthkit",
    help="Make a pretrained PyTorch weights file usable: inspect, scan, identify, load, predict, fine-tune, bundle.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Each module defines ``register(app)``. Order is the order of `pthkit --help`.
_COMMAND_MODULES = (
    "pthkit.cli.read_cmds",  # inspect, scan
    "pthkit.cli.arch_cmds",  # architectures, identify, load
    "pthkit.cli.predict_cmds",  # predict
    "pthkit.cli.train_cmds",  # finetune, evaluate, bundle
)

for _name in _COMMAND_MODULES:
    import_module(_name).register(app)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; map every error to one line on stderr and a non-zero exit code."""
    try:
        result = app(args=argv, standalone_mode=False)
    except PthkitError as err:
        if _debug():
            raise
        print(f"Error: {err}", file=sys.stderr)
        print(f"(set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer.Exit inside commands
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as err:  # noqa: BLE001 - the CLI never shows a raw traceback unless asked
        import click

        if isinstance(err, click.exceptions.Exit):
            return err.exit_code
        if isinstance(err, click.ClickException):
            err.show()
            return err.exit_code
        if isinstance(err, click.exceptions.Abort):
            print("Aborted.", file=sys.stderr)
            return 1
        if _debug():
            raise
        print(f"Error: unexpected {type(err).__name__}: {' '.join(str(err).split())}", file=sys.stderr)
        print(f"(this is a bug in pthkit; set {DEBUG_ENV}=1 for the traceback and report it)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
