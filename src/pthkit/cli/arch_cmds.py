"""``pthkit architectures``, ``pthkit identify`` and ``pthkit load``: thin commands over the registry and loading API.

torch / timm / the API are imported inside command bodies so ``pthkit --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from pthkit.cli._options import (
    ArchKwargsOpt,
    ArchOpt,
    DeviceOpt,
    JsonOpt,
    SelectOpt,
    TopAliasOpt,
    TopKOpt,
    TrustOpt,
    top_k,
)
from pthkit.cli._output import console, literal, print_json

if TYPE_CHECKING:
    from pthkit.architectures.types import IdentifyResult
    from pthkit.loading.report import LoadReport

SOURCES = ("timm", "torchvision", "user", "entrypoint")

FileArg = Annotated[Path, typer.Argument(help="The weights file (.pth, .pt, .ckpt, .bin, .safetensors …).")]


def _parse_kwargs(items: list[str] | None) -> dict[str, Any]:
    from pthkit.architectures.user_code import parse_arch_kwargs

    return parse_arch_kwargs(items)


def _print_lines(text: str, *, style: str | None = None) -> None:
    # markup=False: keys and shapes contain brackets ("[1000, 512]") that rich would read as markup. The console shows
    # control characters from the file (key names, class names) as escapes.
    console.print(text, markup=False, style=style)


# --- pthkit architectures ---------------------------------------------------------------------------------------------


def architectures(
    pattern: Annotated[
        Optional[str], typer.Argument(help="fnmatch glob on the qualified or bare name, e.g. 'resnet*', 'timm:vit_*'.")
    ] = None,
    source: Annotated[
        Optional[str], typer.Option("--source", help="Only this source: timm, torchvision, user or entrypoint.")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """List the architectures pthkit can build (and identify files against)."""
    from pthkit.architectures import list_architectures
    from pthkit.errors import UnknownArchitectureError

    if source is not None and source not in SOURCES:
        raise UnknownArchitectureError.build(
            "--source", received=repr(source), expected="one of " + ", ".join(SOURCES),
        )
    names = list_architectures(pattern, source=source)
    if json_out:
        print_json({"pattern": pattern, "source": source, "count": len(names), "architectures": names})
        return
    for name in names:
        _print_lines(name)
    what = f" matching {pattern!r}" if pattern else ""
    what += f" from {source}" if source else ""
    _print_lines(f"{len(names)} architectures{what}", style="bold")


# --- pthkit identify --------------------------------------------------------------------------------------------------


def _render_identify(result: "IdentifyResult", path: Path) -> None:
    from rich.table import Table

    table = Table(title=f"Architectures that fit {literal(path.name)}", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("architecture", no_wrap=True)
    table.add_column("score", justify="right")
    table.add_column("confidence")
    table.add_column("by name", justify="right")
    table.add_column("by shape", justify="right")
    table.add_column("kwargs", overflow="fold", min_width=16)
    colors = {"high": "green", "medium": "yellow", "low": "red"}
    for rank, cand in enumerate(result.candidates, 1):
        table.add_row(
            str(rank), literal(cand.architecture), f"{cand.score:.3f}",
            f"[{colors.get(cand.confidence, 'white')}]{literal(cand.confidence)}[/]",
            f"{cand.matched_by_name}/{cand.file_tensors}", str(cand.matched_by_shape),
            literal(", ".join(f"{k}={v!r}" for k, v in cand.kwargs.items()) or "-"),
        )
    console.print(table)
    for rank, cand in enumerate(result.candidates, 1):
        if cand.equivalent:  # below the table: these lists are long and would squeeze it
            _print_lines(f"  {rank}. {cand.architecture} has an identical signature to: {', '.join(cand.equivalent)}")
    if result.candidates and result.candidates[0].differences:
        for diff in result.candidates[0].differences:
            _print_lines(f"  differs: {diff}")
    for part in result.partial:
        _print_lines(f"partial match: {part.message}")
    if result.confident:
        _print_lines(result.message or f"confident match: {result.candidates[0].architecture}", style="bold green")
    else:
        _print_lines(result.message if "no confident match" in (result.message or "")
                     else f"no confident match: {result.message}".rstrip(": "), style="bold red")
        _print_lines("Pass --arch NAME to `pthkit load` to choose one.", style="red")


def identify(
    file: FileArg,
    top_k_opt: TopKOpt = None,
    top: TopAliasOpt = None,
    arch: Annotated[
        Optional[str],
        typer.Option("--arch", "-a", help="Also check how the file fits this architecture (registered name or "
                     "path/to/file.py:Class): where it fits and where not."),
    ] = None,
    arch_kwargs: ArchKwargsOpt = None,
    json_out: JsonOpt = False,
    trust: TrustOpt = False,
    select: SelectOpt = "auto",
) -> None:
    """Which architecture is this weights file? Ranked candidates with their evidence and confidence."""
    from pthkit.architectures import identify as identify_api
    from pthkit.checkpoint import read_checkpoint

    ckpt = read_checkpoint(file, trust=trust, select=select)  # type: ignore[arg-type]
    include = None
    if arch:
        from pthkit.architectures import get_architecture

        include = [get_architecture(arch).name]
    result = identify_api(ckpt.tensors, top=top_k(top_k_opt, top, 5), include=include)
    fit: LoadReport | None = None
    if arch:
        from pthkit.loading import check_fit

        fit = check_fit(ckpt, arch, arch_kwargs=_parse_kwargs(arch_kwargs) or None)
    if json_out:
        data = {"file": str(file), **result.to_dict()}
        if fit is not None:
            data["fit"] = fit.to_dict()
        print_json(data)
        return
    _render_identify(result, file)
    if fit is not None:
        console.print()
        _print_lines(f"How the file fits {arch}:", style="bold")
        _print_lines(str(fit), style=None if fit.ok else "yellow")


# --- pthkit load ------------------------------------------------------------------------------------------------------


def _render_report(report: "LoadReport") -> None:
    lines = str(report).splitlines()
    for line in lines:
        style = None
        if line.startswith("status: ok"):
            style = "bold green"
        elif line.startswith("status: refused") or "[blocking]" in line:
            style = "bold red" if line.startswith("status") else "red"
        elif line.startswith("loaded "):
            style = "bold"
        _print_lines(line, style=style)


def load(
    file: FileArg,
    arch: ArchOpt = None,
    arch_kwargs: ArchKwargsOpt = None,
    num_classes: Annotated[
        Optional[int], typer.Option("--num-classes", min=0, help="Build a head with N classes (re-initialized when "
                                    "it differs from the file's).")
    ] = None,
    partial: Annotated[
        bool, typer.Option("--partial", help="Load every tensor that fits by name and shape; re-initialize the rest.")
    ] = False,
    key_map: Annotated[
        Optional[Path], typer.Option("--key-map", help="JSON key map (file key → model key), e.g. from --save-key-map.")
    ] = None,
    save_key_map: Annotated[
        Optional[Path], typer.Option("--save-key-map", help="Write the key map this load used (for reuse) as JSON.")
    ] = None,
    device: DeviceOpt = "auto",
    dtype: Annotated[
        Optional[str], typer.Option("--dtype", help="Cast the model: float32, float16, bfloat16 (default: keep).")
    ] = None,
    json_out: JsonOpt = False,
    trust: TrustOpt = False,
    select: SelectOpt = "auto",
) -> None:
    """Build the architecture (given or identified) and load the file into it; report every key that did not fit.

    Exit code 0 when loaded, 7 (LoadError) when refused (the report is printed first).
    """
    from pthkit.errors import LoadError
    from pthkit.loading import load_model

    try:
        _, report = load_model(
            file, arch, arch_kwargs=_parse_kwargs(arch_kwargs) or None, num_classes=num_classes, device=device,
            dtype=dtype, partial=partial, key_map=key_map, trust=trust, select=select,
        )
    except LoadError as err:
        refused = getattr(err, "report", None)
        if refused is not None:
            if json_out:
                print_json({"file": str(file), "error": str(err), **refused.to_dict()})
            else:
                _render_report(refused)
        raise
    saved = report.save_key_map(save_key_map) if save_key_map is not None else None
    if json_out:
        data = {"file": str(file), **report.to_dict()}
        if saved is not None:
            data["key_map_file"] = str(saved)
        print_json(data)
        return
    _render_report(report)
    if saved is not None:
        _print_lines(f"key map ({len(report.remapped)} renamed keys) saved to {saved}")


def register(app: typer.Typer) -> None:
    """Add ``architectures``, ``identify`` and ``load`` to the pthkit app."""
    app.command("architectures")(architectures)
    app.command("identify")(identify)
    app.command("load")(load)
